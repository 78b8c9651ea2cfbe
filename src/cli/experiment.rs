//! Steps shared by the commands that train models besides `train`: `lr-find`,
//! `sweep`, `cv`, and the learning curves that every run writes.

use crate::backend::LossKind;
use crate::cli::args::FitArgs;
use crate::cli::settings::ModelOptions;
use crate::data::{self, Dataset, PreparedData, TaskKind};
use crate::model::ModelSpec;
use crate::model::file::write_atomic;
use crate::optim::OptimizerConfig;
use crate::tools::plot;
use crate::train::{self, EarlyStoppingConfig, FitConfig, FitResult, Monitor, Units};
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Returns `--seed`, or a random seed that the caller prints.
pub fn seed(fit: &FitArgs) -> u64 {
    fit.seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        crate::rng::mix64(nanos ^ u64::from(std::process::id())) % 1_000_000
    })
}

/// Prints the data report (unless `verbose` is 0) and logs the data warnings.
pub fn report_data(prepared: &PreparedData, verbose: u8) {
    if verbose > 0 {
        for line in &prepared.report {
            println!("{line}");
        }
    }
    for warning in &prepared.warnings {
        log::warn!("{warning}");
    }
}

/// Builds the model for the prepared data: the output layer and loss follow the task.
pub fn model_spec(prepared: &PreparedData, options: &ModelOptions) -> Result<ModelSpec> {
    let preprocessor = &prepared.preprocessor;
    let (outputs, loss) = match preprocessor.class_names() {
        Some(names) if names.len() == 2 => (1, LossKind::SigmoidBinaryCrossEntropy),
        Some(names) => (names.len(), LossKind::SoftmaxCrossEntropy),
        None => (1, LossKind::MeanSquaredError),
    };
    let spec = ModelSpec {
        inputs: preprocessor.input_count(),
        hidden: options.hidden.clone(),
        activation: options.activation,
        outputs,
        loss,
        init: options.init,
        dropout: options.dropout,
    };
    spec.validate()?;
    Ok(spec)
}

/// Returns whether the prepared data is a classification task.
pub fn is_classification(prepared: &PreparedData) -> bool {
    prepared.preprocessor.task() == TaskKind::Classification
}

/// Converts training-unit losses into the target's units.
pub fn units(prepared: &PreparedData) -> Units {
    match prepared.preprocessor.target_mean_std() {
        Some((_, std)) => Units::regression(std),
        None => Units::IDENTITY,
    }
}

/// Returns balanced class weights of `train` for `--class-weight balanced`.
pub fn class_weights(
    class_weight: Option<&str>,
    prepared: &PreparedData,
    train: &Dataset,
) -> Result<Option<Vec<f32>>> {
    match class_weight {
        None => Ok(None),
        Some(_) if !is_classification(prepared) => {
            bail!("--class-weight balanced applies to classification, and this task is regression")
        }
        Some(_) => {
            let classes = prepared
                .preprocessor
                .class_names()
                .map_or(0, <[String]>::len);
            Ok(Some(data::balanced_class_weights(train, classes)))
        }
    }
}

/// Builds the early-stopping settings; `default_patience` applies when
/// `--patience` is absent.
pub fn early_stopping(
    fit: &FitArgs,
    has_validation: bool,
    classification: bool,
    default_patience: Option<usize>,
) -> Result<EarlyStoppingConfig> {
    let mut available = vec![Monitor::Loss];
    available.push(if classification {
        Monitor::Accuracy
    } else {
        Monitor::Mae
    });
    if has_validation {
        available.push(Monitor::ValLoss);
        available.push(if classification {
            Monitor::ValAccuracy
        } else {
            Monitor::ValMae
        });
    }
    let monitor = match &fit.monitor {
        Some(name) => Monitor::parse(name, &available)?,
        None if has_validation => Monitor::ValLoss,
        None => Monitor::Loss,
    };
    let config = EarlyStoppingConfig {
        monitor,
        mode: crate::cli::settings::mode(fit),
        patience: fit.patience.or(default_patience),
        min_delta: fit.min_delta,
        start_from_epoch: fit.start_from_epoch,
        restore_best_weights: !fit.no_restore_best_weights,
    };
    train::EarlyStopping::new(config)?;
    Ok(config)
}

/// Checks the epoch and batch counts, which need no data, so a command can
/// reject them before it reads any.
pub fn check_fit_args(fit: &FitArgs) -> Result<()> {
    if fit.epochs == 0 {
        bail!("invalid --epochs 0: train for at least 1 epoch");
    }
    if fit.batch_size == 0 {
        bail!("invalid --batch-size 0: a batch needs at least 1 row");
    }
    Ok(())
}

/// Builds the fit settings from the command line.
pub fn fit_config(
    fit: &FitArgs,
    seed: u64,
    optimizer: OptimizerConfig,
    early_stopping: EarlyStoppingConfig,
    class_weights: Option<Vec<f32>>,
) -> Result<FitConfig> {
    check_fit_args(fit)?;
    Ok(FitConfig {
        epochs: fit.epochs,
        batch_size: fit.batch_size,
        shuffle: !fit.no_shuffle,
        seed,
        optimizer,
        early_stopping,
        class_weights,
        verbose: fit.verbose,
        diagnostics: !fit.no_diagnostics,
    })
}

/// Writes `text` to `dir/name` atomically.
pub fn write_text(dir: &Path, name: &str, text: &str) -> Result<()> {
    let path = dir.join(name);
    write_atomic(&path, text.as_bytes())
        .with_context(|| format!("failed to write {}", path.display()))
}

/// Writes a run's learning curves as `curves.png` and `curves.svg` into `dir`.
pub fn write_curves(dir: &Path, result: &FitResult) -> Result<()> {
    let figure = plot::learning_curves(&result.history, result.best_epoch, &result.stop);
    plot::write_figure(&figure, dir, "curves")?;
    Ok(())
}
