//! The learning-rate finder rules, fold construction, diagnostics warnings,
//! cross-validation and the capacity sweep, through the library.

use densetrain::backend::LossKind;
use densetrain::backend::cpu::Cpu;
use densetrain::data::{
    self, DataConfig, DataSource, PreparedData, SplitConfig, SplitRule, kfold_indices,
};
use densetrain::model::{Activation, Init, ModelSpec, init};
use densetrain::optim::{Optimizer, OptimizerConfig};
use densetrain::tools::cv::{self, CvConfig};
use densetrain::tools::diagnostics::WarningKind;
use densetrain::tools::lr_find::{self, LrFindConfig, LrPoint, Rule, SweepEnd};
use densetrain::tools::sweep::{self, SweepCase};
use densetrain::train::{self, EarlyStoppingConfig, FitConfig, FitResult, Mode, Monitor, Units};
use std::path::Path;

// ---------------------------------------------------------------------------
// Suggestion rules on synthetic curves with known results.

/// 100 rates from 1e-7 to 10, and a loss that is flat at 2.3 up to index 40,
/// falls linearly to 0.3 at index 70, stays there to 80 and then rises.
fn known_curve() -> (Vec<f64>, Vec<f64>) {
    let lrs = lr_find::lr_schedule(1e-7, 10.0, 100);
    let loss = (0..100)
        .map(|i| match i {
            0..=40 => 2.3,
            41..=70 => 2.3 - 2.0 * (i - 40) as f64 / 30.0,
            71..=80 => 0.3,
            _ => 0.3 + 0.5 * (i - 80) as f64,
        })
        .collect();
    (lrs, loss)
}

fn suggestion(suggestions: &[lr_find::Suggestion], rule: Rule) -> f64 {
    suggestions
        .iter()
        .find(|s| s.rule == rule)
        .unwrap_or_else(|| panic!("no {} suggestion in {suggestions:?}", rule.name()))
        .lr
}

/// Index of `lr` in `lrs`, which must contain it (up to rounding).
fn index_of(lrs: &[f64], lr: f64) -> usize {
    lrs.iter()
        .position(|&v| (v / lr - 1.0).abs() < 1e-9)
        .unwrap_or_else(|| panic!("{lr} is not one of the swept rates"))
}

#[test]
fn rules_on_known_curve() {
    let (lrs, loss) = known_curve();
    // Decay 0 reads the losses unsmoothed, so the expected values are exact.
    let suggestions = lr_find::suggest(&lrs, &loss, 0.0);
    assert_eq!(suggestions.len(), 3, "{suggestions:?}");

    // The fall is linear over 41..=70; central differences are steepest inside it
    // (the first is the most negative of equals, at its start, 41).
    let steepest = index_of(&lrs, suggestion(&suggestions, Rule::Steepest));
    assert!((41..=70).contains(&steepest), "steepest at {steepest}");

    // The lowest loss is first reached at index 70; the rule divides its rate by 10.
    let minimum = suggestion(&suggestions, Rule::MinimumTenth);
    assert!((minimum * 10.0 / lrs[70] - 1.0).abs() < 1e-9, "{minimum}");

    // The longest falling run is 40..=70, whose middle is 55.
    assert_eq!(index_of(&lrs, suggestion(&suggestions, Rule::Valley)), 55);
}

#[test]
fn rules_skip_spike_at_start() {
    let (lrs, mut loss) = known_curve();
    for value in loss.iter_mut().take(3) {
        *value = 9.0;
    }
    let suggestions = lr_find::suggest(&lrs, &loss, lr_find::SMOOTHING);
    // A moving average over the whole curve falls from the spike for dozens of
    // points. The steepest fall and the valley must still be in the real descent.
    let steepest = index_of(&lrs, suggestion(&suggestions, Rule::Steepest));
    assert!(steepest > 40, "steepest at {steepest}: fooled by the spike");
    let valley = index_of(&lrs, suggestion(&suggestions, Rule::Valley));
    assert!(valley > 40, "valley at {valley}: fooled by the spike");
}

#[test]
fn rules_ignore_nan_points() {
    let (lrs, loss) = known_curve();
    let mut with_nan = loss.clone();
    for i in [5, 20, 50, 63, 90, 95, 96, 97, 98, 99] {
        with_nan[i] = f64::NAN;
    }
    let kept: Vec<usize> = (0..100).filter(|&i| with_nan[i].is_finite()).collect();
    let lrs_kept: Vec<f64> = kept.iter().map(|&i| lrs[i]).collect();
    let loss_kept: Vec<f64> = kept.iter().map(|&i| loss[i]).collect();
    let from_nan = lr_find::suggest(&lrs, &with_nan, lr_find::SMOOTHING);
    let from_kept = lr_find::suggest(&lrs_kept, &loss_kept, lr_find::SMOOTHING);
    assert_eq!(from_nan, from_kept);
    assert_eq!(from_nan.len(), 3);
}

#[test]
fn rules_need_enough_points() {
    let lrs = [1e-3, 1e-2, 1e-1, 1.0];
    let loss = [2.0, 1.0, 0.5, 3.0];
    assert!(lr_find::suggest(&lrs, &loss, 0.0).is_empty());
    let nan_tail = [2.0, f64::NAN, f64::NAN, f64::NAN];
    assert!(lr_find::suggest(&lrs, &nan_tail, 0.0).is_empty());
}

fn points(lrs: &[f64], loss: &[f64], smoothed: &[f64]) -> Vec<LrPoint> {
    lrs.iter()
        .zip(loss)
        .zip(smoothed)
        .map(|((&lr, &loss), &smoothed)| LrPoint { lr, loss, smoothed })
        .collect()
}

#[test]
fn clean_curve_raises_no_warning() {
    let (lrs, loss) = known_curve();
    let suggestions = lr_find::suggest(&lrs, &loss, 0.0);
    let warnings = lr_find::curve_warnings(&points(&lrs, &loss, &loss), &suggestions, 0.0);
    // Steepest at 41 and valley at 55 are within a factor 10 of each other, and so is
    // minimum/10 (index 70 / 10).
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn disagreeing_suggestions_warn() {
    // Two falls: a short steep one early and a long gentle one late.
    let lrs = lr_find::lr_schedule(1e-6, 1.0, 60);
    let loss: Vec<f64> = (0..60)
        .map(|i| match i {
            0..=9 => 3.0,
            10..=12 => 3.0 - 0.5 * (i - 9) as f64,
            13..=20 => 1.5,
            21..=50 => 1.5 - 0.04 * (i - 20) as f64,
            _ => 0.3 + 0.5 * (i - 50) as f64,
        })
        .collect();
    let suggestions = lr_find::suggest(&lrs, &loss, 0.0);
    let warnings = lr_find::curve_warnings(&points(&lrs, &loss, &loss), &suggestions, 0.0);
    assert!(
        warnings.iter().any(|w| w.contains("disagree")),
        "{suggestions:?} {warnings:?}"
    );
}

#[test]
fn noisy_curve_warns() {
    let lrs = lr_find::lr_schedule(1e-6, 1.0, 100);
    // Batch losses jump by ±1 around a trend that falls by only 0.2.
    let raw: Vec<f64> = (0..100)
        .map(|i| 2.0 - 0.002 * i as f64 + if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let smoothed = lr_find::smooth(&raw, lr_find::SMOOTHING);
    let suggestions = lr_find::suggest(&lrs, &raw, lr_find::SMOOTHING);
    let warnings = lr_find::curve_warnings(
        &points(&lrs, &raw, &smoothed),
        &suggestions,
        lr_find::SMOOTHING,
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("too noisy") || w.contains("never fell")),
        "{warnings:?}"
    );
}

// ---------------------------------------------------------------------------
// Real data through the library.

fn digits(fraction: f64) -> PreparedData {
    let config = DataConfig {
        source: DataSource::Digits,
        split: SplitConfig {
            fraction,
            rule: SplitRule::Stratified,
            seed: 1,
        },
        ..DataConfig::default()
    };
    data::prepare(&config).unwrap()
}

fn csv(name: &str, fraction: f64, rule: SplitRule) -> PreparedData {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let config = DataConfig {
        source: DataSource::Csv(path),
        split: SplitConfig {
            fraction,
            rule,
            seed: 1,
        },
        ..DataConfig::default()
    };
    data::prepare(&config).unwrap()
}

fn classifier(prepared: &PreparedData, hidden: Vec<usize>, activation: Activation) -> ModelSpec {
    let classes = prepared.preprocessor.class_names().unwrap().len();
    ModelSpec {
        inputs: prepared.preprocessor.input_count(),
        hidden,
        activation,
        outputs: classes,
        loss: LossKind::SoftmaxCrossEntropy,
        init: Init::default_for(activation),
        dropout: 0.0,
    }
}

fn optimizer(name: &str, lr: f32) -> OptimizerConfig {
    OptimizerConfig {
        optimizer: Optimizer::with_defaults(name).unwrap(),
        lr,
        l2: 0.0,
        weight_decay: 0.0,
        clipnorm: None,
    }
}

fn fit_config(optimizer: OptimizerConfig, epochs: usize, patience: Option<usize>) -> FitConfig {
    FitConfig {
        epochs,
        batch_size: 32,
        shuffle: true,
        seed: 1,
        optimizer,
        early_stopping: EarlyStoppingConfig {
            monitor: Monitor::ValLoss,
            mode: Mode::Auto,
            patience,
            min_delta: 0.0,
            start_from_epoch: 0,
            restore_best_weights: true,
        },
        class_weights: None,
        verbose: 0,
        diagnostics: true,
    }
}

fn fit_digits(spec: &ModelSpec, prepared: &PreparedData, config: &FitConfig) -> FitResult {
    let backend = Cpu::new(0).unwrap();
    train::fit(
        &backend,
        spec,
        &init::init_params(spec, 1),
        &prepared.train,
        prepared.validation.as_ref(),
        Units::IDENTITY,
        config,
    )
    .unwrap()
}

#[test]
fn range_test_on_digits_suggests_in_range() {
    let prepared = digits(0.2);
    let spec = classifier(&prepared, vec![64], Activation::Relu);
    let config = LrFindConfig {
        start_lr: 1e-5,
        end_lr: 10.0,
        steps: 80,
        batch_size: 32,
        seed: 1,
        optimizer: optimizer("sgd", 0.01),
        class_weights: None,
    };
    let backend = Cpu::new(0).unwrap();
    let initial = init::init_params(&spec, 1);
    let result = lr_find::range_test(
        &backend,
        &spec,
        &initial,
        &prepared.train,
        Units::IDENTITY,
        &config,
    )
    .unwrap();
    assert!(!result.points.is_empty());
    let lr = result.suggested_lr().expect("a suggestion on digits");
    assert!((1e-5..=10.0).contains(&lr), "suggested {lr}");
    // SGD on standardised digits learns well somewhere between 1e-3 and 1.
    assert!((1e-3..=1.0).contains(&lr), "suggested {lr}");
    let csv = result.to_csv();
    assert!(csv.starts_with("step,learning_rate,loss,smoothed_loss\n"));
    assert_eq!(csv.lines().count(), result.points.len() + 1);
}

#[test]
fn range_test_stops_when_loss_explodes() {
    let prepared = digits(0.2);
    let spec = classifier(&prepared, vec![32], Activation::Relu);
    let config = LrFindConfig {
        start_lr: 1e-4,
        end_lr: 1e6,
        steps: 100,
        batch_size: 32,
        seed: 1,
        optimizer: optimizer("sgd", 0.01),
        class_weights: None,
    };
    let backend = Cpu::new(0).unwrap();
    let initial = init::init_params(&spec, 1);
    let result = lr_find::range_test(
        &backend,
        &spec,
        &initial,
        &prepared.train,
        Units::IDENTITY,
        &config,
    )
    .unwrap();
    assert!(
        matches!(
            result.end,
            SweepEnd::Diverged { .. } | SweepEnd::NonFinite { .. }
        ),
        "{:?}",
        result.end
    );
    assert!(result.points.len() < 100);
    assert!(result.suggested_lr().is_some(), "{:?}", result.warnings);
}

// ---------------------------------------------------------------------------
// Fold construction.

fn check_partition(folds: &[(Vec<usize>, Vec<usize>)], n: usize) {
    let mut seen = vec![0usize; n];
    for (train, validation) in folds {
        assert_eq!(train.len() + validation.len(), n);
        for &row in validation {
            seen[row] += 1;
        }
        for &row in train {
            assert!(!validation.contains(&row), "row {row} in both parts");
        }
    }
    assert!(
        seen.iter().all(|&c| c == 1),
        "a row is in more or fewer than one validation fold"
    );
}

#[test]
fn plain_folds_follow_kfold_sizes() {
    let folds = kfold_indices(103, 5, None, false, 1).unwrap();
    let sizes: Vec<usize> = folds.iter().map(|f| f.1.len()).collect();
    assert_eq!(sizes, [21, 21, 21, 20, 20]);
    check_partition(&folds, 103);
    // Without shuffling the folds are consecutive rows.
    assert_eq!(folds[0].1, (0..21).collect::<Vec<_>>());
    assert_eq!(folds[4].1, (83..103).collect::<Vec<_>>());
}

#[test]
fn shuffled_folds_depend_on_seed() {
    let a = kfold_indices(50, 5, None, true, 1).unwrap();
    let b = kfold_indices(50, 5, None, true, 2).unwrap();
    let again = kfold_indices(50, 5, None, true, 1).unwrap();
    check_partition(&a, 50);
    assert_eq!(a, again);
    assert_ne!(a, b);
}

#[test]
fn stratified_folds_keep_class_shares() {
    let prepared = digits(0.0);
    let labels: Vec<u32> = prepared.train.y.iter().map(|&y| y as u32).collect();
    let n = labels.len();
    let folds = kfold_indices(n, 5, Some(&labels), true, 3).unwrap();
    check_partition(&folds, n);
    let sizes: Vec<usize> = folds.iter().map(|f| f.1.len()).collect();
    let (low, high) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
    assert!(high - low <= 1, "fold sizes {sizes:?}");
    for class in 0..10u32 {
        let per_fold: Vec<usize> = folds
            .iter()
            .map(|f| f.1.iter().filter(|&&r| labels[r] == class).count())
            .collect();
        let (low, high) = (
            per_fold.iter().min().unwrap(),
            per_fold.iter().max().unwrap(),
        );
        assert!(high - low <= 1, "class {class} per fold {per_fold:?}");
    }
}

#[test]
fn fold_count_errors() {
    let names: Vec<String> = vec!["setosa".into(), "rare".into()];
    let labels = [0, 0, 0, 0, 1, 1];
    let message = cv::check_folds(6, 3, Some(&labels), Some(&names))
        .unwrap_err()
        .to_string();
    assert!(message.contains("rare (2)"), "{message}");
    let message = cv::check_folds(6, 1, None, None).unwrap_err().to_string();
    assert!(message.contains("at least 2 folds"), "{message}");
    let message = cv::check_folds(6, 7, None, None).unwrap_err().to_string();
    assert!(message.contains("only 6 rows"), "{message}");
}

// ---------------------------------------------------------------------------
// Diagnostics warnings on real training runs.

#[test]
fn deep_sigmoid_network_has_vanishing_gradients() {
    let prepared = digits(0.2);
    let spec = classifier(&prepared, vec![32; 8], Activation::Sigmoid);
    let result = fit_digits(
        &spec,
        &prepared,
        &fit_config(optimizer("sgd", 0.01), 2, None),
    );
    let report = result.diagnostics.expect("diagnostics are on");
    assert!(
        report.has(WarningKind::VanishingGradients),
        "{}",
        report.summary()
    );
    assert!(!report.has(WarningKind::DeadUnits));
}

#[test]
fn relu_with_huge_learning_rate_has_dead_units() {
    let prepared = digits(0.2);
    let spec = classifier(&prepared, vec![64, 64], Activation::Relu);
    // Plain SGD at rate 1 diverges on digits within two epochs; rate 3 overflows
    // in the first epoch, before any diagnostics.
    let result = fit_digits(
        &spec,
        &prepared,
        &fit_config(optimizer("sgd", 1.0), 3, None),
    );
    let report = result.diagnostics.expect("diagnostics are on");
    assert!(report.has(WarningKind::DeadUnits), "{}", report.summary());
}

#[test]
fn healthy_default_run_has_no_warning() {
    let prepared = digits(0.2);
    let spec = classifier(&prepared, vec![128, 64], Activation::Relu);
    let result = fit_digits(
        &spec,
        &prepared,
        &fit_config(optimizer("adam", 1e-3), 10, None),
    );
    let report = result.diagnostics.expect("diagnostics are on");
    assert!(report.warnings.is_empty(), "{}", report.summary());
    assert_eq!(report.epochs.len(), 10);
    // Dead shares are fractions; gradient sizes are positive and finite.
    let last = report.epochs.last().unwrap();
    assert!(last.dead_share.iter().all(|s| (0.0..=1.0).contains(s)));
    assert!(last.gradient_rms.iter().all(|g| g.is_finite() && *g > 0.0));
    assert_eq!(result.history.extra_rows.len(), 10);
    let csv = result.history.to_csv();
    let header = csv.lines().next().unwrap();
    assert!(
        header
            .ends_with("learning_rate,dead_share_1,dead_share_2,grad_rms_1,grad_rms_2,grad_rms_3"),
        "{header}"
    );
}

#[test]
fn diagnostics_off_leaves_history_plain() {
    let prepared = digits(0.2);
    let spec = classifier(&prepared, vec![16], Activation::Relu);
    let mut config = fit_config(optimizer("adam", 1e-3), 1, None);
    config.diagnostics = false;
    let result = fit_digits(&spec, &prepared, &config);
    assert!(result.diagnostics.is_none());
    let csv = result.history.to_csv();
    assert!(csv.starts_with("epoch,loss,accuracy,val_loss,val_accuracy,learning_rate\n"));
}

// ---------------------------------------------------------------------------
// Cross-validation and sweep.

#[test]
fn iris_cross_validation_scores_every_fold() {
    let prepared = csv("iris.csv", 0.0, SplitRule::Tail);
    let spec = classifier(&prepared, vec![16], Activation::Relu);
    let labels: Vec<u32> = prepared.train.y.iter().map(|&y| y as u32).collect();
    let config = CvConfig {
        folds: 3,
        shuffle: true,
        seed: 1,
        inner_split: SplitConfig {
            fraction: 0.2,
            rule: SplitRule::Stratified,
            seed: 1,
        },
        scale: data::Scale::Standard,
    };
    let mut fit = fit_config(optimizer("adam", 0.01), 60, Some(5));
    fit.batch_size = 16;
    let backend = Cpu::new(0).unwrap();
    let mut seen = 0;
    let folds = cv::cross_validate(
        &backend,
        &spec,
        &prepared.train,
        Some(&labels),
        &prepared.preprocessor,
        &config,
        &fit,
        Units::IDENTITY,
        |_| seen += 1,
    )
    .unwrap();
    assert_eq!(seen, 3);
    assert_eq!(folds.len(), 3);
    let held_out: usize = folds.iter().map(|f| f.held_out_rows).sum();
    assert_eq!(held_out, 150);
    for fold in &folds {
        // 100 training rows of each fold; 20% of them validate.
        assert_eq!(fold.train_rows + fold.validation_rows, 100);
        assert_eq!(fold.validation_rows, 20);
    }
    let accuracies: Vec<f64> = folds.iter().map(|f| f.scores.metric).collect();
    let (mean, std) = cv::mean_std(&accuracies);
    assert!(
        mean >= 0.85,
        "mean held-out accuracy {mean} ({accuracies:?})"
    );
    assert!(std < 0.15, "spread {std}");
    let table = cv::table(&folds, "accuracy");
    assert!(table.contains("held-out accuracy: "), "{table}");
}

#[test]
fn sweep_ranks_small_and_large_models() {
    let prepared = digits(0.2);
    let base = classifier(&prepared, vec![4], Activation::Relu);
    let cases: Vec<SweepCase> = [vec![2], vec![64]]
        .into_iter()
        .map(|hidden| SweepCase {
            hidden,
            activation: Activation::Relu,
            init: Init::He,
            optimizer: optimizer("adam", 1e-3),
        })
        .collect();
    let backend = Cpu::new(0).unwrap();
    let fit = fit_config(optimizer("adam", 1e-3), 8, Some(3));
    let rows = sweep::run_sweep(
        &backend,
        &base,
        &cases,
        &prepared.train,
        prepared.validation.as_ref().unwrap(),
        Units::IDENTITY,
        &fit,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].parameters < rows[1].parameters);
    assert!(rows[1].best_val_loss < rows[0].best_val_loss);
    // Two hidden units cannot separate ten digits: far worse than the best.
    assert_eq!(rows[0].verdict, sweep::Verdict::Underfitting);
    assert_ne!(rows[1].verdict, sweep::Verdict::Underfitting);
    let table = sweep::table(&rows, "accuracy");
    assert!(table.contains("underfitting"), "{table}");
}
