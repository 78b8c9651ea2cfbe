//! Early stopping and best-epoch tracking on a monitored quantity.
//!
//! Keras 3 semantics: an epoch improves only if it beats the best by more
//! than `min_delta` (a change of exactly `min_delta` does not count).
//! Training stops once `patience` epochs in a row have not improved, so it
//! ends `patience` epochs after the best one; patience 0 behaves like 1.
//! Epochs before `start_from_epoch` are neither a best nor counted.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A quantity the fit loop can watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Monitor {
    /// Training loss.
    Loss,
    /// Training accuracy.
    Accuracy,
    /// Training mean absolute error.
    Mae,
    /// Validation loss.
    ValLoss,
    /// Validation accuracy.
    ValAccuracy,
    /// Validation mean absolute error.
    ValMae,
}

impl Monitor {
    /// Every name, as in history.csv.
    pub const ALL: [Monitor; 6] = [
        Monitor::Loss,
        Monitor::Accuracy,
        Monitor::Mae,
        Monitor::ValLoss,
        Monitor::ValAccuracy,
        Monitor::ValMae,
    ];

    /// The history column name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Loss => "loss",
            Self::Accuracy => "accuracy",
            Self::Mae => "mae",
            Self::ValLoss => "val_loss",
            Self::ValAccuracy => "val_accuracy",
            Self::ValMae => "val_mae",
        }
    }

    /// Parses a history column name, checking that the run produces it.
    ///
    /// `available` lists the quantities this run records.
    pub fn parse(name: &str, available: &[Monitor]) -> Result<Self> {
        let names: Vec<&str> = available.iter().map(|m| m.name()).collect();
        let Some(monitor) = Self::ALL.iter().find(|m| m.name() == name) else {
            bail!(
                "invalid --monitor '{name}': this run records {}",
                names.join(", ")
            );
        };
        if !available.contains(monitor) {
            let why = if name.starts_with("val_") && !available.contains(&Monitor::ValLoss) {
                "validation is off (--validation-split 0)".to_string()
            } else if matches!(monitor, Monitor::Accuracy | Monitor::ValAccuracy) {
                "accuracy applies to classification, and this task is regression".to_string()
            } else {
                "mae applies to regression, and this task is classification".to_string()
            };
            bail!(
                "invalid --monitor '{name}': {why}; this run records {}",
                names.join(", ")
            );
        }
        Ok(*monitor)
    }

    /// Whether larger values are better (accuracy) in `auto` mode.
    pub fn higher_is_better(self) -> bool {
        matches!(self, Self::Accuracy | Self::ValAccuracy)
    }
}

impl fmt::Display for Monitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Direction of improvement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// From the monitored quantity: accuracy is maximised, losses and errors minimised.
    #[default]
    Auto,
    /// Smaller is better.
    Min,
    /// Larger is better.
    Max,
}

/// Settings of early stopping and best-weight tracking.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EarlyStoppingConfig {
    /// Watched quantity.
    pub monitor: Monitor,
    /// Direction.
    pub mode: Mode,
    /// Epochs without improvement before stopping; `None` never stops early.
    pub patience: Option<usize>,
    /// Minimum change that counts as an improvement (>= 0).
    pub min_delta: f64,
    /// Number of first epochs that are ignored.
    pub start_from_epoch: usize,
    /// Restore the best epoch's weights at the end of training.
    pub restore_best_weights: bool,
}

/// Decision of the tracker after one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The epoch is the new best.
    Improved,
    /// No improvement; keep training.
    Continue,
    /// No improvement for `patience` epochs: stop.
    Stop,
}

/// The counters of early stopping, kept in checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct EarlyStoppingState {
    /// Best monitored value so far.
    pub best: Option<f64>,
    /// Epoch (counted from 1) of the best value.
    pub best_epoch: Option<usize>,
    /// Epochs in a row without improvement.
    pub wait: usize,
}

/// State of early stopping over a fit.
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    config: EarlyStoppingConfig,
    maximize: bool,
    best: Option<f64>,
    best_epoch: Option<usize>,
    wait: usize,
}

impl EarlyStopping {
    /// Creates the tracker; a negative or non-finite `min_delta` is an error.
    pub fn new(config: EarlyStoppingConfig) -> Result<Self> {
        if !(config.min_delta >= 0.0 && config.min_delta.is_finite()) {
            bail!(
                "invalid --min-delta {}: expected a finite value of at least 0 \
                 (the direction comes from --monitor and --mode)",
                config.min_delta
            );
        }
        let maximize = match config.mode {
            Mode::Auto => config.monitor.higher_is_better(),
            Mode::Min => false,
            Mode::Max => true,
        };
        Ok(Self {
            config,
            maximize,
            best: None,
            best_epoch: None,
            wait: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &EarlyStoppingConfig {
        &self.config
    }

    /// Best value so far.
    pub fn best(&self) -> Option<f64> {
        self.best
    }

    /// Epoch (counted from 1) of the best value so far.
    pub fn best_epoch(&self) -> Option<usize> {
        self.best_epoch
    }

    /// Epochs in a row without improvement.
    pub fn wait(&self) -> usize {
        self.wait
    }

    /// Whether larger values are better.
    pub fn maximize(&self) -> bool {
        self.maximize
    }

    /// The counters, for a checkpoint.
    pub fn state(&self) -> EarlyStoppingState {
        EarlyStoppingState {
            best: self.best,
            best_epoch: self.best_epoch,
            wait: self.wait,
        }
    }

    /// Replaces the counters (resuming a checkpoint; the settings may differ,
    /// e.g. a new patience).
    pub fn restore(&mut self, state: EarlyStoppingState) {
        self.best = state.best;
        self.best_epoch = state.best_epoch;
        self.wait = state.wait;
    }

    /// Records the monitored `value` of `epoch` (counted from 1) and decides.
    pub fn update(&mut self, epoch: usize, value: f64) -> Decision {
        if epoch <= self.config.start_from_epoch {
            return Decision::Continue;
        }
        self.wait += 1;
        if self.is_improvement(value) {
            self.best = Some(value);
            self.best_epoch = Some(epoch);
            self.wait = 0;
            return Decision::Improved;
        }
        match self.config.patience {
            Some(patience) if self.wait >= patience.max(1) => Decision::Stop,
            _ => Decision::Continue,
        }
    }

    fn is_improvement(&self, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        let Some(best) = self.best else {
            return true;
        };
        let d = self.config.min_delta;
        if self.maximize {
            value - d > best
        } else {
            value + d < best
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(patience: Option<usize>) -> EarlyStoppingConfig {
        EarlyStoppingConfig {
            monitor: Monitor::ValLoss,
            mode: Mode::Auto,
            patience,
            min_delta: 0.0,
            start_from_epoch: 0,
            restore_best_weights: true,
        }
    }

    /// Returns the number of epochs run on a sequence of monitored values.
    fn epochs_run(es: &mut EarlyStopping, values: &[f64]) -> usize {
        for (i, &v) in values.iter().enumerate() {
            if es.update(i + 1, v) == Decision::Stop {
                return i + 1;
            }
        }
        values.len()
    }

    #[test]
    fn constant_loss_stops_patience_after_first() {
        let flat = [0.5; 20];
        for (patience, expected) in [(1, 2), (2, 3), (5, 6), (25, 20), (0, 2)] {
            let mut es = EarlyStopping::new(config(Some(patience))).unwrap();
            assert_eq!(epochs_run(&mut es, &flat), expected, "patience {patience}");
            assert_eq!(es.best_epoch(), Some(1));
        }
    }

    #[test]
    fn change_of_exactly_min_delta_is_no_improvement() {
        let mut cfg = config(Some(1));
        cfg.min_delta = 0.25;
        let mut es = EarlyStopping::new(cfg).unwrap();
        assert_eq!(es.update(1, 1.0), Decision::Improved);
        assert_eq!(es.update(2, 0.75), Decision::Stop);
        assert_eq!(es.best_epoch(), Some(1));
    }

    #[test]
    fn improvement_resets_the_count() {
        let mut es = EarlyStopping::new(config(Some(2))).unwrap();
        let values = [1.0, 1.1, 0.9, 1.0, 0.95, 0.99];
        assert_eq!(epochs_run(&mut es, &values), 5);
        assert_eq!(es.best_epoch(), Some(3));
    }

    #[test]
    fn accuracy_is_maximised_in_auto_mode() {
        let mut cfg = config(Some(1));
        cfg.monitor = Monitor::ValAccuracy;
        let mut es = EarlyStopping::new(cfg).unwrap();
        assert_eq!(es.update(1, 0.5), Decision::Improved);
        assert_eq!(es.update(2, 0.6), Decision::Improved);
        assert_eq!(es.update(3, 0.55), Decision::Stop);
        assert_eq!(es.best(), Some(0.6));
    }

    #[test]
    fn start_from_epoch_ignores_first_epochs() {
        let mut cfg = config(Some(1));
        cfg.start_from_epoch = 2;
        let mut es = EarlyStopping::new(cfg).unwrap();
        assert_eq!(es.update(1, 0.1), Decision::Continue);
        assert_eq!(es.update(2, 0.1), Decision::Continue);
        assert_eq!(es.update(3, 0.5), Decision::Improved);
        assert_eq!(es.update(4, 0.6), Decision::Stop);
        assert_eq!(es.best_epoch(), Some(3));
    }

    #[test]
    fn nan_never_improves() {
        let mut es = EarlyStopping::new(config(None)).unwrap();
        assert_eq!(es.update(1, f64::NAN), Decision::Continue);
        assert_eq!(es.best_epoch(), None);
        assert_eq!(es.update(2, 1.0), Decision::Improved);
    }

    #[test]
    fn negative_min_delta_is_rejected() {
        let mut cfg = config(Some(1));
        cfg.min_delta = -0.1;
        let err = EarlyStopping::new(cfg).unwrap_err().to_string();
        assert!(err.contains("--min-delta -0.1"), "{err}");
    }

    #[test]
    fn monitor_names_are_checked_against_the_run() {
        let classification = [Monitor::Loss, Monitor::Accuracy];
        let err = Monitor::parse("val_loss", &classification)
            .unwrap_err()
            .to_string();
        assert!(err.contains("validation is off"), "{err}");
        let err = Monitor::parse("mae", &classification)
            .unwrap_err()
            .to_string();
        assert!(err.contains("regression"), "{err}");
        let err = Monitor::parse("val_los", &classification)
            .unwrap_err()
            .to_string();
        assert!(err.contains("loss, accuracy"), "{err}");
        assert_eq!(
            Monitor::parse("accuracy", &classification).unwrap(),
            Monitor::Accuracy
        );
    }
}
