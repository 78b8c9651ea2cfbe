//! Per-epoch history, written as `history.csv`.

use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Metrics of one epoch, in the target's own units.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochRecord {
    /// Epoch, counted from 1.
    pub epoch: usize,
    /// Running mean of the training loss over the epoch's batches (plus the L2 penalty).
    pub loss: f64,
    /// Running training accuracy (classification) or mean absolute error (regression).
    pub metric: f64,
    /// Validation loss after the epoch, if there is validation data.
    pub val_loss: Option<f64>,
    /// Validation accuracy or mean absolute error after the epoch.
    pub val_metric: Option<f64>,
    /// Learning rate used in the epoch.
    pub learning_rate: f64,
    /// Wall time of the training pass, in seconds (not written to the CSV, so
    /// histories of identical runs compare equal byte for byte).
    pub seconds: f64,
}

/// The history of a fit.
#[derive(Clone, Debug, PartialEq)]
pub struct History {
    /// `accuracy` for classification, `mae` for regression.
    pub metric_name: &'static str,
    /// Whether validation columns are present.
    pub has_validation: bool,
    /// One record per completed epoch.
    pub epochs: Vec<EpochRecord>,
    /// Names of the columns written after `learning_rate` (training diagnostics).
    pub extra_columns: Vec<String>,
    /// Values of `extra_columns`, one row per epoch, aligned with `epochs`.
    pub extra_rows: Vec<Vec<f64>>,
}

impl History {
    /// Creates an empty history.
    pub fn new(metric_name: &'static str, has_validation: bool) -> Self {
        Self {
            metric_name,
            has_validation,
            epochs: Vec::new(),
            extra_columns: Vec::new(),
            extra_rows: Vec::new(),
        }
    }

    /// Column names, as Keras names them.
    pub fn columns(&self) -> Vec<String> {
        let mut cols = vec![
            "epoch".to_string(),
            "loss".to_string(),
            self.metric_name.to_string(),
        ];
        if self.has_validation {
            cols.push("val_loss".to_string());
            cols.push(format!("val_{}", self.metric_name));
        }
        cols.push("learning_rate".to_string());
        cols.extend(self.extra_columns.iter().cloned());
        cols
    }

    /// Formats the history as CSV (shortest round-trip decimal for every value).
    pub fn to_csv(&self) -> String {
        let mut out = self.columns().join(",");
        out.push('\n');
        for (index, r) in self.epochs.iter().enumerate() {
            let _ = write!(out, "{},{},{}", r.epoch, r.loss, r.metric);
            if self.has_validation {
                let _ = write!(
                    out,
                    ",{},{}",
                    r.val_loss.unwrap_or(f64::NAN),
                    r.val_metric.unwrap_or(f64::NAN)
                );
            }
            let _ = write!(out, ",{}", r.learning_rate as f32);
            if let Some(extra) = self.extra_rows.get(index) {
                for value in extra {
                    let _ = write!(out, ",{value}");
                }
            }
            out.push('\n');
        }
        out
    }

    /// Writes the CSV to `path`.
    pub fn write_csv(&self, path: &Path) -> Result<()> {
        crate::model::file::write_atomic(path, self.to_csv().as_bytes())
            .with_context(|| format!("failed to write the history to {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_keras_columns() {
        let mut h = History::new("accuracy", true);
        h.epochs.push(EpochRecord {
            epoch: 1,
            loss: 0.5,
            metric: 0.75,
            val_loss: Some(0.25),
            val_metric: Some(1.0),
            learning_rate: 0.001,
            seconds: 1.0,
        });
        assert_eq!(
            h.to_csv(),
            "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate\n1,0.5,0.75,0.25,1,0.001\n"
        );
    }

    #[test]
    fn csv_without_validation_omits_val_columns() {
        let h = History::new("mae", false);
        assert_eq!(h.to_csv(), "epoch,loss,mae,learning_rate\n");
    }
}
