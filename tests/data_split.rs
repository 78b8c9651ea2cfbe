//! Validation splits: the Keras tail rule and its float rounding, tiny data
//! sets, sorted files, shuffled and stratified rules, k-fold assignment, and
//! scaling fitted on the training part only.

use densetrain::data::split::{self, class_counts};
use densetrain::data::{
    DataConfig, DataSource, Dataset, Scale, SplitConfig, SplitRule, balanced_class_weights,
    kfold_indices, prepare, split_indices,
};
use std::io::Write;
use std::path::{Path, PathBuf};

fn case(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cases")
        .join(path)
}

fn config(path: &Path, fraction: f64, rule: SplitRule) -> DataConfig {
    DataConfig {
        source: DataSource::Csv(path.to_path_buf()),
        target: Some("label".to_string()),
        split: SplitConfig {
            fraction,
            rule,
            seed: 1,
        },
        ..DataConfig::default()
    }
}

fn tail(path: &str, fraction: f64) -> DataConfig {
    config(&case(path), fraction, SplitRule::Tail)
}

fn error_of(config: &DataConfig) -> String {
    match prepare(config) {
        Ok(_) => panic!("expected an error for {:?}", config.source),
        Err(error) => format!("{error:#}"),
    }
}

fn sizes(n: usize, fraction: f64) -> (usize, usize) {
    let config = SplitConfig {
        fraction,
        ..SplitConfig::default()
    };
    let (train, validation) = split_indices(n, None, &config).unwrap();
    (train.len(), validation.len())
}

#[test]
fn tail_sizes_match_keras() {
    assert_eq!(sizes(60000, 0.33), (40199, 19801));
    assert_eq!(sizes(10, 0.33), (6, 4));
    assert_eq!(sizes(100, 0.29), (71, 29));
    assert_eq!(sizes(10, 0.3), (7, 3));
    assert_eq!(sizes(1797, 0.2), (1437, 360));
}

#[test]
fn tail_takes_last_rows_in_order() {
    let config = SplitConfig {
        fraction: 0.3,
        ..SplitConfig::default()
    };
    let (train, validation) = split_indices(10, None, &config).unwrap();
    assert_eq!(train, (0..7).collect::<Vec<_>>());
    assert_eq!(validation, vec![7, 8, 9]);
}

#[test]
fn sorted_file_tail_split_warns() {
    let data = prepare(&tail("sorted-labels/sorted.csv", 0.2)).unwrap();
    assert_eq!(data.train.rows, 16);
    assert_eq!(data.validation.as_ref().unwrap().rows, 4);
    let report = data.report.join("\n");
    assert!(
        report.contains("training rows: 16, validation rows: 4"),
        "{report}"
    );
    assert!(
        report.contains("training class counts: 0: 4, 1: 4, 2: 4, 3: 4, 4: 0"),
        "{report}"
    );
    assert!(
        report.contains("validation class counts: 0: 0, 1: 0, 2: 0, 3: 0, 4: 4"),
        "{report}"
    );
    assert_eq!(data.warnings.len(), 1, "{:?}", data.warnings);
    let warning = &data.warnings[0];
    assert!(
        warning.contains(
            "the validation part holds only class 4, which does not occur in the training part"
        ),
        "{warning}"
    );
    assert!(
        warning.contains("the file may be sorted or grouped by label"),
        "{warning}"
    );
    assert!(
        warning.contains("--split stratified or --split shuffled"),
        "{warning}"
    );
}

#[test]
fn sorted_file_stratified_split() {
    let path = case("sorted-labels/sorted.csv");
    let data = prepare(&config(&path, 0.2, SplitRule::Stratified)).unwrap();
    let validation = data.validation.as_ref().unwrap();
    assert_eq!(data.train.rows, 16);
    assert_eq!(validation.rows, 4);
    let train_counts = counts(&data.train, 5);
    let validation_counts = counts(validation, 5);
    // 4 validation rows over 5 classes of 4: four classes give one row each.
    assert!(train_counts.iter().all(|&c| c >= 3), "{train_counts:?}");
    assert!(
        validation_counts.iter().all(|&c| c <= 1),
        "{validation_counts:?}"
    );
    assert_eq!(validation_counts.iter().sum::<usize>(), 4);
    // Stratified sampling cannot put 4 rows in 5 classes; the run says so.
    assert!(
        data.warnings
            .iter()
            .any(|w| w.contains("has no validation rows")),
        "{:?}",
        data.warnings
    );
    assert!(!data.warnings.iter().any(|w| w.contains("may be sorted")));
}

#[test]
fn shuffled_split_is_seeded() {
    let path = case("sorted-labels/sorted.csv");
    let first = prepare(&config(&path, 0.2, SplitRule::Shuffled)).unwrap();
    let second = prepare(&config(&path, 0.2, SplitRule::Shuffled)).unwrap();
    assert_eq!(first.validation_rows, second.validation_rows);
    assert_eq!(first.train_rows, second.train_rows);
    assert_eq!(first.validation_rows.len(), 4);
    let mut other_seed = config(&path, 0.2, SplitRule::Shuffled);
    other_seed.split.seed = 2;
    let third = prepare(&other_seed).unwrap();
    assert_ne!(first.validation_rows, third.validation_rows);
}

#[test]
fn shuffled_split_is_a_partition() {
    let config = SplitConfig {
        fraction: 0.25,
        rule: SplitRule::Shuffled,
        seed: 7,
    };
    let (train, validation) = split_indices(1000, None, &config).unwrap();
    assert_eq!(train.len(), 750);
    assert_eq!(validation.len(), 250);
    assert!(validation.windows(2).all(|w| w[0] < w[1]));
    let mut all: Vec<usize> = train.iter().chain(&validation).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());
    assert_ne!(validation, (750..1000).collect::<Vec<_>>());
}

#[test]
fn stratified_keeps_proportions() {
    let labels: Vec<u32> = (0..100)
        .map(|i| match i {
            0..60 => 0,
            60..90 => 1,
            _ => 2,
        })
        .collect();
    let config = SplitConfig {
        fraction: 0.2,
        rule: SplitRule::Stratified,
        seed: 3,
    };
    let (train, validation) = split_indices(100, Some(&labels), &config).unwrap();
    assert_eq!(class_counts(&labels, &validation, 3), vec![12, 6, 2]);
    assert_eq!(class_counts(&labels, &train, 3), vec![48, 24, 8]);
}

#[test]
fn stratified_rounds_to_the_tail_count() {
    // 10 rows at 0.33: 6 train, 4 validation, as the tail rule.
    let labels: Vec<u32> = vec![0, 0, 0, 0, 0, 1, 1, 1, 2, 2];
    let config = SplitConfig {
        fraction: 0.33,
        rule: SplitRule::Stratified,
        seed: 11,
    };
    let (train, validation) = split_indices(10, Some(&labels), &config).unwrap();
    assert_eq!((train.len(), validation.len()), (6, 4));
    let counts = class_counts(&labels, &validation, 3);
    assert_eq!(counts.iter().sum::<usize>(), 4);
    assert!(counts.iter().all(|&c| c >= 1), "{counts:?}");
}

#[test]
fn stratified_regression_is_rejected() {
    let config = SplitConfig {
        fraction: 0.2,
        rule: SplitRule::Stratified,
        seed: 0,
    };
    let message = split_indices(10, None, &config).unwrap_err().to_string();
    assert!(
        message.contains("--split stratified needs class labels"),
        "{message}"
    );
}

#[test]
fn tiny_split_rounds_up_to_one_row() {
    // Keras's rule: floor(10 * 0.95) = 9 training rows, so 1 validates.
    let data = prepare(&tail("tiny-splits/ten.csv", 0.05)).unwrap();
    assert_eq!(data.train.rows, 9);
    assert_eq!(data.validation.unwrap().rows, 1);
}

#[test]
fn ten_rows_at_point_three() {
    let data = prepare(&tail("tiny-splits/ten.csv", 0.3)).unwrap();
    assert_eq!(data.train.rows, 7);
    assert_eq!(data.validation.as_ref().unwrap().rows, 3);
    assert_eq!(data.validation_rows, vec![7, 8, 9]);
    assert!(
        data.report
            .iter()
            .any(|l| l.starts_with("training rows: 7, validation rows: 3")),
        "{:?}",
        data.report
    );
}

#[test]
fn split_leaving_no_training_rows() {
    let message = error_of(&tail("tiny-splits/ten.csv", 0.99));
    assert!(
        message.contains("--validation-split 0.99 of 10 rows leaves 0 training rows"),
        "{message}"
    );
}

#[test]
fn split_selecting_no_rows() {
    let config = SplitConfig {
        fraction: 1e-17,
        ..SplitConfig::default()
    };
    let message = split_indices(10, None, &config).unwrap_err().to_string();
    assert!(message.contains("of 10 rows selects 0 rows"), "{message}");
    assert!(
        message.contains("use at least 0.1 or more data"),
        "{message}"
    );
}

#[test]
fn three_rows_at_half() {
    let data = prepare(&tail("tiny-splits/three.csv", 0.5)).unwrap();
    assert_eq!(data.train.rows, 1);
    assert_eq!(data.validation.unwrap().rows, 2);
}

#[test]
fn one_row_cannot_split() {
    let message = error_of(&tail("tiny-splits/one.csv", 0.2));
    assert!(
        message.contains("cannot split 1 row into training and validation"),
        "{message}"
    );
}

#[test]
fn hundred_rows_at_point_two_nine() {
    let data = prepare(&tail("tiny-splits/hundred.csv", 0.29)).unwrap();
    assert_eq!(data.train.rows, 71);
    assert_eq!(data.validation.as_ref().unwrap().rows, 29);
    assert_eq!(data.validation_rows, (71..100).collect::<Vec<_>>());
    assert_eq!(data.train_rows, (0..71).collect::<Vec<_>>());
    assert!(
        data.report
            .iter()
            .any(|l| l.starts_with("training rows: 71, validation rows: 29")),
        "{:?}",
        data.report
    );
}

#[test]
fn zero_fraction_turns_validation_off() {
    let data = prepare(&tail("tiny-splits/ten.csv", 0.0)).unwrap();
    assert_eq!(data.train.rows, 10);
    assert!(data.validation.is_none());
    assert!(data.validation_rows.is_empty());
    assert!(
        data.report.iter().any(|l| l.contains("validation: off")),
        "{:?}",
        data.report
    );
}

#[test]
fn fraction_out_of_range_is_rejected() {
    for fraction in [1.0, 1.5, -0.1, f64::NAN] {
        let message = error_of(&tail("tiny-splits/ten.csv", fraction));
        assert!(
            message.contains(
                "--validation-split must be at least 0 and below 1 (0 turns validation off)"
            ),
            "{fraction}: {message}"
        );
    }
}

#[test]
fn kfold_plain_sizes_and_partition() {
    let folds = kfold_indices(10, 3, None, false, 0).unwrap();
    let sizes: Vec<usize> = folds.iter().map(|(_, v)| v.len()).collect();
    assert_eq!(sizes, vec![4, 3, 3]);
    assert_eq!(folds[0].1, vec![0, 1, 2, 3]);
    let mut all: Vec<usize> = folds.iter().flat_map(|(_, v)| v.clone()).collect();
    all.sort_unstable();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
    for (train, validation) in &folds {
        assert_eq!(train.len() + validation.len(), 10);
        assert!(train.iter().all(|row| !validation.contains(row)));
    }
}

#[test]
fn kfold_shuffle_is_seeded() {
    let first = kfold_indices(50, 5, None, true, 4).unwrap();
    let second = kfold_indices(50, 5, None, true, 4).unwrap();
    let other = kfold_indices(50, 5, None, true, 5).unwrap();
    assert_eq!(first, second);
    assert_ne!(first, other);
    assert_ne!(first[0].1, (0..10).collect::<Vec<_>>());
}

#[test]
fn kfold_stratified_spreads_classes() {
    let labels: Vec<u32> = (0..90).map(|i| if i < 60 { 0 } else { 1 }).collect();
    let folds = kfold_indices(90, 3, Some(&labels), true, 1).unwrap();
    for (train, validation) in &folds {
        assert_eq!(class_counts(&labels, validation, 2), vec![20, 10]);
        assert_eq!(class_counts(&labels, train, 2), vec![40, 20]);
    }
}

#[test]
fn kfold_rejects_bad_counts() {
    let message = kfold_indices(10, 1, None, false, 0)
        .unwrap_err()
        .to_string();
    assert!(message.contains("at least 2 folds"), "{message}");
    let message = kfold_indices(3, 5, None, false, 0).unwrap_err().to_string();
    assert!(
        message.contains("5 folds need at least 5 rows"),
        "{message}"
    );
}

#[test]
fn scaling_is_fitted_on_training_rows() {
    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    let mut text = String::from("a,label\n");
    for (i, a) in [1, 2, 3, 4, 5, 6, 7, 8, 100, 200].iter().enumerate() {
        text.push_str(&format!("{a},{}\n", i % 2));
    }
    file.write_all(text.as_bytes()).unwrap();
    let data = prepare(&config(file.path(), 0.2, SplitRule::Tail)).unwrap();
    let densetrain::data::preprocess::FeatureTransform::Numeric { shift, scale, .. } =
        &data.preprocessor.features[0]
    else {
        panic!("a should be numeric");
    };
    let train_values = [1.0f64, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
    let mean = train_values.iter().sum::<f64>() / 8.0;
    let std = (train_values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 8.0).sqrt();
    assert!((*shift as f64 - mean).abs() < 1e-6, "shift {shift}");
    assert!((*scale as f64 - 1.0 / std).abs() < 1e-6, "scale {scale}");
    let train_mean = data.train.x.iter().sum::<f32>() / 8.0;
    assert!(train_mean.abs() < 1e-6, "training mean {train_mean}");
    let validation = data.validation.unwrap();
    let expected = ((100.0 - mean) / std) as f32;
    assert!((validation.x[0] - expected).abs() < 1e-4);

    let unscaled = prepare(&DataConfig {
        scale: Scale::None,
        ..config(file.path(), 0.2, SplitRule::Tail)
    })
    .unwrap();
    assert_eq!(unscaled.validation.unwrap().x, vec![100.0, 200.0]);
}

#[test]
fn balanced_weights_follow_sklearn() {
    let train = Dataset {
        x: vec![0.0; 8],
        y: vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0],
        rows: 8,
        cols: 1,
    };
    let weights = balanced_class_weights(&train, 2);
    assert!((weights[0] - 8.0 / 12.0).abs() < 1e-6);
    assert!((weights[1] - 2.0).abs() < 1e-6);
    let with_absent = balanced_class_weights(&train, 3);
    assert!((with_absent[0] - 8.0 / 18.0).abs() < 1e-6);
    assert_eq!(with_absent[2], 1.0);
}

#[test]
fn distance_of_disjoint_parts_is_one() {
    assert_eq!(split::distribution_distance(&[4, 4, 0], &[0, 0, 4]), 1.0);
    assert_eq!(split::distribution_distance(&[4, 4], &[2, 2]), 0.0);
}

fn counts(data: &Dataset, classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &label in &data.y {
        counts[label as usize] += 1;
    }
    counts
}
