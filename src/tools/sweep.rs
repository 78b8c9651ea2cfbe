//! Capacity sweep: train several architectures and optimizer settings on the
//! same split with the same seed, then compare their validation curves.
//!
//! Each row gets a verdict from these rules, checked in this order:
//! - overfitting: the last epoch's validation loss is more than
//!   [`OVERFIT_RISE`] above the row's best validation loss while its training
//!   loss is below its validation loss (validation turned up while training
//!   kept improving);
//! - a row whose best validation loss is more than [`UNDERFIT_MARGIN`] above
//!   the best of the whole sweep does measurably worse than another setting.
//!   It is underfitting if its last training loss is also above that best,
//!   because it cannot even fit the training data that well. Otherwise it is
//!   overfitting: it fits the training data but generalises worse;
//! - good: otherwise.

use crate::backend::Backend;
use crate::data::Dataset;
use crate::model::{Activation, Init, ModelSpec, init};
use crate::optim::OptimizerConfig;
use crate::tools::plot::{Figure, LineStyle, Panel, Series};
use crate::train::{self, FitConfig, History, StopReason, Units};
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::time::Instant;

/// Relative rise of the final validation loss above the best that marks overfitting.
pub const OVERFIT_RISE: f64 = 0.10;
/// Relative margin above the sweep's best validation loss that marks underfitting.
pub const UNDERFIT_MARGIN: f64 = 0.25;

/// One combination to train.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepCase {
    /// Hidden layer sizes.
    pub hidden: Vec<usize>,
    /// Hidden activation.
    pub activation: Activation,
    /// Hidden initialiser.
    pub init: Init,
    /// Optimizer with its learning rate.
    pub optimizer: OptimizerConfig,
}

impl SweepCase {
    /// Describes the case, e.g. `64,64 relu adam lr 0.001`.
    pub fn label(&self) -> String {
        let layers = if self.hidden.is_empty() {
            "linear".to_string()
        } else {
            self.hidden
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "{layers} {} {} lr {}",
            self.activation,
            self.optimizer.optimizer.name(),
            self.optimizer.lr
        )
    }
}

/// Verdict on one row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Clearly worse than the best of the sweep without overfitting.
    Underfitting,
    /// Neither underfitting nor overfitting.
    Good,
    /// Validation loss turned up while training loss stayed lower.
    Overfitting,
    /// No epoch produced a finite validation loss.
    Diverged,
}

impl Verdict {
    /// Returns the verdict as printed.
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Underfitting => "underfitting",
            Verdict::Good => "good",
            Verdict::Overfitting => "overfitting",
            Verdict::Diverged => "diverged",
        }
    }
}

/// Result of one case.
#[derive(Clone, Debug)]
pub struct SweepRow {
    /// The trained combination.
    pub case: SweepCase,
    /// Trainable parameters.
    pub parameters: usize,
    /// Epoch (from 1) with the lowest validation loss.
    pub best_epoch: Option<usize>,
    /// Lowest validation loss (NaN when no epoch completed).
    pub best_val_loss: f64,
    /// Validation metric at that epoch.
    pub best_val_metric: f64,
    /// Validation loss minus training loss at the last epoch run.
    pub final_gap: f64,
    /// Training time in seconds.
    pub seconds: f64,
    /// Verdict from the rules in the module documentation.
    pub verdict: Verdict,
    /// The per-epoch history.
    pub history: History,
    /// Reason training ended.
    pub stop: StopReason,
}

/// Returns the verdict of a row given the best validation loss of the sweep.
pub fn verdict(history: &History, best_val_loss: f64, sweep_best: f64) -> Verdict {
    let Some(last) = history.epochs.last() else {
        return Verdict::Diverged;
    };
    if !best_val_loss.is_finite() {
        return Verdict::Diverged;
    }
    let final_val = last.val_loss.unwrap_or(f64::NAN);
    if final_val > best_val_loss * (1.0 + OVERFIT_RISE) && last.loss < final_val {
        return Verdict::Overfitting;
    }
    if best_val_loss > sweep_best * (1.0 + UNDERFIT_MARGIN) {
        return if last.loss > sweep_best {
            Verdict::Underfitting
        } else {
            Verdict::Overfitting
        };
    }
    Verdict::Good
}

/// Trains every case on the same data, seed and fit settings (each with its
/// own optimizer), and returns one row per case with its verdict.
///
/// `base` gives the inputs, outputs, loss and dropout; each case replaces the
/// hidden layers, activation and initialiser. Every case starts from weights
/// drawn with `fit.seed`.
#[allow(clippy::too_many_arguments)]
pub fn run_sweep<B: Backend>(
    backend: &B,
    base: &ModelSpec,
    cases: &[SweepCase],
    train: &Dataset,
    validation: &Dataset,
    units: Units,
    fit: &FitConfig,
    mut on_row: impl FnMut(usize, &SweepRow),
) -> Result<Vec<SweepRow>> {
    if cases.is_empty() {
        bail!("the sweep has no case to train");
    }
    let mut rows = Vec::with_capacity(cases.len());
    for (index, case) in cases.iter().enumerate() {
        let spec = ModelSpec {
            hidden: case.hidden.clone(),
            activation: case.activation,
            init: case.init,
            ..base.clone()
        };
        spec.validate()?;
        let config = FitConfig {
            optimizer: case.optimizer,
            ..fit.clone()
        };
        let initial = init::init_params(&spec, fit.seed);
        let started = Instant::now();
        let result = train::fit(
            backend,
            &spec,
            &initial,
            train,
            Some(validation),
            units,
            &config,
        )?;
        let seconds = started.elapsed().as_secs_f64();
        let best = result
            .history
            .epochs
            .iter()
            .filter(|e| e.val_loss.is_some_and(f64::is_finite))
            .min_by(|a, b| a.val_loss.unwrap().total_cmp(&b.val_loss.unwrap()));
        let final_gap = result
            .history
            .epochs
            .last()
            .map_or(f64::NAN, |e| e.val_loss.unwrap_or(f64::NAN) - e.loss);
        let row = SweepRow {
            case: case.clone(),
            parameters: spec.parameter_count(),
            best_epoch: best.map(|e| e.epoch),
            best_val_loss: best.and_then(|e| e.val_loss).unwrap_or(f64::NAN),
            best_val_metric: best.and_then(|e| e.val_metric).unwrap_or(f64::NAN),
            final_gap,
            seconds,
            verdict: Verdict::Good,
            history: result.history,
            stop: result.stop,
        };
        on_row(index, &row);
        rows.push(row);
    }
    let sweep_best = rows
        .iter()
        .map(|r| r.best_val_loss)
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    for row in &mut rows {
        row.verdict = verdict(&row.history, row.best_val_loss, sweep_best);
    }
    Ok(rows)
}

/// Formats the rows as an aligned table for the terminal.
pub fn table(rows: &[SweepRow], metric_name: &str) -> String {
    let label_width = rows
        .iter()
        .map(|r| r.case.label().len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<label_width$}  {:>10}  {:>9}  {:>12}  {:>5}  {:>9}  {:>7}  verdict",
        "model",
        "parameters",
        "best loss",
        format!("best {metric_name}"),
        "epoch",
        "final gap",
        "time s"
    );
    for r in rows {
        let epoch = r.best_epoch.map_or("-".to_string(), |e| e.to_string());
        let _ = write!(
            out,
            "\n{:<label_width$}  {:>10}  {:>9.4}  {:>12.4}  {:>5}  {:>9.4}  {:>7.2}  {}",
            r.case.label(),
            crate::train::summary::thousands(r.parameters),
            r.best_val_loss,
            r.best_val_metric,
            epoch,
            r.final_gap,
            r.seconds,
            r.verdict.name()
        );
    }
    out
}

/// Formats the rows as CSV.
pub fn to_csv(rows: &[SweepRow], metric_name: &str) -> String {
    let mut out = format!(
        "layers,activation,optimizer,learning_rate,parameters,best_epoch,best_val_loss,\
         best_val_{metric_name},final_gap,seconds,verdict\n"
    );
    for r in rows {
        let layers: Vec<String> = r.case.hidden.iter().map(usize::to_string).collect();
        let _ = writeln!(
            out,
            "\"{}\",{},{},{},{},{},{},{},{},{:.3},{}",
            layers.join(","),
            r.case.activation,
            r.case.optimizer.optimizer.name(),
            r.case.optimizer.lr,
            r.parameters,
            r.best_epoch.map_or(String::new(), |e| e.to_string()),
            r.best_val_loss,
            r.best_val_metric,
            r.final_gap,
            r.seconds,
            r.verdict.name()
        );
    }
    out
}

/// Draws every case's validation loss per epoch, and the best validation loss
/// against the parameter count.
pub fn figure(rows: &[SweepRow], loss_unit: &str) -> Figure {
    let curves = rows
        .iter()
        .enumerate()
        .map(|(i, r)| Series {
            name: r.case.label(),
            points: r
                .history
                .epochs
                .iter()
                .map(|e| (e.epoch as f64, e.val_loss.unwrap_or(f64::NAN)))
                .collect(),
            color: i,
            style: LineStyle::Solid,
        })
        .collect();
    let points = rows.iter().enumerate().map(|(i, r)| Series {
        name: format!(
            "{} ({} parameters)",
            r.case.label(),
            crate::train::summary::thousands(r.parameters)
        ),
        points: vec![(r.parameters as f64, r.best_val_loss)],
        color: i,
        style: LineStyle::Points,
    });
    // No line joins the points: rows differ in activation and optimizer too, so a line
    // through them would suggest a trend in size alone.
    let capacity_series: Vec<Series> = points.collect();
    Figure {
        title: "Capacity sweep".to_string(),
        panels: vec![
            Panel {
                title: "Validation loss per epoch".to_string(),
                x_label: "epoch".to_string(),
                x_whole: true,
                y_label: format!("validation loss ({loss_unit})"),
                series: curves,
                ..Panel::default()
            },
            Panel {
                title: "Best validation loss against size".to_string(),
                x_label: "trainable parameters (log scale)".to_string(),
                y_label: format!("best validation loss ({loss_unit})"),
                x_log: true,
                series: capacity_series,
                ..Panel::default()
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::EpochRecord;

    fn history(pairs: &[(f64, f64)]) -> History {
        let mut h = History::new("accuracy", true);
        for (i, &(loss, val)) in pairs.iter().enumerate() {
            h.epochs.push(EpochRecord {
                epoch: i + 1,
                loss,
                metric: 0.0,
                val_loss: Some(val),
                val_metric: Some(0.0),
                learning_rate: 0.001,
                seconds: 0.0,
            });
        }
        h
    }

    #[test]
    fn verdict_overfitting_when_validation_turns_up() {
        let h = history(&[(1.0, 1.0), (0.5, 0.6), (0.3, 0.65), (0.1, 0.7)]);
        // 0.7 is 16.7% above the best 0.6, and training loss 0.1 is below it.
        assert_eq!(verdict(&h, 0.6, 0.6), Verdict::Overfitting);
    }

    #[test]
    fn verdict_underfitting_when_far_from_best() {
        let h = history(&[(1.0, 1.0), (0.9, 0.9), (0.85, 0.86)]);
        assert_eq!(verdict(&h, 0.86, 0.6), Verdict::Underfitting);
        // 0.74 is within 25% of 0.6.
        let h = history(&[(1.0, 1.0), (0.75, 0.74)]);
        assert_eq!(verdict(&h, 0.74, 0.6), Verdict::Good);
    }

    #[test]
    fn verdict_overfitting_when_worse_but_fits_training() {
        // Far above the sweep's best 0.6, but the training loss 0.2 is below it.
        let h = history(&[(1.0, 1.0), (0.5, 0.9), (0.2, 0.86)]);
        assert_eq!(verdict(&h, 0.86, 0.6), Verdict::Overfitting);
    }

    #[test]
    fn verdict_small_rise_is_good() {
        let h = history(&[(1.0, 1.0), (0.5, 0.6), (0.4, 0.65)]);
        // 0.65 is 8.3% above 0.6: below the 10% rise.
        assert_eq!(verdict(&h, 0.6, 0.6), Verdict::Good);
    }

    #[test]
    fn verdict_without_epochs_is_diverged() {
        let h = History::new("accuracy", true);
        assert_eq!(verdict(&h, f64::NAN, 0.5), Verdict::Diverged);
    }
}
