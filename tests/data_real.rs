//! Real data sets in tests/data and the built-in digits: sizes, classes,
//! task inference, sorted-file warnings and training-only scaling.

use densetrain::data::preprocess::FeatureTransform;
use densetrain::data::{
    DataConfig, DataSource, PreparedData, SplitConfig, SplitRule, TaskKind, prepare,
};
use std::path::{Path, PathBuf};

fn real(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn load(name: &str, target: &str, rule: SplitRule) -> PreparedData {
    let config = DataConfig {
        source: DataSource::Csv(real(name)),
        target: Some(target.to_string()),
        split: SplitConfig {
            fraction: 0.2,
            rule,
            seed: 42,
        },
        ..DataConfig::default()
    };
    prepare(&config).unwrap()
}

fn counts(y: &[f32], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &label in y {
        counts[label as usize] += 1;
    }
    counts
}

/// Reads one column of a plain comma-separated file with a header.
fn column(name: &str, column: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(real(name)).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let index = header.iter().position(|h| *h == column).unwrap();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split(',').nth(index).unwrap().trim().parse().unwrap())
        .collect()
}

#[test]
fn iris_sizes_and_classes() {
    let data = load("iris.csv", "species", SplitRule::Tail);
    assert_eq!(
        data.train.rows + data.validation.as_ref().unwrap().rows,
        150
    );
    assert_eq!(data.train.rows, 120);
    assert_eq!(data.train.cols, 4);
    let classes = data.preprocessor.class_names().unwrap();
    assert_eq!(classes, ["setosa", "versicolor", "virginica"]);
    assert_eq!(data.preprocessor.task(), TaskKind::Classification);
}

#[test]
fn iris_tail_split_warns_sorted() {
    let data = load("iris.csv", "species", SplitRule::Tail);
    let validation = data.validation.as_ref().unwrap();
    assert_eq!(counts(&validation.y, 3), vec![0, 0, 30]);
    assert_eq!(data.warnings.len(), 1, "{:?}", data.warnings);
    assert!(data.warnings[0].contains("holds only class virginica"));
    assert!(data.warnings[0].contains("may be sorted"));
}

#[test]
fn iris_stratified_split_is_even() {
    let data = load("iris.csv", "species", SplitRule::Stratified);
    let validation = data.validation.as_ref().unwrap();
    assert_eq!(counts(&validation.y, 3), vec![10, 10, 10]);
    assert_eq!(counts(&data.train.y, 3), vec![40, 40, 40]);
    assert!(data.warnings.is_empty(), "{:?}", data.warnings);
}

#[test]
fn wine_sizes_and_classes() {
    let data = load("wine.csv", "cultivar", SplitRule::Stratified);
    let validation = data.validation.as_ref().unwrap();
    assert_eq!(data.train.rows + validation.rows, 178);
    assert_eq!(data.train.cols, 13);
    let classes = data.preprocessor.class_names().unwrap();
    assert_eq!(classes, ["class_0", "class_1", "class_2"]);
    let total: Vec<usize> = counts(&data.train.y, 3)
        .iter()
        .zip(counts(&validation.y, 3))
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(total, vec![59, 71, 48]);
    // 178 rows at 0.2: floor(178 * 0.8) = 142 train, 36 validation, split
    // 11.9 / 14.4 / 9.7 by proportion.
    assert_eq!(validation.rows, 36);
    let validation_counts = counts(&validation.y, 3);
    for (got, share) in validation_counts.iter().zip([59.0, 71.0, 48.0]) {
        let exact = 36.0 * share / 178.0;
        assert!((*got as f64 - exact).abs() < 1.0, "{validation_counts:?}");
    }
}

#[test]
fn breast_cancer_is_binary() {
    let data = load("breast_cancer.csv", "diagnosis", SplitRule::Shuffled);
    assert_eq!(
        data.train.rows + data.validation.as_ref().unwrap().rows,
        569
    );
    assert_eq!(data.train.cols, 30);
    let classes = data.preprocessor.class_names().unwrap();
    assert_eq!(classes, ["benign", "malignant"]);
}

#[test]
fn diabetes_is_regression_scaled_on_training_rows() {
    let data = load("diabetes.csv", "progression", SplitRule::Tail);
    assert_eq!(data.preprocessor.task(), TaskKind::Regression);
    assert_eq!(data.train.rows, 353);
    assert_eq!(data.validation.as_ref().unwrap().rows, 89);
    assert_eq!(data.train.cols, 10);

    let target = column("diabetes.csv", "progression");
    assert_eq!(target.len(), 442);
    let train = &target[..353];
    let mean = train.iter().sum::<f64>() / 353.0;
    let std = (train.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 353.0).sqrt();
    let (fitted_mean, fitted_std) = data.preprocessor.target_mean_std().unwrap();
    assert!((fitted_mean - mean).abs() < 1e-9, "{fitted_mean} vs {mean}");
    assert!((fitted_std - std).abs() < 1e-9, "{fitted_std} vs {std}");
    let all_mean = target.iter().sum::<f64>() / 442.0;
    assert!((fitted_mean - all_mean).abs() > 1e-6, "fitted on every row");

    let y_mean = data.train.y.iter().map(|&v| v as f64).sum::<f64>() / 353.0;
    assert!(y_mean.abs() < 1e-5, "standardised mean {y_mean}");

    let bmi = column("diabetes.csv", "bmi");
    let bmi_mean = bmi[..353].iter().sum::<f64>() / 353.0;
    let FeatureTransform::Numeric { shift, .. } = &data.preprocessor.features[2] else {
        panic!("bmi should be numeric");
    };
    assert!(
        (*shift as f64 - bmi_mean).abs() < 1e-4,
        "{shift} vs {bmi_mean}"
    );
}

#[test]
fn builtin_digits_match_the_test_copy() {
    let builtin = prepare(&DataConfig::default()).unwrap();
    assert_eq!(builtin.train.rows, 1437);
    assert_eq!(builtin.validation.as_ref().unwrap().rows, 360);
    assert_eq!(builtin.train.cols, 64);
    assert_eq!(builtin.preprocessor.target_name, "digit");
    let names: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    assert_eq!(
        builtin.preprocessor.class_names().unwrap(),
        names.as_slice()
    );
    assert!(builtin.report[0].starts_with("data: built-in digits: 1797 rows, 65 columns"));

    let copy = load("digits.csv", "digit", SplitRule::Tail);
    assert_eq!(copy.train.x, builtin.train.x);
    assert_eq!(copy.train.y, builtin.train.y);
    assert_eq!(copy.preprocessor.features, builtin.preprocessor.features);
}

#[test]
fn digits_without_validation_keeps_every_row() {
    let config = DataConfig {
        split: SplitConfig {
            fraction: 0.0,
            ..SplitConfig::default()
        },
        ..DataConfig::default()
    };
    let data = prepare(&config).unwrap();
    assert_eq!(data.train.rows, 1797);
    assert_eq!(data.train.x.len(), 1797 * 64);
    let total: usize = counts(&data.train.y, 10).iter().sum();
    assert_eq!(total, 1797);
}
