//! K-fold cross-validation.
//!
//! The rows are assigned to K folds ([`kfold_indices`]: stratified for
//! classification, plain for regression, shuffled with the seed unless
//! shuffling is off). For each fold, the other K-1 folds form its training
//! part; early stopping watches a validation part carved from that training
//! part by the `--validation-split` rule, and the held-out fold is scored
//! once, at the end, by the weights that training kept. Numeric feature
//! scaling is refitted on each fold's training rows (without its validation
//! part), as a scikit-learn pipeline inside `cross_validate` would do.

use crate::backend::{Backend, LossKind};
use crate::data::preprocess::{FeatureTransform, Preprocessor};
use crate::data::split::{self, SplitRule};
use crate::data::{Dataset, Scale, SplitConfig, kfold_indices, split_indices};
use crate::model::{ModelSpec, Network, init};
use crate::tools::plot::{Figure, LineStyle, Marker, Panel, Series};
use crate::train::{self, FitConfig, History, Scores, StopReason, Units};
use anyhow::{Result, bail};
use std::fmt::Write as _;
use std::time::Instant;

/// Settings of a cross-validation run.
#[derive(Clone, Debug, PartialEq)]
pub struct CvConfig {
    /// Number of folds K (>= 2).
    pub folds: usize,
    /// Shuffle rows before assigning folds.
    pub shuffle: bool,
    /// Seed of the fold assignment.
    pub seed: u64,
    /// Split of each fold's training part for early stopping (fraction 0: no validation).
    pub inner_split: SplitConfig,
    /// Feature scaling to refit per fold (the preprocessor's setting).
    pub scale: Scale,
}

/// Result of one fold.
#[derive(Clone, Debug)]
pub struct FoldResult {
    /// Fold number, from 1.
    pub fold: usize,
    /// Rows trained on.
    pub train_rows: usize,
    /// Rows of the early-stopping validation part.
    pub validation_rows: usize,
    /// Rows of the held-out fold.
    pub held_out_rows: usize,
    /// Held-out loss and metric.
    pub scores: Scores,
    /// Epoch whose weights were scored (0: the initial weights).
    pub saved_epoch: usize,
    /// Wall time of the fold (training and scoring), in seconds.
    pub seconds: f64,
    /// The fold's history.
    pub history: History,
    /// Reason the fold's training ended.
    pub stop: StopReason,
}

/// Checks that K is at least 2, which needs no data.
pub fn check_fold_count(folds: usize) -> Result<()> {
    if folds < 2 {
        bail!("invalid --folds {folds}: cross-validation needs at least 2 folds");
    }
    Ok(())
}

/// Checks K against the data: at least 2, at most the number of rows, and no
/// class with fewer members than K (naming the class).
pub fn check_folds(
    rows: usize,
    folds: usize,
    labels: Option<&[u32]>,
    class_names: Option<&[String]>,
) -> Result<()> {
    check_fold_count(folds)?;
    if folds > rows {
        bail!("invalid --folds {folds}: the data has only {rows} rows, one per fold at least");
    }
    if let (Some(labels), Some(names)) = (labels, class_names) {
        let mut counts = vec![0usize; names.len()];
        for &label in labels {
            counts[label as usize] += 1;
        }
        let small: Vec<String> = names
            .iter()
            .zip(&counts)
            .filter(|&(_, &c)| c < folds)
            .map(|(name, c)| format!("{name} ({c})"))
            .collect();
        if !small.is_empty() {
            bail!(
                "invalid --folds {folds}: stratified folds need at least {folds} rows of each \
                 class, and {} {} fewer; use --folds {} or fewer",
                if small.len() == 1 { "class" } else { "classes" },
                if small.len() == 1 {
                    format!("{} has", small[0])
                } else {
                    format!("{} have", small.join(", "))
                },
                counts.iter().copied().min().unwrap_or(2).max(2)
            );
        }
    }
    Ok(())
}

/// Encoded column indices of the numeric features of CSV data.
fn numeric_columns(preprocessor: &Preprocessor) -> Vec<usize> {
    let mut columns = Vec::new();
    let mut next = 0;
    for feature in &preprocessor.features {
        match feature {
            FeatureTransform::Numeric { .. } => {
                columns.push(next);
                next += 1;
            }
            FeatureTransform::OneHot { categories, .. } => next += categories.len(),
            FeatureTransform::Image { height, width, .. } => next += height * width,
        }
    }
    columns
}

/// Refits the scaling of `columns` on `fit_on` and applies it to every part.
// NOTE: `--fill-missing mean` values and the regression target's standardisation
// stay fitted on all rows; only the feature scaling is refitted per fold.
///
/// The data is already scaled by an affine map fitted on all rows, and a
/// second affine fit on the fold's rows composes with it into exactly the fit
/// on the fold's raw values (up to float rounding).
fn refit_scaling(scale: Scale, columns: &[usize], fit_on: &Dataset, parts: &mut [&mut Dataset]) {
    if scale == Scale::None || fit_on.rows == 0 {
        return;
    }
    let cols = fit_on.cols;
    for &c in columns {
        let values = || (0..fit_on.rows).map(|r| f64::from(fit_on.x[r * cols + c]));
        let (shift, factor) = match scale {
            Scale::Standard => {
                let n = fit_on.rows as f64;
                let mean = values().sum::<f64>() / n;
                let var = values().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
                let std = var.sqrt();
                (mean, if std > 1e-12 { 1.0 / std } else { 1.0 })
            }
            Scale::MinMax => {
                let min = values().fold(f64::INFINITY, f64::min);
                let max = values().fold(f64::NEG_INFINITY, f64::max);
                let range = max - min;
                (min, if range > 1e-12 { 1.0 / range } else { 1.0 })
            }
            Scale::None => (0.0, 1.0),
        };
        for part in parts.iter_mut() {
            for r in 0..part.rows {
                let v = &mut part.x[r * cols + c];
                *v = ((f64::from(*v) - shift) * factor) as f32;
            }
        }
    }
}

/// Runs K-fold cross-validation of `spec` on every row of `data`.
///
/// `labels` (class indices) make the folds stratified. `preprocessor` lists
/// the feature columns, so the scaling of the numeric ones is refitted per
/// fold. When
/// `fit.class_weights` is set, balanced weights are recomputed from each
/// fold's training part. `on_fold` is called after each fold.
#[allow(clippy::too_many_arguments)]
pub fn cross_validate<B: Backend>(
    backend: &B,
    spec: &ModelSpec,
    data: &Dataset,
    labels: Option<&[u32]>,
    preprocessor: &Preprocessor,
    config: &CvConfig,
    fit: &FitConfig,
    units: Units,
    mut on_fold: impl FnMut(&FoldResult),
) -> Result<Vec<FoldResult>> {
    check_folds(data.rows, config.folds, labels, preprocessor.class_names())?;
    let folds = kfold_indices(data.rows, config.folds, labels, config.shuffle, config.seed)?;
    let classification = spec.loss != LossKind::MeanSquaredError;
    let numeric = numeric_columns(preprocessor);
    let initial = init::init_params(spec, fit.seed);
    let mut results = Vec::with_capacity(folds.len());
    let mut skewed: Vec<(usize, String)> = Vec::new();
    for (index, (train_rows, held_out_rows)) in folds.iter().enumerate() {
        let started = Instant::now();
        let fold_labels: Option<Vec<u32>> =
            labels.map(|l| train_rows.iter().map(|&r| l[r]).collect());
        let (inner_train, inner_validation) = split_indices(
            train_rows.len(),
            fold_labels.as_deref(),
            &config.inner_split,
        )?;
        if let Some(warning) = inner_split_warning(
            fold_labels.as_deref(),
            preprocessor.class_names(),
            (&inner_train, &inner_validation),
            config.inner_split.rule,
        ) {
            skewed.push((index + 1, warning));
        }
        let pick = |rows: &[usize]| -> Vec<usize> { rows.iter().map(|&r| train_rows[r]).collect() };
        let mut train = data.select(&pick(&inner_train));
        let mut validation =
            (!inner_validation.is_empty()).then(|| data.select(&pick(&inner_validation)));
        let mut held_out = data.select(held_out_rows);
        let fit_on = train.clone();
        {
            let mut parts: Vec<&mut Dataset> = vec![&mut train, &mut held_out];
            if let Some(v) = validation.as_mut() {
                parts.push(v);
            }
            refit_scaling(config.scale, &numeric, &fit_on, &mut parts);
        }
        let mut fold_fit = fit.clone();
        if fit.class_weights.is_some() {
            let classes = preprocessor.class_names().map_or(0, <[String]>::len);
            fold_fit.class_weights = Some(crate::data::balanced_class_weights(&train, classes));
        }
        let train_rows = train.rows;
        let result = train::fit(
            backend,
            spec,
            &initial,
            train,
            validation.as_ref(),
            units,
            &fold_fit,
        )?;
        let max_rows = held_out.rows.clamp(1, 1024);
        let mut net = Network::new(backend, spec, &result.params, &fit.optimizer, max_rows)?;
        let scores = train::evaluate(backend, &mut net, &held_out, classification, units)?;
        let fold = FoldResult {
            fold: index + 1,
            train_rows,
            validation_rows: validation.as_ref().map_or(0, |v| v.rows),
            held_out_rows: held_out.rows,
            scores,
            saved_epoch: result.saved_epoch,
            seconds: started.elapsed().as_secs_f64(),
            history: result.history,
            stop: result.stop,
        };
        on_fold(&fold);
        results.push(fold);
    }
    if let Some((_, first)) = skewed.first() {
        let listed: Vec<String> = skewed.iter().map(|(fold, _)| fold.to_string()).collect();
        log::warn!(
            "the early-stopping validation part of fold {} is off: {first}",
            listed.join(", ")
        );
    }
    Ok(results)
}

/// Describes a class make-up problem of a fold's early-stopping split, as
/// `train` does for its own split.
fn inner_split_warning(
    labels: Option<&[u32]>,
    names: Option<&[String]>,
    (train, validation): (&[usize], &[usize]),
    rule: SplitRule,
) -> Option<String> {
    let (labels, names) = (labels?, names?);
    if validation.is_empty() {
        return None;
    }
    let train_counts = split::class_counts(labels, train, names.len());
    let validation_counts = split::class_counts(labels, validation, names.len());
    split::class_balance_warning(names, &train_counts, &validation_counts, Some(rule))
}

/// Returns the mean and the population standard deviation (NumPy's default
/// `std`, `ddof=0`) of `values`.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Formats the per-fold table and the mean ± standard deviation of each metric.
pub fn table(folds: &[FoldResult], metric_name: &str) -> String {
    let mut out = format!(
        "{:>4}  {:>6}  {:>10}  {:>8}  {:>9}  {:>10}  {:>6}  {:>7}",
        "fold", "train", "validation", "held out", "loss", metric_name, "epoch", "time s"
    );
    for f in folds {
        let _ = write!(
            out,
            "\n{:>4}  {:>6}  {:>10}  {:>8}  {:>9.4}  {:>10.4}  {:>6}  {:>7.2}",
            f.fold,
            f.train_rows,
            f.validation_rows,
            f.held_out_rows,
            f.scores.loss,
            f.scores.metric,
            f.saved_epoch,
            f.seconds
        );
    }
    let losses: Vec<f64> = folds.iter().map(|f| f.scores.loss).collect();
    let metrics: Vec<f64> = folds.iter().map(|f| f.scores.metric).collect();
    let (loss_mean, loss_std) = mean_std(&losses);
    let (metric_mean, metric_std) = mean_std(&metrics);
    let _ = write!(
        out,
        "\nheld-out loss: {loss_mean:.4} ± {loss_std:.4}\nheld-out {metric_name}: \
         {metric_mean:.4} ± {metric_std:.4}\n(mean ± population standard deviation over {} \
         folds)",
        folds.len()
    );
    out
}

/// Formats the per-fold results as CSV.
pub fn to_csv(folds: &[FoldResult], metric_name: &str) -> String {
    let mut out = format!(
        "fold,train_rows,validation_rows,held_out_rows,loss,{metric_name},saved_epoch,seconds\n"
    );
    for f in folds {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{:.3}",
            f.fold,
            f.train_rows,
            f.validation_rows,
            f.held_out_rows,
            f.scores.loss,
            f.scores.metric,
            f.saved_epoch,
            f.seconds
        );
    }
    out
}

/// Draws each fold's early-stopping curve and the held-out scores per fold.
pub fn figure(folds: &[FoldResult], metric_name: &str, loss_unit: &str) -> Figure {
    let has_validation = folds.iter().any(|f| f.validation_rows > 0);
    let curves = folds
        .iter()
        .map(|f| Series {
            name: format!("fold {}", f.fold),
            points: f
                .history
                .epochs
                .iter()
                .map(|e| {
                    let y = if has_validation {
                        e.val_loss.unwrap_or(f64::NAN)
                    } else {
                        e.loss
                    };
                    (e.epoch as f64, y)
                })
                .collect(),
            color: f.fold - 1,
            style: LineStyle::Solid,
        })
        .collect();
    let metrics: Vec<f64> = folds.iter().map(|f| f.scores.metric).collect();
    let (mean, _) = mean_std(&metrics);
    let scores = folds
        .iter()
        .map(|f| Series {
            name: String::new(),
            points: vec![(f.fold as f64, f.scores.metric)],
            color: f.fold - 1,
            style: LineStyle::Points,
        })
        .chain(std::iter::once(Series {
            name: format!("mean {mean:.4}"),
            points: vec![(1.0, mean), (folds.len() as f64, mean)],
            color: 7,
            style: LineStyle::Dashed,
        }))
        .collect();
    let curve_name = if has_validation {
        "validation loss"
    } else {
        "training loss"
    };
    Figure {
        title: format!("{}-fold cross-validation", folds.len()),
        panels: vec![
            Panel {
                title: format!("Early-stopping {curve_name} per fold"),
                x_label: "epoch".to_string(),
                x_whole: true,
                y_label: format!("{curve_name} ({loss_unit})"),
                series: curves,
                ..Panel::default()
            },
            Panel {
                title: format!("Held-out {metric_name} per fold"),
                x_label: "fold".to_string(),
                x_whole: true,
                y_label: format!("held-out {metric_name}"),
                series: scores,
                markers: Vec::<Marker>::new(),
                ..Panel::default()
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_folds_names_small_class() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let labels = [0, 0, 0, 0, 0, 1, 1];
        let message = check_folds(7, 3, Some(&labels), Some(&names))
            .unwrap_err()
            .to_string();
        assert!(message.contains("b (2)"), "{message}");
        assert!(message.contains("--folds 2"), "{message}");
        assert!(check_folds(7, 2, Some(&labels), Some(&names)).is_ok());
    }

    #[test]
    fn check_folds_rejects_k_out_of_range() {
        assert!(
            check_folds(10, 1, None, None)
                .unwrap_err()
                .to_string()
                .contains("at least 2")
        );
        assert!(
            check_folds(3, 4, None, None)
                .unwrap_err()
                .to_string()
                .contains("only 3 rows")
        );
    }

    #[test]
    fn mean_std_is_population() {
        let (mean, std) = mean_std(&[1.0, 3.0]);
        assert_eq!(mean, 2.0);
        assert_eq!(std, 1.0);
    }

    #[test]
    fn refit_scaling_standardises_fold() {
        let fit_on = Dataset {
            x: vec![1.0, 10.0, 3.0, 10.0],
            y: vec![0.0, 1.0],
            rows: 2,
            cols: 2,
        };
        let mut train = fit_on.clone();
        let mut other = Dataset {
            x: vec![5.0, 7.0],
            y: vec![0.0],
            rows: 1,
            cols: 2,
        };
        refit_scaling(
            Scale::Standard,
            &[0],
            &fit_on,
            &mut [&mut train, &mut other],
        );
        assert_eq!(&train.x, &[-1.0, 10.0, 1.0, 10.0]);
        // Column 1 is not listed, so it keeps its values.
        assert_eq!(&other.x, &[3.0, 7.0]);
    }
}
