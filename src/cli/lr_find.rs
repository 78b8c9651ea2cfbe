//! `densetrain lr-find` and `train --lr auto`: the learning-rate range test.

use crate::backend::Backend;
use crate::cli::args::{DataArgs, FitArgs, ModelArgs, OptimizerArgs};
use crate::cli::{Outcome, experiment, rundir, settings};
use crate::data::{self, Dataset};
use crate::model::{ModelSpec, Params, init};
use crate::tools::lr_find::{self, LrFindConfig, LrFindResult, SweepEnd};
use crate::tools::plot::{self, Figure, LineStyle, Marker, Panel, Series};
use crate::train::{FitConfig, Units};
use anyhow::{Result, bail};
use clap::Args;
use std::path::Path;

/// Default first learning rate of the sweep.
pub const DEFAULT_START_LR: f64 = 1e-7;
/// Default last learning rate of the sweep.
pub const DEFAULT_END_LR: f64 = 10.0;
/// Default number of steps.
pub const DEFAULT_STEPS: usize = 100;

/// Options of `densetrain lr-find`.
#[derive(Debug, Args)]
pub struct LrFindArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optimizer: OptimizerArgs,
    #[command(flatten)]
    pub fit: FitArgs,
    #[command(flatten)]
    pub range: RangeArgs,
}

/// The swept range.
#[derive(Debug, Args)]
#[command(next_help_heading = "Range test")]
pub struct RangeArgs {
    /// First learning rate of the sweep.
    #[arg(long, default_value_t = DEFAULT_START_LR, allow_negative_numbers = true)]
    pub start_lr: f64,
    /// Last learning rate of the sweep.
    #[arg(long, default_value_t = DEFAULT_END_LR, allow_negative_numbers = true)]
    pub end_lr: f64,
    /// Number of steps (one batch each), spaced evenly on a log scale.
    #[arg(long, default_value_t = DEFAULT_STEPS, allow_negative_numbers = true,
          value_parser = crate::cli::args::whole_number)]
    pub steps: usize,
}

/// Runs `densetrain lr-find`.
pub fn run(args: &LrFindArgs) -> Result<Outcome> {
    if args.optimizer.lr.is_some() {
        bail!(
            "--lr does not apply to lr-find: it sweeps the rate from --start-lr to --end-lr; \
             drop --lr"
        );
    }
    let verbose = args.fit.verbose;
    let seed = experiment::seed(&args.fit);
    let data_config = settings::data_config(&args.data, seed)?;
    let options = settings::model_options(&args.model)?;
    let mut optimizer_args = args.optimizer.clone();
    optimizer_args
        .optimizer
        .get_or_insert_with(|| "sgd".to_string());
    let optimizer = settings::optimizer_config(&optimizer_args)?;
    // Checked before the data is read, so a mistyped range fails at once.
    let mut config = LrFindConfig {
        start_lr: args.range.start_lr,
        end_lr: args.range.end_lr,
        steps: args.range.steps,
        batch_size: args.fit.batch_size,
        seed,
        optimizer,
        class_weights: None,
    };
    config.validate()?;
    let backend = crate::cli::device::select(&args.fit)?;
    let out = rundir::check_out(args.fit.out.as_deref())?;

    let prepared = data::prepare(&data_config)?;
    experiment::report_data(&prepared, verbose);
    let spec = experiment::model_spec(&prepared, &options)?;
    config.class_weights = experiment::class_weights(
        args.optimizer.class_weight.as_deref(),
        &prepared,
        &prepared.train,
    )?;
    let out_dir = rundir::create(out)?;
    if verbose > 0 {
        println!(
            "Learning-rate range test: {} from {:e} to {:e} in {} steps, batch size {}, seed \
             {seed}, {}",
            optimizer.optimizer.name(),
            config.start_lr,
            config.end_lr,
            config.steps,
            config.batch_size,
            backend.description()
        );
    }
    let initial = init::init_params(&spec, seed);
    let result = run_range_test(
        &backend,
        &spec,
        &initial,
        &prepared.train,
        experiment::units(&prepared),
        &config,
        &out_dir,
    )?;
    println!("{}", describe(&result, &config));
    if verbose > 0 {
        println!(
            "Wrote {} (lr_find.csv, lr_find.png, lr_find.svg)",
            out_dir.display()
        );
    }
    if result.suggestions.is_empty() {
        return Ok(Outcome::TargetNotMet);
    }
    Ok(Outcome::Success)
}

/// Runs the range test from `initial` weights, writes `lr_find.csv` and the
/// plot into `out_dir` and logs the warnings.
pub fn run_range_test<B: Backend>(
    backend: &B,
    spec: &ModelSpec,
    initial: &Params,
    train: &Dataset,
    units: Units,
    config: &LrFindConfig,
    out_dir: &Path,
) -> Result<LrFindResult> {
    let result = lr_find::range_test(backend, spec, initial, train, units, config)?;
    experiment::write_text(out_dir, "lr_find.csv", &result.to_csv())?;
    plot::write_figure(
        &figure(&result, units != Units::IDENTITY),
        out_dir,
        "lr_find",
    )?;
    for warning in &result.warnings {
        log::warn!("lr-find: {warning}");
    }
    Ok(result)
}

/// Runs the range test for `train --lr auto` with the training optimizer and
/// returns `fit` with the suggested rate.
///
/// The test starts from `initial` weights (a loaded model's), or else from
/// the weights `fit.seed` draws. The range test runs on its own network, so
/// training then starts from the same weights, zero optimizer state and the
/// same seed-keyed shuffles as a run with `--lr` set to the printed rate.
pub fn auto_lr<B: Backend>(
    backend: &B,
    spec: &ModelSpec,
    initial: Option<&Params>,
    train: &Dataset,
    units: Units,
    fit: &FitConfig,
    out_dir: &Path,
) -> Result<FitConfig> {
    let config = LrFindConfig {
        start_lr: DEFAULT_START_LR,
        end_lr: DEFAULT_END_LR,
        steps: DEFAULT_STEPS,
        batch_size: fit.batch_size,
        seed: fit.seed,
        optimizer: fit.optimizer,
        class_weights: fit.class_weights.clone(),
    };
    let drawn;
    let initial = match initial {
        Some(params) => params,
        None => {
            drawn = init::init_params(spec, fit.seed);
            &drawn
        }
    };
    let result = run_range_test(backend, spec, initial, train, units, &config, out_dir)?;
    let Some(lr) = result.suggested_lr() else {
        bail!(
            "--lr auto: the range test found no learning rate to suggest ({} points); see \
             lr_find.png in {} and pass --lr VALUE",
            result.points.len(),
            out_dir.display()
        );
    };
    let lr = lr as f32;
    if fit.verbose > 0 {
        println!("{}", describe(&result, &config));
    }
    println!("--lr auto: training with learning rate {lr} (valley rule, else steepest)");
    let mut fit = fit.clone();
    fit.optimizer.lr = lr;
    Ok(fit)
}

/// Describes how the sweep ended and lists the suggestions.
pub fn describe(result: &LrFindResult, config: &LrFindConfig) -> String {
    let ran = result.points.len();
    let mut out = match result.end {
        SweepEnd::Completed => format!("The sweep ran all {ran} steps."),
        SweepEnd::Diverged { step } => format!(
            "The sweep stopped at step {step} of {}: the smoothed loss passed {}x its best.",
            config.steps,
            lr_find::DIVERGENCE_FACTOR
        ),
        SweepEnd::NonFinite { step } => format!(
            "The sweep stopped at step {step} of {}: the loss was not finite.",
            config.steps
        ),
    };
    if result.suggestions.is_empty() {
        out.push_str("\nNo suggestion: the curve has too few finite points.");
        return out;
    }
    out.push_str("\nSuggested learning rates:");
    let used = result.suggested_lr();
    for s in &result.suggestions {
        let mark = if Some(s.lr) == used {
            "  (used by train --lr auto)"
        } else {
            ""
        };
        out.push_str(&format!("\n  {:<11} {}{mark}", s.rule.name(), s.lr as f32));
    }
    out
}

/// Draws the raw and smoothed loss against the learning rate (log scale) with
/// the suggestions marked.
pub fn figure(result: &LrFindResult, regression: bool) -> Figure {
    let smoothed: Vec<(f64, f64)> = result.points.iter().map(|p| (p.lr, p.smoothed)).collect();
    let top = smoothed
        .iter()
        .map(|p| p.1)
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    let raw = result.points.iter().map(|p| (p.lr, p.loss)).collect();
    // A diverging tail would squash the rest of the curve, so the axis ends a
    // little above the loss at the start. Higher values are drawn at the edge.
    let first = smoothed.iter().map(|p| p.1).find(|v| v.is_finite());
    let y_max = first.map(|f| (f * 1.5).min(top * 1.05));
    let markers = result
        .suggestions
        .iter()
        .enumerate()
        .map(|(i, s)| Marker {
            x: s.lr,
            label: format!("{} {:.2e}", s.rule.name(), s.lr),
            color: 2 + i,
        })
        .collect();
    Figure {
        title: "Learning-rate range test".to_string(),
        panels: vec![Panel {
            title: format!("Loss against learning rate ({} steps)", result.points.len()),
            x_label: "learning rate (log scale)".to_string(),
            y_label: format!("training loss ({})", plot::loss_unit(regression)),
            x_log: true,
            y_max,
            series: vec![
                Series {
                    name: "batch loss".to_string(),
                    points: raw,
                    color: 0,
                    style: LineStyle::Faint,
                },
                Series {
                    name: format!("smoothed (EMA {})", lr_find::SMOOTHING),
                    points: smoothed,
                    color: 0,
                    style: LineStyle::Solid,
                },
            ],
            markers,
            ..Panel::default()
        }],
    }
}
