//! The fit loop: batches, validation, early stopping, best weights, history.
//!
//! The loop is written once against [`Backend`], so it never learns which
//! device it runs on. Reported training loss and metric are running means over
//! the epoch's batches, as Keras prints them. Validation metrics are computed
//! after the epoch with the epoch's final weights.

pub mod checkpoint;
pub mod early_stopping;
pub mod history;
pub mod metrics;
pub mod progress;
pub mod schedule;
pub mod summary;

use crate::backend::{Backend, StatsValues};
use crate::data::Dataset;
use crate::model::network::Snapshot;
use crate::model::{ModelSpec, Network, Params};
use crate::optim::OptimizerConfig;
use crate::rng;
use crate::tools::diagnostics::{Diagnostics, DiagnosticsReport};
use anyhow::{Context, Result, bail};
use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

pub use checkpoint::{Checkpoint, CheckpointKind, TrainingState};
pub use early_stopping::{Decision, EarlyStopping, EarlyStoppingConfig, Mode, Monitor};
pub use history::{EpochRecord, History};
use progress::Progress;
pub use schedule::{LrControl, LrSchedule, LrState, PlateauConfig};

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
    /// Track dead units and gradient sizes per epoch, warn, and add them to the history.
    pub diagnostics: bool,
}

/// Receives each checkpoint the fit loop writes.
pub type CheckpointSink<'a> = dyn FnMut(&Checkpoint, CheckpointKind) -> Result<()> + 'a;

/// Options that [`fit_with`] adds to [`fit`]: learning-rate control,
/// checkpoints, resuming and stopping on request. The default adds nothing.
#[derive(Default)]
pub struct RunControl<'a> {
    /// Learning-rate schedule or plateau reduction.
    pub lr: LrControl,
    /// A checkpoint to continue from; its weights and counters replace the start.
    pub resume: Option<Checkpoint>,
    /// Also checkpoint every this many optimizer steps (epoch ends always are).
    pub checkpoint_every: Option<usize>,
    /// Receives the checkpoints; without it none is built.
    pub on_checkpoint: Option<&'a mut CheckpointSink<'a>>,
    /// Set (e.g. by a signal handler) to stop after the current batch.
    pub stop_requested: Option<&'a AtomicBool>,
    /// Stops as if requested once this many batches ran in this call (tests).
    pub stop_after_batches: Option<u64>,
}

impl RunControl<'_> {
    fn should_stop(&self, batches_run: u64) -> bool {
        self.stop_requested
            .is_some_and(|flag| flag.load(Ordering::SeqCst))
            || self.stop_after_batches.is_some_and(|n| batches_run >= n)
    }
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

/// Location of the non-finite value that stopped training.
#[derive(Clone, Debug, PartialEq)]
pub struct NonFinite {
    /// Epoch (from 1).
    pub epoch: usize,
    /// Batch within the epoch (from 1), or `None` when validation produced it.
    pub batch: Option<usize>,
    /// First layer (from 1) whose output was not finite; `None` when only the loss was.
    pub layer: Option<usize>,
}

/// Reason training ended.
#[derive(Clone, Debug, PartialEq)]
pub enum StopReason {
    /// All requested epochs ran.
    EpochLimit,
    /// Early stopping: `waited` epochs without improvement.
    EarlyStopping { waited: usize },
    /// A loss was not finite.
    NonFinite(NonFinite),
    /// A stop was requested by a signal, and a checkpoint marks the place.
    Interrupted {
        /// Epochs completed.
        epochs_completed: usize,
        /// Batches run in the next epoch (0 when it stopped at an epoch's end).
        batches_done: usize,
    },
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
    /// Dead units, gradient sizes and warnings, when `diagnostics` was on.
    pub diagnostics: Option<DiagnosticsReport>,
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

/// Rows and columns of a data part whose values live on the device.
#[derive(Clone, Copy)]
struct DataShape {
    rows: usize,
    cols: usize,
}

impl<B: Backend> DeviceData<B> {
    /// Uploads `data`, moving its vectors into the device buffers when it is owned.
    fn upload_cow(backend: &B, data: Cow<'_, Dataset>) -> Result<Self> {
        let (rows, cols) = (data.rows, data.cols);
        let (x, y) = match data {
            Cow::Borrowed(data) => (backend.upload(&data.x)?, backend.upload(&data.y)?),
            Cow::Owned(data) => (backend.upload_vec(data.x)?, backend.upload_vec(data.y)?),
        };
        let identity: Vec<u32> = (0..rows as u32).collect();
        Ok(Self {
            x,
            y,
            rows,
            cols,
            identity: backend.upload_idx(&identity)?,
        })
    }

    /// Copies `data` into device buffers.
    fn upload(backend: &B, data: &Dataset) -> Result<Self> {
        Self::upload_cow(backend, Cow::Borrowed(data))
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
    backend.run(|| {
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
    })
}

/// Returns the model's predictions for every row of `data`, `[rows, C]` row-major.
pub fn predict<B: Backend>(backend: &B, net: &mut Network<B>, data: &Dataset) -> Result<Vec<f32>> {
    let device = DeviceData::upload(backend, data)?;
    let outputs = net.spec().outputs;
    let chunk = net.max_rows();
    let mut x = backend.zeros(chunk * data.cols)?;
    let mut out = backend.zeros(chunk * outputs)?;
    let mut all = Vec::with_capacity(data.rows * outputs);
    backend.run(|| -> Result<()> {
        let mut start = 0;
        while start < data.rows {
            let rows = chunk.min(data.rows - start);
            backend.gather_rows(&device.x, data.cols, &device.identity, start, rows, &mut x)?;
            net.predict_batch(backend, &x, rows, &mut out)?;
            all.extend_from_slice(&backend.download(&out)?[..rows * outputs]);
            start += rows;
        }
        Ok(())
    })?;
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

/// Returns the rows a fit's buffers hold: the batch size, or the rows of one
/// validation pass when that is larger (at most 1024). Evaluation of a saved
/// run groups its rows the same way, so its sums match the fit's bit for bit.
pub fn batch_capacity(batch_size: usize, train_rows: usize, validation_rows: usize) -> usize {
    let batch_size = batch_size.min(train_rows).max(1);
    batch_size.max(EVAL_ROWS.min(validation_rows))
}

/// Trains `spec` from `initial` weights on `train`, validating on `validation`.
///
/// Prints progress according to `config.verbose` and returns the history and
/// the final weights (the best epoch's when `restore_best_weights` is set).
/// `train` is a `&Dataset` or a `Dataset`. Given by value, it is moved into
/// the buffers of a backend that keeps them in host memory (the CPU), so the
/// rows are never held twice.
pub fn fit<'a, B: Backend>(
    backend: &B,
    spec: &ModelSpec,
    initial: &Params,
    train: impl Into<Cow<'a, Dataset>>,
    validation: Option<&Dataset>,
    units: Units,
    config: &FitConfig,
) -> Result<FitResult> {
    let control = RunControl::default();
    fit_with(
        backend, spec, initial, train, validation, units, config, control,
    )
}

/// Trains as [`fit`] does, with the learning-rate control, checkpoints,
/// resuming and stop requests of `control`.
///
/// With `control.resume`, the checkpoint's weights, optimizer state,
/// counters, early-stopping and learning-rate state and history replace
/// `initial` and the start, and `config.epochs` is the total to reach. On the
/// same backend and thread count the result equals, bit for bit, that of a
/// fit that was never interrupted. A stop request finishes the current
/// batch, sends an [`CheckpointKind::Interrupt`] checkpoint and returns with
/// [`StopReason::Interrupted`] and the weights of the last completed epoch
/// (or the best one's).
#[allow(clippy::too_many_arguments)]
pub fn fit_with<'a, B: Backend>(
    backend: &B,
    spec: &ModelSpec,
    initial: &Params,
    train: impl Into<Cow<'a, Dataset>>,
    validation: Option<&Dataset>,
    units: Units,
    config: &FitConfig,
    mut control: RunControl<'_>,
) -> Result<FitResult> {
    let train = train.into();
    validate(config, &train, validation)?;
    let classification = spec.loss != crate::backend::LossKind::MeanSquaredError;
    let metric_name = if classification { "accuracy" } else { "mae" };
    let batch_size = config.batch_size.min(train.rows);
    let max_rows = batch_capacity(
        config.batch_size,
        train.rows,
        validation.map_or(0, |v| v.rows),
    );
    let mut net = Network::new(backend, spec, initial, &config.optimizer, max_rows)
        .context("failed to set up the network on the device")?;
    let train_dev = DeviceData::upload_cow(backend, train)?;
    let train = DataShape {
        rows: train_dev.rows,
        cols: train_dev.cols,
    };
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
    let mut lr_state = LrState::new(&control.lr, config.optimizer.lr, early.maximize())?;
    let mut history = History::new(metric_name, validation.is_some());
    let mut diagnostics = if config.diagnostics {
        let tracker = Diagnostics::new(backend, spec)?;
        history.extra_columns = tracker.columns();
        Some(tracker)
    } else {
        None
    };
    let batches = train.rows.div_ceil(batch_size);
    let mut step: u64 = 0;
    let mut train_seconds = 0.0;
    let mut first_epoch = 1;
    let mut first_batch = 0;
    let mut running: Option<StatsValues> = None;
    if let Some(checkpoint) = control.resume.take() {
        check_resume(&checkpoint.state, spec, config, batches, &history)?;
        let state = &checkpoint.state;
        net.load_params(backend, &checkpoint.params)?;
        net.load_optimizer_state(backend, &checkpoint.optimizer_state)?;
        net.write_snapshot(backend, &checkpoint.best, &mut best)?;
        net.write_snapshot(backend, &checkpoint.last_epoch, &mut last_good)?;
        best_saved = state.best_saved;
        early.restore(state.early_stopping);
        lr_state.restore(&state.lr)?;
        history.epochs = state.history.clone();
        history.extra_rows = state.extra_rows.clone();
        if let (Some(tracker), Some(saved)) = (diagnostics.as_mut(), &state.diagnostics) {
            tracker.restore(backend, &state.extra_rows, &saved.sums, saved.batches)?;
        }
        step = state.step;
        train_seconds = state.train_seconds;
        first_epoch = state.epochs_completed + 1;
        first_batch = state.batches_done;
        running = state.running.map(StatsValues::from);
    }
    let mut progress = Progress::new(config.verbose, config.epochs, metric_name);
    let mut stop = StopReason::EpochLimit;
    let mut batches_run: u64 = 0;

    'epochs: for epoch in first_epoch..=config.epochs {
        let lr = lr_state.rate(epoch);
        let permutation = if config.shuffle {
            rng::epoch_permutation(config.seed, epoch as u64 - 1, train.rows)
        } else {
            (0..train.rows as u32).collect()
        };
        backend.write_idx(&permutation, &mut order)?;
        backend.reset_stats(&mut train_stats)?;
        if let Some(values) = running.take() {
            backend.write_stats(&values, &mut train_stats)?;
        }
        let start_batch = if epoch == first_epoch { first_batch } else { 0 };
        progress.start_epoch(epoch, batches);
        progress.update(start_batch, None);
        let started = Instant::now();
        let mut nonfinite_batch = None;
        let mut interrupted = false;
        let mut done_in_epoch = start_batch;
        for b in start_batch..batches {
            let start = b * batch_size;
            let rows = batch_size.min(train.rows - start);
            backend.run(|| {
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
                )
            })?;
            step += 1;
            batches_run += 1;
            done_in_epoch = b + 1;
            if let Some(tracker) = diagnostics.as_mut() {
                tracker.after_batch(backend, &net, b, batches)?;
            }
            interrupted = control.should_stop(batches_run);
            let periodic = control
                .checkpoint_every
                .is_some_and(|n| n > 0 && step % n as u64 == 0 && b + 1 < batches);
            if (interrupted || periodic) && control.on_checkpoint.is_some() {
                let kind = if interrupted {
                    CheckpointKind::Interrupt
                } else {
                    CheckpointKind::Periodic
                };
                let state = TrainingState {
                    spec: spec.clone(),
                    optimizer: config.optimizer,
                    epochs_completed: epoch - 1,
                    batches_done: b + 1,
                    step,
                    running: Some(backend.read_stats(&train_stats)?.into()),
                    best_saved,
                    early_stopping: early.state(),
                    lr: lr_state.snapshot(),
                    history: history.epochs.clone(),
                    extra_columns: history.extra_columns.clone(),
                    extra_rows: history.extra_rows.clone(),
                    train_seconds: train_seconds + started.elapsed().as_secs_f64(),
                    diagnostics: diagnostics_accumulators(backend, diagnostics.as_ref())?,
                };
                send_checkpoint(backend, &net, &best, &last_good, state, kind, &mut control)?;
            }
            if interrupted {
                break;
            }
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
        if interrupted {
            progress.abandon();
            stop = StopReason::Interrupted {
                epochs_completed: epoch - 1,
                batches_done: done_in_epoch,
            };
            break;
        }
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
        if let Some(tracker) = diagnostics.as_mut() {
            let data = val_dev.as_ref().unwrap_or(&train_dev);
            let (x, rows, cols) = (&data.x, data.rows, data.cols);
            let row = tracker.end_epoch(
                backend,
                &mut net,
                x,
                rows,
                cols,
                &data.identity,
                &mut batch.x,
                epoch,
            )?;
            history.extra_rows.push(row);
        }
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
        if let Some(reduced) = lr_state.end_epoch(monitored, lr) {
            log::info!(
                "epoch {epoch}: {} has not improved for the plateau patience; the learning \
                 rate drops from {lr} to {reduced}",
                early.config().monitor
            );
        }
        if control.on_checkpoint.is_some() {
            let state = TrainingState {
                spec: spec.clone(),
                optimizer: config.optimizer,
                epochs_completed: epoch,
                batches_done: 0,
                step,
                running: None,
                best_saved,
                early_stopping: early.state(),
                lr: lr_state.snapshot(),
                history: history.epochs.clone(),
                extra_columns: history.extra_columns.clone(),
                extra_rows: history.extra_rows.clone(),
                train_seconds,
                diagnostics: diagnostics_accumulators(backend, diagnostics.as_ref())?,
            };
            let kind = CheckpointKind::EpochEnd {
                improved: decision == Decision::Improved,
            };
            send_checkpoint(backend, &net, &best, &last_good, state, kind, &mut control)?;
        }
        if let Some(record) = history.epochs.last() {
            progress.end_epoch(record, batches);
        }
        if decision == Decision::Stop {
            stop = StopReason::EarlyStopping {
                waited: early.wait(),
            };
            break 'epochs;
        }
        if epoch < config.epochs && control.should_stop(batches_run) {
            stop = StopReason::Interrupted {
                epochs_completed: epoch,
                batches_done: 0,
            };
            break 'epochs;
        }
    }

    let completed = history.epochs.len();
    let mut saved_epoch = completed;
    let mid_epoch =
        matches!(stop, StopReason::Interrupted { batches_done, .. } if batches_done > 0);
    if config.early_stopping.restore_best_weights && best_saved > 0 && best_saved != completed {
        net.restore_from(backend, &best)?;
        saved_epoch = best_saved;
    } else if mid_epoch {
        net.restore_from(backend, &last_good)?;
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
        diagnostics: diagnostics.map(Diagnostics::into_report),
    })
}

/// Checks that a checkpoint fits this fit's model, optimizer and batches.
fn check_resume(
    state: &TrainingState,
    spec: &ModelSpec,
    config: &FitConfig,
    batches: usize,
    history: &History,
) -> Result<()> {
    if state.spec != *spec {
        bail!("the checkpoint contains a different architecture than the one being trained");
    }
    if state.optimizer != config.optimizer {
        bail!(
            "the checkpoint was written with optimizer {}, and this fit uses {}",
            state.optimizer,
            config.optimizer
        );
    }
    let expected_steps = (state.epochs_completed * batches + state.batches_done) as u64;
    if state.batches_done > batches || state.step != expected_steps {
        bail!(
            "the checkpoint ran {} steps in {} epochs and {} batches, which does not fit \
             {batches} batches per epoch: the batch size or the training rows differ",
            state.step,
            state.epochs_completed,
            state.batches_done
        );
    }
    if state.history.len() != state.epochs_completed {
        bail!(
            "the checkpoint is inconsistent: {} epochs completed but {} history rows",
            state.epochs_completed,
            state.history.len()
        );
    }
    if state.extra_columns != history.extra_columns {
        bail!(
            "the checkpoint's history has the extra columns [{}], and this fit writes [{}]",
            state.extra_columns.join(", "),
            history.extra_columns.join(", ")
        );
    }
    let first_epoch = state.epochs_completed + 1;
    if config.epochs < first_epoch && state.batches_done > 0 {
        bail!(
            "the checkpoint stopped during epoch {first_epoch}; --epochs must be at least \
             {first_epoch} to finish it"
        );
    }
    if config.epochs <= state.epochs_completed && state.batches_done == 0 {
        bail!(
            "the run already completed {} epochs; pass --epochs above {} to train further",
            state.epochs_completed,
            state.epochs_completed
        );
    }
    Ok(())
}

fn diagnostics_accumulators<B: Backend>(
    backend: &B,
    tracker: Option<&Diagnostics<B>>,
) -> Result<Option<checkpoint::DiagnosticsAccumulators>> {
    let Some(tracker) = tracker else {
        return Ok(None);
    };
    let (sums, batches) = tracker.accumulators(backend)?;
    Ok(Some(checkpoint::DiagnosticsAccumulators { sums, batches }))
}

/// Downloads the weights and optimizer state and hands the checkpoint to the sink.
fn send_checkpoint<B: Backend>(
    backend: &B,
    net: &Network<B>,
    best: &Snapshot<B>,
    last_good: &Snapshot<B>,
    state: TrainingState,
    kind: CheckpointKind,
    control: &mut RunControl<'_>,
) -> Result<()> {
    let Some(sink) = control.on_checkpoint.as_mut() else {
        return Ok(());
    };
    let checkpoint = Checkpoint {
        state,
        params: net.params(backend)?,
        optimizer_state: net.optimizer_state(backend)?,
        best: net.snapshot_params(backend, best)?,
        last_epoch: net.snapshot_params(backend, last_good)?,
    };
    sink(&checkpoint, kind)
}

fn monitored_value(record: &EpochRecord, monitor: Monitor) -> f64 {
    match monitor {
        Monitor::Loss => record.loss,
        Monitor::Accuracy | Monitor::Mae => record.metric,
        Monitor::ValLoss => record.val_loss.unwrap_or(f64::NAN),
        Monitor::ValAccuracy | Monitor::ValMae => record.val_metric.unwrap_or(f64::NAN),
    }
}
