//! Evaluation metrics computed on the host from predictions and targets:
//! the confusion matrix, per-class precision, recall and F1, ROC AUC for two
//! classes, and MAE, RMSE and R² for regression.
//!
//! Definitions follow scikit-learn. Precision or recall with an empty
//! denominator is 0 (its `zero_division` default). R² of a constant target is
//! 1 for a perfect fit and 0 otherwise (`force_finite=True`). ROC AUC is the
//! Mann-Whitney statistic with ties counted as one half.

use crate::backend::Backend;
use crate::data::{Dataset, Preprocessor};
use crate::model::{ModelSpec, Network, Params};
use crate::optim::{Optimizer, OptimizerConfig};
use crate::train::Units;
use anyhow::{Result, bail};
use serde::Serialize;

/// Scores of one class.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScores {
    /// Class name.
    pub name: String,
    /// Of the rows predicted as this class, the share that are.
    pub precision: f64,
    /// Of the rows of this class, the share predicted as it.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Rows of this class.
    pub support: usize,
}

/// Metrics of a classification evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassificationMetrics {
    /// Share of rows whose predicted class is the target.
    pub accuracy: f64,
    /// `confusion[t][p]`: rows of true class `t` predicted as class `p`.
    pub confusion: Vec<Vec<usize>>,
    /// Scores per class, in class index order.
    pub classes: Vec<ClassScores>,
    /// Unweighted mean of the per-class F1 scores.
    pub macro_f1: f64,
    /// Area under the ROC curve of the positive (second) class, for two
    /// classes with both present; `None` otherwise.
    pub roc_auc: Option<f64>,
}

/// Metrics of a regression evaluation, in the target's own units.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RegressionMetrics {
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Coefficient of determination.
    pub r2: f64,
}

/// Returns the predicted class of each row of `outputs` (`[rows, C]` softmax
/// probabilities, or `[rows]` positive-class probabilities when `C` is 1).
///
/// The first largest probability wins; one sigmoid output predicts class 1
/// when its probability is above 0.5, as the loss counts accuracy.
pub fn predicted_classes(outputs: &[f32], columns: usize) -> Vec<usize> {
    if columns == 1 {
        return outputs.iter().map(|&p| usize::from(p > 0.5)).collect();
    }
    outputs
        .chunks_exact(columns)
        .map(|row| {
            let mut best = 0;
            for (k, &p) in row.iter().enumerate() {
                if p > row[best] {
                    best = k;
                }
            }
            best
        })
        .collect()
}

/// Computes the classification metrics of `outputs` (see
/// [`predicted_classes`]) against class indices `targets`, for `names.len()` classes.
pub fn classification_metrics(
    outputs: &[f32],
    columns: usize,
    targets: &[f32],
    names: &[String],
) -> Result<ClassificationMetrics> {
    let classes = names.len();
    let rows = targets.len();
    if outputs.len() != rows * columns {
        bail!(
            "{} outputs do not match {rows} rows of {columns} columns",
            outputs.len()
        );
    }
    let predicted = predicted_classes(outputs, columns);
    let mut confusion = vec![vec![0usize; classes]; classes];
    for (&target, &p) in targets.iter().zip(&predicted) {
        let t = target as usize;
        if t >= classes || p >= classes {
            bail!("class index {t} or {p} is outside the {classes} classes");
        }
        confusion[t][p] += 1;
    }
    let correct: usize = (0..classes).map(|k| confusion[k][k]).sum();
    let scores: Vec<ClassScores> = (0..classes)
        .map(|k| {
            let tp = confusion[k][k] as f64;
            let predicted_k: usize = (0..classes).map(|t| confusion[t][k]).sum();
            let support: usize = confusion[k].iter().sum();
            let precision = ratio(tp, predicted_k as f64);
            let recall = ratio(tp, support as f64);
            ClassScores {
                name: names[k].clone(),
                precision,
                recall,
                f1: ratio(2.0 * precision * recall, precision + recall),
                support,
            }
        })
        .collect();
    let macro_f1 = scores.iter().map(|s| s.f1).sum::<f64>() / classes.max(1) as f64;
    let roc_auc = if classes == 2 {
        let positive: Vec<f32> = if columns == 1 {
            outputs.to_vec()
        } else {
            outputs.chunks_exact(columns).map(|row| row[1]).collect()
        };
        let labels: Vec<bool> = targets.iter().map(|&t| t == 1.0).collect();
        roc_auc(&positive, &labels)
    } else {
        None
    };
    Ok(ClassificationMetrics {
        accuracy: ratio(correct as f64, rows as f64),
        confusion,
        classes: scores,
        macro_f1,
        roc_auc,
    })
}

fn ratio(numerator: f64, denominator: f64) -> f64 {
    if denominator > 0.0 {
        numerator / denominator
    } else {
        0.0
    }
}

/// Returns the area under the ROC curve of `scores` for the rows marked in
/// `positive`, or `None` when either class has no row.
///
/// Equals the probability that a random positive row scores above a random
/// negative one, ties counting one half (average ranks, O(n log n)).
pub fn roc_auc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let positives = positive.iter().filter(|&&p| p).count();
    let negatives = positive.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start + 1 ..= end share their mean.
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        let tied_positives = order[start..end].iter().filter(|&&i| positive[i]).count();
        rank_sum += mean_rank * tied_positives as f64;
        start = end;
    }
    let p = positives as f64;
    let u = rank_sum - p * (p + 1.0) / 2.0;
    Some(u / (p * negatives as f64))
}

/// Computes MAE, RMSE and R² of `predictions` against `targets` (same units).
pub fn regression_metrics(predictions: &[f64], targets: &[f64]) -> Result<RegressionMetrics> {
    if predictions.len() != targets.len() || targets.is_empty() {
        bail!(
            "regression metrics need as many predictions as targets, at least one; got {} and {}",
            predictions.len(),
            targets.len()
        );
    }
    let n = targets.len() as f64;
    let mut abs = 0.0;
    let mut squares = 0.0;
    for (p, t) in predictions.iter().zip(targets) {
        abs += (p - t).abs();
        squares += (p - t).powi(2);
    }
    let mean = targets.iter().sum::<f64>() / n;
    let total: f64 = targets.iter().map(|t| (t - mean).powi(2)).sum();
    let r2 = if total > 0.0 {
        1.0 - squares / total
    } else if squares == 0.0 {
        1.0
    } else {
        0.0
    };
    Ok(RegressionMetrics {
        mae: abs / n,
        rmse: (squares / n).sqrt(),
        r2,
    })
}

/// Everything an evaluation reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    /// Rows scored.
    pub rows: usize,
    /// Mean loss in the target's units, computed as the fit computes `val_loss`.
    pub loss: f64,
    /// Classification metrics.
    pub classification: Option<ClassificationMetrics>,
    /// Regression metrics.
    pub regression: Option<RegressionMetrics>,
}

/// Scores `params` on `data`, which `preprocessor` encoded with its targets.
///
/// The loss runs on the device exactly as the fit's validation pass does,
/// over chunks of `batch_rows` rows, so scoring a run's own validation part
/// with the fit's chunk size ([`crate::train::batch_capacity`]) reproduces
/// its `val_loss` bit for bit. The metrics are computed on the host from the
/// predictions.
pub fn evaluate_model<B: Backend>(
    backend: &B,
    spec: &ModelSpec,
    params: &Params,
    preprocessor: &Preprocessor,
    data: &Dataset,
    batch_rows: usize,
) -> Result<Evaluation> {
    if data.y.len() != data.rows {
        bail!(
            "the data has no '{}' column, so there is nothing to score against; \
             use predict for data without targets",
            preprocessor.target_name
        );
    }
    if data.rows == 0 {
        bail!("the data has no rows to score");
    }
    // SGD without momentum keeps no optimizer state, so nothing extra is allocated.
    let optimizer = OptimizerConfig {
        optimizer: Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        lr: 0.0,
        l2: 0.0,
        weight_decay: 0.0,
        clipnorm: None,
    };
    let mut net = Network::new(backend, spec, params, &optimizer, batch_rows.max(1))?;
    let units = match preprocessor.target_mean_std() {
        Some((_, std)) => Units::regression(std),
        None => Units::IDENTITY,
    };
    let classification = preprocessor.class_names().is_some();
    let scores = crate::train::evaluate(backend, &mut net, data, classification, units)?;
    let outputs = crate::train::predict(backend, &mut net, data)?;
    let mut evaluation = Evaluation {
        rows: data.rows,
        loss: scores.loss,
        classification: None,
        regression: None,
    };
    match (preprocessor.class_names(), preprocessor.target_mean_std()) {
        (Some(names), _) => {
            evaluation.classification = Some(classification_metrics(
                &outputs,
                spec.outputs,
                &data.y,
                names,
            )?);
        }
        (None, Some((mean, std))) => {
            let unscale = |v: f32| f64::from(v) * std + mean;
            let predictions: Vec<f64> = outputs.iter().map(|&v| unscale(v)).collect();
            let targets: Vec<f64> = data.y.iter().map(|&v| unscale(v)).collect();
            evaluation.regression = Some(regression_metrics(&predictions, &targets)?);
        }
        (None, None) => bail!("the model's target has neither classes nor scaling"),
    }
    Ok(evaluation)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn confusion_and_per_class_scores() {
        // Targets a a a b b c; predictions a a b b c c.
        let outputs = [
            0.8, 0.1, 0.1, //
            0.6, 0.3, 0.1, //
            0.2, 0.7, 0.1, //
            0.1, 0.8, 0.1, //
            0.1, 0.2, 0.7, //
            0.0, 0.1, 0.9,
        ];
        let targets = [0.0, 0.0, 0.0, 1.0, 1.0, 2.0];
        let m = classification_metrics(&outputs, 3, &targets, &names(&["a", "b", "c"])).unwrap();
        assert_eq!(
            m.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        assert!((m.accuracy - 4.0 / 6.0).abs() < 1e-12);
        // a: precision 2/2, recall 2/3, F1 0.8. b: 1/2, 1/2, 0.5. c: 1/2, 1/1, 2/3.
        let a = &m.classes[0];
        assert_eq!((a.precision, a.support), (1.0, 3));
        assert!((a.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((a.f1 - 0.8).abs() < 1e-12);
        assert!((m.classes[1].f1 - 0.5).abs() < 1e-12);
        assert!((m.classes[2].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.macro_f1 - (0.8 + 0.5 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
        assert_eq!(m.roc_auc, None);
    }

    #[test]
    fn class_never_predicted_has_zero_precision() {
        let outputs = [0.9, 0.1, 0.8, 0.2];
        let m = classification_metrics(&outputs, 2, &[0.0, 1.0], &names(&["x", "y"])).unwrap();
        assert_eq!(m.classes[1].precision, 0.0);
        assert_eq!(m.classes[1].recall, 0.0);
        assert_eq!(m.classes[1].f1, 0.0);
    }

    #[test]
    fn sigmoid_output_predicts_above_one_half() {
        assert_eq!(predicted_classes(&[0.2, 0.5, 0.51], 1), [0, 0, 1]);
    }

    #[test]
    fn roc_auc_matches_hand_count() {
        // Positives score 0.9, 0.4, 0.35; negatives 0.8, 0.35, 0.1. Pairs where the
        // positive scores higher: 0.9 beats 3, 0.4 beats 2, 0.35 beats 1 and ties 1:
        // (3 + 2 + 1 + 0.5) / 9.
        let scores = [0.9, 0.8, 0.4, 0.35, 0.35, 0.1];
        let positive = [true, false, true, true, false, false];
        let auc = roc_auc(&scores, &positive).unwrap();
        assert!((auc - 6.5 / 9.0).abs() < 1e-12, "{auc}");
    }

    #[test]
    fn roc_auc_needs_both_classes() {
        assert_eq!(roc_auc(&[0.1, 0.2], &[true, true]), None);
    }

    #[test]
    fn binary_metrics_include_roc_auc() {
        let outputs = [0.9, 0.3, 0.6, 0.2];
        let targets = [1.0, 1.0, 0.0, 0.0];
        let m = classification_metrics(&outputs, 1, &targets, &names(&["no", "yes"])).unwrap();
        // Positive 0.9 beats both negatives, 0.3 beats 0.2 only: 3 / 4.
        assert_eq!(m.roc_auc, Some(0.75));
        assert_eq!(m.confusion, vec![vec![1, 1], vec![1, 1]]);
    }

    #[test]
    fn regression_metrics_match_hand_values() {
        let predictions = [2.0, 4.0, 7.0];
        let targets = [1.0, 5.0, 7.0];
        let m = regression_metrics(&predictions, &targets).unwrap();
        // Errors 1, -1, 0: MAE 2/3, RMSE sqrt(2/3). The squared deviations from the
        // mean 13/3 sum to (100 + 4 + 64) / 9 = 56/3.
        assert!((m.mae - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.rmse - (2.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!(
            (m.r2 - (1.0 - 2.0 / (56.0 / 3.0))).abs() < 1e-12,
            "{}",
            m.r2
        );
    }

    #[test]
    fn r2_of_constant_target() {
        let exact = regression_metrics(&[3.0, 3.0], &[3.0, 3.0]).unwrap();
        assert_eq!(exact.r2, 1.0);
        let off = regression_metrics(&[2.0, 3.0], &[3.0, 3.0]).unwrap();
        assert_eq!(off.r2, 0.0);
    }
}
