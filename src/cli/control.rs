//! Learning-rate options and the messages of resumed and interrupted runs.

use crate::cli::args::RunControlArgs;
use crate::cli::run_files;
use crate::train::{FitResult, LrControl, LrSchedule, PlateauConfig, StopReason, TrainingState};
use anyhow::{Result, bail};
use std::path::Path;

/// Builds the learning-rate control; an option that belongs to another
/// schedule, or a plateau option without `--reduce-lr-on-plateau`, is an error.
pub fn lr_control(args: &RunControlArgs, epochs: usize) -> Result<LrControl> {
    let schedule = args.lr_schedule.as_str();
    let reject = |flag: &str, applies: &str| -> Result<()> {
        bail!("{flag} applies to {applies}, and this run uses --lr-schedule {schedule}")
    };
    if args.lr_step_size.is_some() && schedule != "step" {
        reject("--lr-step-size", "--lr-schedule step")?;
    }
    if args.lr_gamma.is_some() && !matches!(schedule, "step" | "exponential") {
        reject("--lr-gamma", "--lr-schedule step and exponential")?;
    }
    if args.lr_cosine_epochs.is_some() && schedule != "cosine" {
        reject("--lr-cosine-epochs", "--lr-schedule cosine")?;
    }
    let min_lr = args.min_lr.unwrap_or(0.0);
    if args.min_lr.is_some() && !args.reduce_lr_on_plateau && schedule != "cosine" {
        bail!("--min-lr applies to --reduce-lr-on-plateau and --lr-schedule cosine");
    }
    let schedule = match schedule {
        "step" => LrSchedule::Step {
            step_size: args.lr_step_size.unwrap_or(10),
            gamma: args.lr_gamma.unwrap_or(0.1),
        },
        "exponential" => LrSchedule::Exponential {
            gamma: args.lr_gamma.unwrap_or(0.95),
        },
        "cosine" => LrSchedule::Cosine {
            epochs: args.lr_cosine_epochs.unwrap_or(epochs),
            min_lr,
        },
        _ => LrSchedule::Constant,
    };
    let plateau_options = [
        ("--reduce-lr-patience", args.reduce_lr_patience.is_some()),
        ("--reduce-lr-factor", args.reduce_lr_factor.is_some()),
        ("--reduce-lr-min-delta", args.reduce_lr_min_delta.is_some()),
        ("--reduce-lr-cooldown", args.reduce_lr_cooldown.is_some()),
    ];
    let plateau = if args.reduce_lr_on_plateau {
        let defaults = PlateauConfig::default();
        Some(PlateauConfig {
            factor: args.reduce_lr_factor.unwrap_or(defaults.factor),
            patience: args.reduce_lr_patience.unwrap_or(defaults.patience),
            min_delta: args.reduce_lr_min_delta.unwrap_or(defaults.min_delta),
            cooldown: args.reduce_lr_cooldown.unwrap_or(defaults.cooldown),
            min_lr,
        })
    } else {
        if let Some((flag, _)) = plateau_options.iter().find(|(_, given)| *given) {
            bail!("{flag} applies with --reduce-lr-on-plateau; add it, or drop {flag}");
        }
        None
    };
    let control = LrControl { schedule, plateau };
    control.validate()?;
    Ok(control)
}

/// Describes where a resumed run continues.
pub fn describe_resume(dir: &Path, state: &TrainingState) -> String {
    let place = if state.batches_done == 0 {
        format!("after epoch {}", state.epochs_completed)
    } else {
        format!(
            "at batch {} of epoch {}",
            state.batches_done + 1,
            state.epochs_completed + 1
        )
    };
    format!(
        "Resuming {} {place} (step {}), from {}",
        dir.display(),
        state.step,
        run_files::checkpoint_path(dir).display()
    )
}

/// Describes an interrupted run and how to resume it.
pub fn describe_interrupt(dir: &Path, signal: &str, result: &FitResult) -> String {
    let place = match result.stop {
        StopReason::Interrupted {
            epochs_completed,
            batches_done,
        } if batches_done > 0 => format!(
            "after batch {batches_done} of epoch {}",
            epochs_completed + 1
        ),
        StopReason::Interrupted {
            epochs_completed, ..
        } => format!("after epoch {epochs_completed}"),
        _ => "early".to_string(),
    };
    let weights = match result.saved_epoch {
        0 => "the initial weights (no epoch completed)".to_string(),
        epoch => format!("the weights of epoch {epoch}"),
    };
    format!(
        "Interrupted by {signal} {place}. The checkpoint {} and the history are saved; \
         model.safetensors holds {weights}.\n\
         Resume with: densetrain train --resume {}",
        run_files::checkpoint_path(dir).display(),
        dir.display()
    )
}
