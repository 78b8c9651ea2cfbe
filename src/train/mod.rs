//! The fit loop: batches, validation, early stopping, best weights, history.
//!
//! The loop is written once against [`Backend`]; it never learns which device
//! it runs on. Reported training loss and metric are running means over the
//! epoch's batches (as Keras prints them); validation metrics are computed
//! after the epoch with the epoch's final weights.

pub mod early_stopping;
pub mod history;
pub mod progress;
pub mod summary;

use crate::backend::{Backend, StatsValues};
use crate::data::Dataset;
use crate::model::{ModelSpec, Network, Params};
use crate::optim::OptimizerConfig;
use crate::rng;
use anyhow::{Context, Result, bail};
use std::time::Instant;

pub use early_stopping::{Decision, EarlyStopping, EarlyStoppingConfig, Mode, Monitor};
pub use history::{EpochRecord, History};
use progress::Progress;

/// Rows per validation or evaluation pass when the batch size is smaller.
const EVAL_ROWS: usize = 1024;

/// Settings of one fit.
#[derive(Clone, Debug, PartialEq)]
pub struct FitConfig {
    /// Maximum number of epochs (>= 1).
    pub epochs: usize,
    /// Rows per batch (>= 1); the last partial batch is used.
    pub batch_size: usize,
    /// Shuffle the training rows every epoch.
    pub shuffle: bool,
    /// Seed of shuffling and dropout.
    pub seed: u64,
    /// Optimizer and learning rate.
    pub optimizer: OptimizerConfig,
    /// Early stopping and best-weight restoring.
    pub early_stopping: EarlyStoppingConfig,
    /// Per-class loss weights (classification), indexed by class.
    pub class_weights: Option<Vec<f32>>,
    /// 0 silent, 1 progress bar, 2 one line per epoch.
    pub verbose: u8,
}

/// Converts training-unit losses and errors into the target's own units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Units {
    /// Multiplies the loss (the target's variance for standardised regression, else 1).
    pub loss: f64,
    /// Multiplies the mean absolute error (the target's standard deviation, else 1).
    pub error: f64,
}

impl Units {
    /// No conversion (classification).
    pub const IDENTITY: Units = Units {
        loss: 1.0,
        error: 1.0,
    };

    /// Conversion for a regression target standardised with `std`.
    pub fn regression(std: f64) -> Units {
        Units {
            loss: std * std,
            error: std,
        }
    }
}

/// Where a non-finite value stopped training.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    /// Epoch (from 1).
    pub epoch: usize,
    /// Batch within the epoch (from 1), or `None` when validation produced it.
    pub batch: Option<usize>,
    /// First layer (from 1) whose output was not finite; `None` when only the loss was.
    pub layer: Option<usize>,
}

/// Why training ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// All requested epochs ran.
    EpochLimit,
    /// Early stopping: `waited` epochs without improvement.
    EarlyStopping { waited: usize },
    /// A loss was not finite.
    NonFinite(NonFinite),
}

/// The outcome of a fit.
#[derive(Clone, Debug)]
pub struct FitResult {
    /// One record per completed epoch.
    pub history: History,
    /// Why training ended.
    pub stop: StopReason,
    /// Epoch (from 1) with the best monitored value, if any epoch counted.
    pub best_epoch: Option<usize>,
    /// The best monitored value.
    pub best_value: Option<f64>,
    /// Epoch whose weights are in `params` (0 means the initial weights).
    pub saved_epoch: usize,
    /// The final weights.
    pub params: Params,
    /// Total time of the training passes, in seconds.
    pub train_seconds: f64,
    /// Training rows processed per second of training pass.
    pub samples_per_second: f64,
}

/// Metrics of one pass, in the target's units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scores {
    /// Mean loss.
    pub loss: f64,
    /// Accuracy or mean absolute error.
    pub metric: f64,
}

fn scores(stats: &StatsValues, batches: usize, classification: bool, units: Units) -> Scores {
    let rows = stats.rows.max(1.0);
    let penalty = stats.penalty_sum / batches.max(1) as f64;
    let loss = (stats.loss_sum / rows + penalty) * units.loss;
    let metric = if classification {
        stats.correct / rows
    } else {
        stats.abs_error_sum / rows * units.error
    };
    Scores { loss, metric }
}

/// Device copies of one data part.
struct DeviceData<B: Backend> {
    x: B::Buf,
    y: B::Buf,
    rows: usize,
    cols: usize,
    /// `0..rows`, for passes in file order.
    identity: B::Idx,
}

impl<B: Backend> DeviceData<B> {
    fn upload(backend: &B, data: &Dataset) -> Result<Self> {
        let identity: Vec<u32> = (0..data.rows as u32).collect();
        Ok(Self {
            x: backend.upload(&data.x)?,
            y: backend.upload(&data.y)?,
            rows: data.rows,
            cols: data.cols,
            identity: backend.upload_idx(&identity)?,
        })
    }
}

/// Batch buffers of one fit.
struct BatchBuffers<B: Backend> {
    x: B::Buf,
    y: B::Buf,
}

/// Returns the mean loss and metric of `net` over `data` (no dropout, no class weights).
pub fn evaluate<B: Backend>(
    backend: &B,
    net: &mut Network<B>,
    data: &Dataset,
    classification: bool,
    units: Units,
) -> Result<Scores> {
    let device = DeviceData::upload(backend, data)?;
    let mut batch = BatchBuffers {
        x: backend.zeros(net.max_rows() * data.cols)?,
        y: backend.zeros(net.max_rows())?,
    };
    let mut stats = backend.new_stats()?;
    evaluate_device(backend, net, &device, &mut batch, &mut stats)?;
    let values = backend.read_stats(&stats)?;
    Ok(scores(&values, 1, classification, units))
}

fn evaluate_device<B: Backend>(
    backend: &B,
    net: &mut Network<B>,
    data: &DeviceData<B>,
    batch: &mut BatchBuffers<B>,
    stats: &mut B::Stats,
) -> Result<()> {
    backend.reset_stats(stats)?;
    let chunk = net.max_rows();
    let mut start = 0;
    while start < data.rows {
        let rows = chunk.min(data.rows - start);
        backend.gather_rows(
            &data.x,
            data.cols,
            &data.identity,
            start,
            rows,
            &mut batch.x,
        )?;
        backend.gather_rows(&data.y, 1, &data.identity, start, rows, &mut batch.y)?;
        net.evaluate_batch(backend, &batch.x, &batch.y, rows, stats)?;
        start += rows;
    }
    Ok(())
}

/// Returns the model's predictions for every row of `data`, `[rows, C]` row-major.
pub fn predict<B: Backend>(backend: &B, net: &mut Network<B>, data: &Dataset) -> Result<Vec<f32>> {
    let device = DeviceData::upload(backend, data)?;
    let outputs = net.spec().outputs;
    let chunk = net.max_rows();
    let mut x = backend.zeros(chunk * data.cols)?;
    let mut out = backend.zeros(chunk * outputs)?;
    let mut all = Vec::with_capacity(data.rows * outputs);
    let mut start = 0;
    while start < data.rows {
        let rows = chunk.min(data.rows - start);
        backend.gather_rows(&device.x, data.cols, &device.identity, start, rows, &mut x)?;
        net.predict_batch(backend, &x, rows, &mut out)?;
        all.extend_from_slice(&backend.download(&out)?[..rows * outputs]);
        start += rows;
    }
    Ok(all)
}

/// Checks a fit's settings against its data before anything is allocated.
fn validate(config: &FitConfig, train: &Dataset, validation: Option<&Dataset>) -> Result<()> {
    if config.epochs == 0 {
        bail!("invalid --epochs 0: train for at least 1 epoch");
    }
    if config.batch_size == 0 {
        bail!("invalid --batch-size 0: a batch needs at least 1 row");
    }
    if train.rows == 0 {
        bail!("the training part has no rows");
    }
    if validation.is_none() && config.early_stopping.monitor.name().starts_with("val_") {
        bail!(
            "invalid --monitor '{}': validation is off; monitor 'loss' instead",
            config.early_stopping.monitor
        );
    }
    Ok(())
}

/// Trains `spec` from `initial` weights on `train`, validating on `validation`.
///
/// Prints progress according to `config.verbose` and returns the history and
/// the final weights (the best epoch's when `restore_best_weights` is set).
pub fn fit<B: Backend>(
    backend: &B,
    spec: &ModelSpec,
    initial: &Params,
    train: &Dataset,
    validation: Option<&Dataset>,
    units: Units,
    config: &FitConfig,
) -> Result<FitResult> {
    validate(config, train, validation)?;
    let classification = spec.loss != crate::backend::LossKind::MeanSquaredError;
    let metric_name = if classification { "accuracy" } else { "mae" };
    let batch_size = config.batch_size.min(train.rows);
    let max_rows = batch_size.max(EVAL_ROWS.min(validation.map_or(0, |v| v.rows)));
    let mut net = Network::new(backend, spec, initial, &config.optimizer, max_rows)
        .context("failed to set up the network on the device")?;
    let train_dev = DeviceData::upload(backend, train)?;
    let val_dev = validation
        .map(|v| DeviceData::upload(backend, v))
        .transpose()?;
    let mut batch = BatchBuffers {
        x: backend.zeros(max_rows * train.cols)?,
        y: backend.zeros(max_rows)?,
    };
    let class_weights = config
        .class_weights
        .as_ref()
        .map(|w| backend.upload(w))
        .transpose()?;
    let mut order = backend.upload_idx(&(0..train.rows as u32).collect::<Vec<_>>())?;
    let mut train_stats = backend.new_stats()?;
    let mut val_stats = backend.new_stats()?;
    let mut last_good = net.snapshot(backend)?;
    let mut best = net.snapshot(backend)?;
    let mut best_saved = 0usize;
    let mut early = EarlyStopping::new(config.early_stopping)?;
    let mut history = History::new(metric_name, validation.is_some());
    let mut progress = Progress::new(config.verbose, config.epochs, metric_name);
    let batches = train.rows.div_ceil(batch_size);
    let lr = config.optimizer.lr;
    let mut step: u64 = 0;
    let mut train_seconds = 0.0;
    let mut stop = StopReason::EpochLimit;

    for epoch in 1..=config.epochs {
        let permutation = if config.shuffle {
            rng::epoch_permutation(config.seed, epoch as u64 - 1, train.rows)
        } else {
            (0..train.rows as u32).collect()
        };
        backend.write_idx(&permutation, &mut order)?;
        backend.reset_stats(&mut train_stats)?;
        progress.start_epoch(epoch, batches);
        let started = Instant::now();
        let mut nonfinite_batch = None;
        for b in 0..batches {
            let start = b * batch_size;
            let rows = batch_size.min(train.rows - start);
            backend.gather_rows(&train_dev.x, train.cols, &order, start, rows, &mut batch.x)?;
            backend.gather_rows(&train_dev.y, 1, &order, start, rows, &mut batch.y)?;
            net.train_step(
                backend,
                &batch.x,
                &batch.y,
                rows,
                class_weights.as_ref(),
                &config.optimizer,
                lr,
                step,
                config.seed,
                b as u64,
                &mut train_stats,
            )?;
            step += 1;
            if progress.wants_refresh() {
                let values = backend.read_stats(&train_stats)?;
                if let Some(bad) = values.nonfinite_batch {
                    nonfinite_batch = Some(bad as usize);
                    break;
                }
                let s = scores(&values, b + 1, classification, units);
                progress.update(b + 1, Some((s.loss, s.metric)));
            } else {
                progress.update(b + 1, None);
            }
        }
        let seconds = started.elapsed().as_secs_f64();
        train_seconds += seconds;
        let values = backend.read_stats(&train_stats)?;
        if let Some(bad) = nonfinite_batch.or(values.nonfinite_batch.map(|b| b as usize)) {
            progress.abandon();
            // Updates stopped at the bad batch, so the weights are those that produced it.
            let start = bad * batch_size;
            let rows = batch_size.min(train.rows - start);
            backend.gather_rows(&train_dev.x, train.cols, &order, start, rows, &mut batch.x)?;
            let layer = net.first_nonfinite_layer(backend, &batch.x, rows)?;
            net.restore_from(backend, &last_good)?;
            stop = StopReason::NonFinite(NonFinite {
                epoch,
                batch: Some(bad + 1),
                layer: layer.map(|l| l + 1),
            });
            break;
        }
        let train_scores = scores(&values, batches, classification, units);
        let val_scores = match &val_dev {
            Some(v) => {
                evaluate_device(backend, &mut net, v, &mut batch, &mut val_stats)?;
                let values = backend.read_stats(&val_stats)?;
                Some(scores(&values, 1, classification, units))
            }
            None => None,
        };
        if val_scores.is_some_and(|s| !s.loss.is_finite()) {
            progress.abandon();
            net.restore_from(backend, &last_good)?;
            stop = StopReason::NonFinite(NonFinite {
                epoch,
                batch: None,
                layer: None,
            });
            break;
        }
        let record = EpochRecord {
            epoch,
            loss: train_scores.loss,
            metric: train_scores.metric,
            val_loss: val_scores.map(|s| s.loss),
            val_metric: val_scores.map(|s| s.metric),
            learning_rate: lr as f64,
            seconds,
        };
        progress.end_epoch(&record, batches);
        let monitored = monitored_value(&record, config.early_stopping.monitor);
        history.epochs.push(record);
        net.save_to(backend, &mut last_good)?;
        let decision = early.update(epoch, monitored);
        if decision == Decision::Improved {
            net.save_to(backend, &mut best)?;
            best_saved = epoch;
            log::debug!(
                "epoch {epoch}: new best {} {monitored}",
                early.config().monitor
            );
        }
        if decision == Decision::Stop {
            stop = StopReason::EarlyStopping {
                waited: early.wait(),
            };
            break;
        }
    }

    let completed = history.epochs.len();
    let mut saved_epoch = completed;
    if config.early_stopping.restore_best_weights && best_saved > 0 && best_saved != completed {
        net.restore_from(backend, &best)?;
        saved_epoch = best_saved;
    }
    let samples = train.rows as f64 * completed as f64;
    Ok(FitResult {
        history,
        stop,
        best_epoch: early.best_epoch(),
        best_value: early.best(),
        saved_epoch,
        params: net.params(backend)?,
        train_seconds,
        samples_per_second: if train_seconds > 0.0 {
            samples / train_seconds
        } else {
            0.0
        },
    })
}

fn monitored_value(record: &EpochRecord, monitor: Monitor) -> f64 {
    match monitor {
        Monitor::Loss => record.loss,
        Monitor::Accuracy | Monitor::Mae => record.metric,
        Monitor::ValLoss => record.val_loss.unwrap_or(f64::NAN),
        Monitor::ValAccuracy | Monitor::ValMae => record.val_metric.unwrap_or(f64::NAN),
    }
}
