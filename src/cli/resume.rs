//! `densetrain train --resume RUN_DIR`: continue a run from its checkpoint.
//!
//! Every option comes from the run's stored command line; only the options
//! in [`CHANGEABLE`] may be given again, and each change is printed. The data
//! is loaded and split again and must match the run's fingerprint.

use crate::cli::args::{Cli, LearningRate, TrainArgs};
use crate::cli::run_files::{self, RunRecord};
use crate::train::checkpoint::{self, Checkpoint};
use anyhow::{Context, Result, bail};
use clap::CommandFactory;
use clap::parser::ValueSource;
use std::path::{Path, PathBuf};

/// Options (clap ids) that may be given with `--resume`.
pub const CHANGEABLE: [&str; 5] = ["epochs", "patience", "verbose", "threads", "device"];

/// Options (clap ids) that are always allowed with `--resume`.
const ALWAYS_ALLOWED: [&str; 2] = ["resume", "log_verbosity"];

/// A run being resumed.
pub struct Resumed {
    /// The run directory.
    pub dir: PathBuf,
    /// The run's options with the allowed changes applied.
    pub args: TrainArgs,
    /// The latest checkpoint.
    pub checkpoint: Checkpoint,
    /// The run record stored in the checkpoint.
    pub record: RunRecord,
}

/// Returns the clap ids of the `train` options typed on this process's
/// command line (not taken from defaults).
///
/// The derive API drops where a value came from, so the arguments are
/// parsed a second time into `ArgMatches`. Anything but a `train` command
/// line gives an empty list.
pub fn given_train_options() -> Vec<String> {
    let command = Cli::command();
    let Ok(matches) = command.clone().try_get_matches_from(std::env::args_os()) else {
        return Vec::new();
    };
    let Some(("train", sub)) = matches.subcommand() else {
        return Vec::new();
    };
    let Some(train) = command.find_subcommand("train") else {
        return Vec::new();
    };
    // The matches also list argument groups (one per flattened struct); keep arguments only.
    let is_argument = |id: &str| {
        id == "log_verbosity" || train.get_arguments().any(|a| a.get_id().as_str() == id)
    };
    sub.ids()
        .map(|id| id.as_str().to_string())
        .filter(|id| is_argument(id) && sub.value_source(id) == Some(ValueSource::CommandLine))
        .collect()
}

/// Returns the `--long-name` of the `train` option with clap id `id`.
pub fn flag_name(id: &str) -> String {
    let command = Cli::command();
    let long = command
        .find_subcommand("train")
        .and_then(|train| train.get_arguments().find(|a| a.get_id() == id))
        .and_then(|arg| arg.get_long().map(str::to_string));
    format!("--{}", long.unwrap_or_else(|| id.replace('_', "-")))
}

/// Opens run directory `dir` for resuming. `current` contains this command
/// line's options and `given` the ids of those typed (see
/// [`given_train_options`]); any given option outside [`CHANGEABLE`] is an
/// error that names it.
pub fn open(current: &TrainArgs, dir: &Path, given: &[String]) -> Result<Resumed> {
    if !dir.is_dir() {
        bail!(
            "--resume {}: no such run directory; pass the directory a train run wrote \
             (e.g. runs/run-001)",
            dir.display()
        );
    }
    let path = run_files::checkpoint_path(dir);
    if !path.is_file() {
        bail!(
            "--resume {}: {} does not exist, so the run has no checkpoint to continue from",
            dir.display(),
            path.display()
        );
    }
    let rejected: Vec<String> = given
        .iter()
        .filter(|id| !CHANGEABLE.contains(&id.as_str()) && !ALWAYS_ALLOWED.contains(&id.as_str()))
        .map(|id| flag_name(id))
        .collect();
    if !rejected.is_empty() {
        let allowed: Vec<String> = CHANGEABLE.iter().map(|id| flag_name(id)).collect();
        bail!(
            "--resume {} continues the run with the options it was started with, so {} \
             cannot be given; only {} may change (start a new run to change anything else)",
            dir.display(),
            rejected.join(", "),
            allowed.join(", ")
        );
    }
    let (checkpoint, run) = checkpoint::read(&path)?;
    let record: RunRecord = serde_json::from_value(run)
        .with_context(|| format!("{}: the run record in it is invalid", path.display()))?;
    let mut args = record
        .train_args()
        .with_context(|| format!("failed to resume {}", dir.display()))?;
    apply_changes(&mut args, current, given);
    // `--lr auto` ran its range test when the run started, and the checkpoint
    // contains the rate it chose.
    if args.optimizer.lr == Some(LearningRate::Auto) {
        args.optimizer.lr = Some(LearningRate::Value(checkpoint.state.optimizer.lr));
    }
    Ok(Resumed {
        dir: dir.to_path_buf(),
        args,
        checkpoint,
        record,
    })
}

/// Copies the given changeable options from `current` into `args` and
/// prints each change.
fn apply_changes(args: &mut TrainArgs, current: &TrainArgs, given: &[String]) {
    let verbose = if given.iter().any(|id| id == "verbose") {
        current.fit.verbose
    } else {
        args.fit.verbose
    };
    let report = |flag: &str, old: String, new: String| {
        if old != new {
            log::info!("--resume: {flag} changes from {old} to {new}");
            if verbose > 0 {
                println!("Resume: {flag} changes from {old} to {new}");
            }
        }
    };
    let show = |value: Option<usize>| value.map_or("none".to_string(), |v| v.to_string());
    for id in given {
        match id.as_str() {
            "epochs" => {
                report(
                    "--epochs",
                    args.fit.epochs.to_string(),
                    current.fit.epochs.to_string(),
                );
                args.fit.epochs = current.fit.epochs;
            }
            "patience" => {
                report(
                    "--patience",
                    show(args.fit.patience),
                    show(current.fit.patience),
                );
                args.fit.patience = current.fit.patience;
            }
            "verbose" => {
                report(
                    "--verbose",
                    args.fit.verbose.to_string(),
                    current.fit.verbose.to_string(),
                );
                args.fit.verbose = current.fit.verbose;
            }
            "threads" => {
                report(
                    "--threads",
                    args.fit.threads.to_string(),
                    current.fit.threads.to_string(),
                );
                args.fit.threads = current.fit.threads;
            }
            "device" => {
                report(
                    "--device",
                    args.fit.device.clone(),
                    current.fit.device.clone(),
                );
                args.fit.device = current.fit.device.clone();
            }
            _ => {}
        }
    }
}
