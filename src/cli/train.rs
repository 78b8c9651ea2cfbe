//! `densetrain train`: load, split, build, fit, save, summarise.

use crate::backend::{Backend, LossKind};
use crate::cli::args::{LearningRate, TrainArgs};
use crate::cli::settings;
use crate::cli::{Outcome, device, rundir};
use crate::cli::{control, fine_tune, interrupt, resume, run_files};
use crate::cli::{experiment, lr_find};
use crate::data::{self, TaskKind};
use crate::model::file::{self, ModelMetadata, TrainingInfo};
use crate::model::{ModelSpec, Network, init};
use crate::train::{self, EarlyStoppingConfig, FitConfig, Monitor, StopReason, Units, summary};
use crate::train::{History, RunControl};
use anyhow::{Context, Result, bail};

/// Runs `densetrain train`.
pub fn run(args: &TrainArgs) -> Result<Outcome> {
    let given = resume::given_train_options();
    let resumed = match &args.control.resume {
        Some(dir) => Some(resume::open(args, dir, &given)?),
        None => None,
    };
    let args = resumed.as_ref().map_or(args, |r| &r.args);
    let lr_control = control::lr_control(&args.control, args.fit.epochs)?;
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
    let backend = device::select(&args.fit)?;
    let out_dir = match &resumed {
        // The run writes into its own directory again: check that it can
        // before the data is read.
        Some(r) => {
            rundir::OutDir::Existing(rundir::create(rundir::OutDir::Existing(r.dir.clone()))?)
        }
        None => rundir::check_out(args.fit.out.as_deref())?,
    };

    let (mut prepared, initial_model) =
        fine_tune::prepare_data(&data_config, args.control.initial_model.as_deref())?;
    if let Some(r) = &resumed {
        r.record.check_data(&prepared)?;
    }
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
    let spec = match &initial_model {
        Some(model) => fine_tune::initial_spec(model, &spec, &given)?,
        None => spec,
    };

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
        diagnostics: !args.fit.no_diagnostics,
    };
    let units = match preprocessor.target_mean_std() {
        Some((_, std)) => Units::regression(std),
        None => Units::IDENTITY,
    };

    let out_dir = rundir::create(out_dir)?;
    // NOTE: stop signals are handled only from the fit on, so SIGINT or SIGTERM during
    // this sweep ends the process without a message and leaves the run directory empty.
    let (fit_config, optimizer) = if args.optimizer.lr == Some(LearningRate::Auto) {
        let fit = lr_find::auto_lr(
            &backend,
            &spec,
            initial_model.as_ref().map(|model| &model.params),
            &prepared.train,
            units,
            &fit_config,
            &out_dir,
        )?;
        let optimizer = fit.optimizer;
        (fit, optimizer)
    } else {
        (fit_config, optimizer)
    };
    if verbose > 0 {
        println!(
            "{}",
            summary::model_summary(&spec, &optimizer, &backend.description(), seed)
        );
        println!("Run directory: {}", out_dir.display());
    }
    let record = match &resumed {
        Some(r) => r.record.clone(),
        None => {
            let record = run_files::RunRecord::new(args, seed, &prepared)?;
            record.write(&out_dir)?;
            record
        }
    };
    let best_model = args.control.checkpoint_best.then(|| ModelMetadata {
        format: file::FORMAT.to_string(),
        version: file::FORMAT_VERSION,
        architecture: spec.clone(),
        preprocessing: preprocessor.clone(),
        training: TrainingInfo {
            optimizer,
            seed,
            epochs_run: 0,
            saved_epoch: None,
            best_epoch: None,
            monitor: monitor.name().to_string(),
        },
    });
    let empty_history = History::new(
        if classification { "accuracy" } else { "mae" },
        has_validation,
    );
    let mut writer =
        run_files::CheckpointWriter::new(&out_dir, &record, empty_history, best_model)?;
    let mut sink = |c: &train::Checkpoint, kind| writer.write(c, kind);
    let signals = interrupt::StopSignals::install()?;
    let initial = match (&resumed, &initial_model) {
        (Some(r), _) => r.checkpoint.params.clone(),
        (None, Some(model)) => model.params.clone(),
        (None, None) => init::init_params(&spec, seed),
    };
    if let Some(r) = &resumed {
        if verbose > 0 {
            println!("{}", control::describe_resume(&r.dir, &r.checkpoint.state));
        }
    }
    let run_control = RunControl {
        lr: lr_control,
        resume: resumed.as_ref().map(|r| r.checkpoint.clone()),
        checkpoint_every: args.control.checkpoint_every,
        on_checkpoint: Some(&mut sink),
        stop_requested: Some(signals.flag()),
        stop_after_batches: interrupt::stop_after_batches()?,
    };
    let result = train::fit_with(
        &backend,
        &spec,
        &initial,
        // By value: the CPU backend trains on these rows in place.
        std::mem::take(&mut prepared.train),
        prepared.validation.as_ref(),
        units,
        &fit_config,
        run_control,
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
    experiment::write_curves(&out_dir, &result)?;
    if verbose > 0 {
        println!(
            "{}",
            summary::run_summary(&result, monitor, early_stopping.restore_best_weights)
        );
        if let Some(report) = &result.diagnostics {
            println!("{}", report.summary());
        }
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
        let csv = format!(
            "rows,loss,{metric}\n{},{},{}\n",
            test.rows, scores.loss, scores.metric
        );
        file::write_atomic(&out_dir.join("test.csv"), csv.as_bytes())?;
    } else if args.data.evaluate_test {
        log::warn!("--evaluate-test: this data source has no test files; nothing was scored");
    }
    if verbose > 0 {
        println!("Wrote {}", out_dir.display());
    }
    if let StopReason::Interrupted { .. } = result.stop {
        let (signal, status) = signals.received();
        eprintln!("{}", control::describe_interrupt(&out_dir, signal, &result));
        return Ok(Outcome::Interrupted(status));
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
