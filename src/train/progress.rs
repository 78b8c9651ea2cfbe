//! Progress display following Keras's `verbose` levels.
//!
//! 0 prints nothing, 1 shows a live bar per epoch (batches, ETA, running
//! loss and metric) and then the epoch's line, 2 prints only the epoch's line.
//! Progress goes to stdout; warnings and errors go through `log` to stderr.

use crate::train::history::EpochRecord;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::time::{Duration, Instant};

/// How often the live bar asks for fresh running metrics (each refresh reads
/// the device accumulators once).
const REFRESH: Duration = Duration::from_millis(150);

/// The per-epoch display.
pub struct Progress {
    verbose: u8,
    epochs: usize,
    metric_name: &'static str,
    bar: Option<ProgressBar>,
    last_refresh: Instant,
}

impl Progress {
    /// Creates the display for a fit of `epochs` epochs.
    pub fn new(verbose: u8, epochs: usize, metric_name: &'static str) -> Self {
        Self {
            verbose,
            epochs,
            metric_name,
            bar: None,
            last_refresh: Instant::now(),
        }
    }

    /// Starts the bar of `epoch` (counted from 1) with `batches` batches.
    pub fn start_epoch(&mut self, epoch: usize, batches: usize) {
        if self.verbose != 1 {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(batches as u64), ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template(
            "Epoch {prefix} {bar:24} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(format!("{epoch}/{}", self.epochs));
        self.bar = Some(bar);
        self.last_refresh = Instant::now();
    }

    /// Whether the bar wants fresh running metrics now.
    pub fn wants_refresh(&self) -> bool {
        self.bar
            .as_ref()
            .is_some_and(|b| !b.is_hidden() && self.last_refresh.elapsed() >= REFRESH)
    }

    /// Moves the bar to `done` batches, showing the running loss and metric when given.
    pub fn update(&mut self, done: usize, running: Option<(f64, f64)>) {
        let Some(bar) = &self.bar else {
            return;
        };
        bar.set_position(done as u64);
        if let Some((loss, metric)) = running {
            bar.set_message(format!(
                "loss: {loss:.4} - {}: {metric:.4}",
                self.metric_name
            ));
            self.last_refresh = Instant::now();
        }
    }

    /// Closes the epoch's bar and prints its line.
    pub fn end_epoch(&mut self, record: &EpochRecord, batches: usize) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        if self.verbose == 0 {
            return;
        }
        println!("{}", self.epoch_line(record, batches));
    }

    /// Abandons the epoch's bar (after an error or a non-finite loss).
    pub fn abandon(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }

    fn epoch_line(&self, r: &EpochRecord, batches: usize) -> String {
        let ms_per_step = 1000.0 * r.seconds / batches.max(1) as f64;
        let mut line = format!(
            "Epoch {}/{} - {batches} batch{} - {:.2}s - {ms_per_step:.2}ms/step - loss: {:.4} - {}: {:.4}",
            r.epoch,
            self.epochs,
            if batches == 1 { "" } else { "es" },
            r.seconds,
            r.loss,
            self.metric_name,
            r.metric
        );
        if let (Some(vl), Some(vm)) = (r.val_loss, r.val_metric) {
            line.push_str(&format!(
                " - val_loss: {vl:.4} - val_{}: {vm:.4}",
                self.metric_name
            ));
        }
        line.push_str(&format!(" - learning_rate: {}", r.learning_rate as f32));
        line
    }
}
