//! `densetrain train`: load, split, build, fit, save, summarise.

use crate::backend::cpu::Cpu;
use crate::backend::{Backend, LossKind};
use crate::cli::args::TrainArgs;
use crate::cli::settings;
use crate::cli::{Outcome, rundir};
use crate::data::{self, TaskKind};
use crate::model::file::{self, ModelMetadata, TrainingInfo};
use crate::model::{ModelSpec, Network, init};
use crate::train::{self, EarlyStoppingConfig, FitConfig, Monitor, StopReason, Units, summary};
use anyhow::{Context, Result, bail};

/// Runs `densetrain train`.
pub fn run(args: &TrainArgs) -> Result<Outcome> {
    let verbose = args.fit.verbose;
    let seed = args.fit.seed.unwrap_or_else(random_seed);
    let data_config = settings::data_config(&args.data, seed)?;
    let model_options = settings::model_options(&args.model)?;
    let optimizer = settings::optimizer_config(&args.optimizer)?;
    if args.fit.epochs == 0 {
        bail!("invalid --epochs 0: train for at least 1 epoch");
    }
    if args.fit.batch_size == 0 {
        bail!("invalid --batch-size 0: a batch needs at least 1 row");
    }
    let backend = select_device(&args.fit.device, &args.fit.precision, args.fit.threads)?;
    let out_dir = rundir::check_out(args.fit.out.as_deref())?;

    let prepared = data::prepare(&data_config)?;
    if verbose > 0 {
        for line in &prepared.report {
            println!("{line}");
        }
    }
    for warning in &prepared.warnings {
        log::warn!("{warning}");
    }
    let preprocessor = &prepared.preprocessor;
    let classification = preprocessor.task() == TaskKind::Classification;
    let (outputs, loss) = match preprocessor.class_names() {
        Some(names) if names.len() == 2 => (1, LossKind::SigmoidBinaryCrossEntropy),
        Some(names) => (names.len(), LossKind::SoftmaxCrossEntropy),
        None => (1, LossKind::MeanSquaredError),
    };
    let spec = ModelSpec {
        inputs: preprocessor.input_count(),
        hidden: model_options.hidden.clone(),
        activation: model_options.activation,
        outputs,
        loss,
        init: model_options.init,
        dropout: model_options.dropout,
    };
    spec.validate()?;

    let has_validation = prepared.validation.is_some();
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
    let monitor = match &args.fit.monitor {
        Some(name) => Monitor::parse(name, &available)?,
        None if has_validation => Monitor::ValLoss,
        None => Monitor::Loss,
    };
    if verbose > 0 && !has_validation {
        println!("Validation is off: early stopping and best weights watch '{monitor}'.");
    }
    let class_weights = match args.optimizer.class_weight.as_deref() {
        Some(_) if !classification => {
            bail!("--class-weight balanced applies to classification, and this task is regression")
        }
        Some(_) => {
            let classes = preprocessor.class_names().map_or(0, <[String]>::len);
            Some(data::balanced_class_weights(&prepared.train, classes))
        }
        None => None,
    };
    let early_stopping = EarlyStoppingConfig {
        monitor,
        mode: settings::mode(&args.fit),
        patience: args.fit.patience,
        min_delta: args.fit.min_delta,
        start_from_epoch: args.fit.start_from_epoch,
        restore_best_weights: !args.fit.no_restore_best_weights,
    };
    train::EarlyStopping::new(early_stopping)?;
    let fit_config = FitConfig {
        epochs: args.fit.epochs,
        batch_size: args.fit.batch_size,
        shuffle: !args.fit.no_shuffle,
        seed,
        optimizer,
        early_stopping,
        class_weights,
        verbose,
    };
    let units = match preprocessor.target_mean_std() {
        Some((_, std)) => Units::regression(std),
        None => Units::IDENTITY,
    };

    let out_dir = rundir::create(out_dir)?;
    if verbose > 0 {
        println!(
            "{}",
            summary::model_summary(&spec, &optimizer, &backend.description(), seed)
        );
        println!("Run directory: {}", out_dir.display());
    }
    let initial = init::init_params(&spec, seed);
    let result = train::fit(
        &backend,
        &spec,
        &initial,
        &prepared.train,
        prepared.validation.as_ref(),
        units,
        &fit_config,
    )?;

    let metadata = ModelMetadata {
        format: file::FORMAT.to_string(),
        version: file::FORMAT_VERSION,
        architecture: spec.clone(),
        preprocessing: preprocessor.clone(),
        training: TrainingInfo {
            optimizer,
            seed,
            epochs_run: result.history.epochs.len(),
            saved_epoch: Some(result.saved_epoch).filter(|&e| e > 0),
            best_epoch: result.best_epoch,
            monitor: monitor.name().to_string(),
        },
    };
    file::save(&out_dir, &metadata, &result.params)?;
    result.history.write_csv(&out_dir.join("history.csv"))?;
    if verbose > 0 {
        println!(
            "{}",
            summary::run_summary(&result, monitor, early_stopping.restore_best_weights)
        );
    }

    if let Some(test) = &prepared.test {
        let mut net = Network::new(&backend, &spec, &result.params, &optimizer, 1024)?;
        let scores = train::evaluate(&backend, &mut net, test, classification, units)
            .context("failed to score the test files")?;
        let metric = if classification { "accuracy" } else { "mae" };
        println!(
            "Test ({} rows): loss {:.4} - {metric} {:.4}",
            test.rows, scores.loss, scores.metric
        );
    } else if args.data.evaluate_test {
        log::warn!("--evaluate-test: this data source has no test files; nothing was scored");
    }
    if verbose > 0 {
        println!("Wrote {}", out_dir.display());
    }
    if let StopReason::NonFinite(_) = result.stop {
        if verbose == 0 {
            eprintln!(
                "{}",
                summary::run_summary(&result, monitor, early_stopping.restore_best_weights)
            );
        }
        return Ok(Outcome::TargetNotMet);
    }
    Ok(Outcome::Success)
}

fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    crate::rng::mix64(nanos ^ u64::from(std::process::id())) % 1_000_000
}

/// Picks the device: the CPU for `auto` and `cpu`, an error for CUDA in this build.
fn select_device(device: &str, precision: &str, threads: usize) -> Result<Cpu> {
    match device {
        "auto" => {
            log::info!("--device auto: using the CPU, because this build has no CUDA backend");
        }
        "cpu" => {}
        d if d == "cuda" || d.starts_with("cuda:") => bail!(
            "--device {d}: this build of densetrain has no CUDA backend yet; \
             use --device cpu or --device auto"
        ),
        other => bail!("invalid --device '{other}': expected auto, cpu, cuda or cuda:N"),
    }
    if precision != "f32" {
        bail!(
            "--precision {precision} needs a GPU, and this run uses the CPU; \
             use --precision f32"
        );
    }
    Cpu::new(threads)
}
