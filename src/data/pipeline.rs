//! The steps of [`prepare`](crate::data::prepare): load, decide the task,
//! split, fit the preprocessing on the training part, encode every part.

use crate::data::csv::{self, CsvRead, list_names};
use crate::data::preprocess::{self, ColumnMap};
use crate::data::split::{self, SplitRule};
use crate::data::table::{self, FeatureKind, TargetValues};
use crate::data::{
    CsvOptions, DataConfig, DataSource, Dataset, PreparedData, RawData, Scale, TaskKind, builtin,
    idx,
};
use anyhow::{Result, bail};
use std::path::Path;

pub(crate) fn prepare(config: &DataConfig) -> Result<PreparedData> {
    split::check_fraction(config.split.fraction)?;
    match &config.source {
        DataSource::Digits => {
            prepare_table(config, builtin::digits()?, Some(builtin::DIGITS_TARGET))
        }
        DataSource::Csv(path) => prepare_table(config, csv::read_file(path, &config.csv)?, None),
        DataSource::IdxDir(dir) => {
            let files = idx::find_dir_files(dir)?;
            let test = if config.load_test {
                let Some(test) = files.test else {
                    bail!(
                        "{} holds no IDX test files (t10k-images-idx3-ubyte and \
                         t10k-labels-idx1-ubyte, or with '.' before idx, with or without .gz)",
                        dir.display()
                    );
                };
                Some(test)
            } else {
                None
            };
            let test = test.as_ref().map(|(i, l)| (i.as_path(), l.as_path()));
            prepare_images(config, &files.train_images, &files.train_labels, test)
        }
        DataSource::IdxFiles { images, labels } => {
            if config.load_test {
                bail!(
                    "test files come from an IDX directory (--data DIR); single --images and \
                     --labels files have none"
                );
            }
            prepare_images(config, images, labels, None)
        }
    }
}

/// Describes the split rule for the report.
fn describe_split(config: &DataConfig) -> String {
    let fraction = config.split.fraction;
    let seed = config.split.seed;
    match config.split.rule {
        SplitRule::Tail => {
            format!("--validation-split {fraction}, tail rule: the last rows of the data validate")
        }
        SplitRule::Shuffled => format!("--validation-split {fraction}, shuffled with seed {seed}"),
        SplitRule::Stratified => {
            format!("--validation-split {fraction}, stratified by class with seed {seed}")
        }
    }
}

/// Adds the class counts of both parts to the report and a warning when the
/// class make-up of the split is off.
fn report_classes(
    names: &[String],
    train_counts: &[usize],
    validation_counts: Option<&[usize]>,
    rule: Option<SplitRule>,
    report: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    report.push(format!(
        "training class counts: {}",
        split::describe_counts(names, train_counts)
    ));
    let Some(validation_counts) = validation_counts else {
        return;
    };
    report.push(format!(
        "validation class counts: {}",
        split::describe_counts(names, validation_counts)
    ));
    if let Some(warning) =
        split::class_balance_warning(names, train_counts, validation_counts, rule)
    {
        warnings.push(warning);
    }
}

fn counts_of(y: &[f32], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &label in y {
        counts[label as usize] += 1;
    }
    counts
}

fn prepare_table(
    config: &DataConfig,
    read: CsvRead,
    default_target: Option<&str>,
) -> Result<PreparedData> {
    let CsvRead {
        table,
        report: read_report,
        mut warnings,
    } = read;
    if config.load_test {
        bail!(
            "test files come from an IDX directory (--data DIR); {} has none",
            table.origin
        );
    }
    let mut report = vec![format!(
        "data: {}: {} rows, {} columns",
        table.origin,
        table.rows(),
        table.names.len()
    )];
    report.extend(read_report);
    if config.validation_data.is_none() {
        split::split_sizes(table.rows(), config.split.fraction)?;
    }
    let target_name = config.target.as_deref().or(default_target);
    let choice = table::choose_columns(&table, target_name, &config.drop)?;
    let (target, task_lines) = table::target_values(&table, choice.target, config.task)?;
    report.extend(task_lines);
    if !choice.dropped.is_empty() {
        report.push(format!(
            "dropped columns: {}",
            list_names(&choice.dropped, 40)
        ));
    }
    let kinds = table::feature_kinds(&table, &choice.features, config.fill_missing.is_some())?;
    let labels = match &target {
        TargetValues::Classes { labels, .. } => Some(labels.as_slice()),
        TargetValues::Values(_) => None,
    };
    let n = table.rows();
    let (train_rows, validation_rows) = if config.validation_data.is_some() {
        ((0..n).collect(), Vec::new())
    } else {
        split::split_indices(n, labels, &config.split)?
    };

    let features: Vec<(usize, FeatureKind)> = choice.features.iter().copied().zip(kinds).collect();
    let (preprocessor, fill_report) = preprocess::fit_table(
        &table,
        &features,
        (choice.target, &target),
        &train_rows,
        config.scale,
        config.fill_missing,
        choice.dropped.clone(),
        &mut warnings,
    )?;
    report.push(describe_features(
        &features,
        preprocessor.input_count(),
        config,
    ));
    report.extend(fill_report);

    let map = ColumnMap {
        features: choice.features.clone(),
        target: Some(choice.target),
    };
    let train = preprocess::encode_table(&preprocessor, &table, &map, &train_rows)?;
    let validation = match &config.validation_data {
        Some(path) => {
            let data = read_validation_table(&preprocessor, path, &table, config)?;
            report.push(format!(
                "training rows: {}, validation rows: {} (validation file {}; \
                 --validation-split does not apply)",
                train.rows,
                data.rows,
                path.display()
            ));
            Some(data)
        }
        None if validation_rows.is_empty() => {
            report.push(format!(
                "training rows: {}, validation: off (--validation-split 0)",
                train.rows
            ));
            None
        }
        None => {
            let data = preprocess::encode_table(&preprocessor, &table, &map, &validation_rows)?;
            report.push(format!(
                "training rows: {}, validation rows: {} ({})",
                train.rows,
                data.rows,
                describe_split(config)
            ));
            Some(data)
        }
    };
    if let Some(names) = preprocessor.class_names() {
        let train_counts = counts_of(&train.y, names.len());
        let validation_counts = validation.as_ref().map(|v| counts_of(&v.y, names.len()));
        let rule = config
            .validation_data
            .is_none()
            .then_some(config.split.rule);
        report_classes(
            names,
            &train_counts,
            validation_counts.as_deref(),
            rule,
            &mut report,
            &mut warnings,
        );
    }
    Ok(PreparedData {
        train,
        validation,
        test: None,
        preprocessor,
        train_rows,
        validation_rows,
        report,
        warnings,
    })
}

fn describe_features(
    features: &[(usize, FeatureKind)],
    inputs: usize,
    config: &DataConfig,
) -> String {
    let numeric = features
        .iter()
        .filter(|(_, kind)| *kind == FeatureKind::Numeric)
        .count();
    let one_hot = features.len() - numeric;
    let scale = match config.scale {
        crate::data::Scale::Standard => "standard (fitted on the training part)",
        crate::data::Scale::MinMax => "min-max (fitted on the training part)",
        crate::data::Scale::None => "none",
    };
    format!(
        "features: {} columns ({numeric} numeric, {one_hot} one-hot encoded) give {inputs} \
         inputs; scaling: {scale}",
        features.len()
    )
}

/// Reads and encodes a separate validation file with the training file's
/// delimiter, header choice and decimal mark.
fn read_validation_table(
    preprocessor: &preprocess::Preprocessor,
    path: &Path,
    training: &csv::Table,
    config: &DataConfig,
) -> Result<Dataset> {
    let options = CsvOptions {
        header: Some(training.header),
        delimiter: Some(training.delimiter),
        decimal_comma: config.csv.decimal_comma,
    };
    let table = csv::read_file(path, &options)?.table;
    if table.column_index(&preprocessor.target_name).is_none() {
        bail!(
            "validation file {} lacks the target column '{}'; its columns are: {}",
            path.display(),
            csv::escape_invisible(&preprocessor.target_name),
            table.describe_columns()
        );
    }
    preprocessor.transform(&RawData::Table(table))
}

fn prepare_images(
    config: &DataConfig,
    images_path: &Path,
    labels_path: &Path,
    test: Option<(&Path, &Path)>,
) -> Result<PreparedData> {
    check_image_options(config)?;
    let images = idx::read_images(images_path, labels_path)?;
    let preprocessor = preprocess::fit_images(&images);
    let names = preprocessor.class_names().unwrap_or_default().to_vec();
    if names.len() < 2 {
        bail!(
            "{} contains one label value only ({}); classification needs at least two classes",
            labels_path.display(),
            names.first().map_or("", String::as_str)
        );
    }
    let mut report = describe_images(&images, &names);

    let labels = class_labels(&preprocessor, &images)?;
    let (train_rows, validation_rows) =
        split::split_indices(images.count, Some(&labels), &config.split)?;
    let train = preprocess::encode_images(&preprocessor, &images, &train_rows)?;
    let validation = if validation_rows.is_empty() {
        report.push(format!(
            "training rows: {}, validation: off (--validation-split 0)",
            train.rows
        ));
        None
    } else {
        let data = preprocess::encode_images(&preprocessor, &images, &validation_rows)?;
        report.push(format!(
            "training rows: {}, validation rows: {} ({})",
            train.rows,
            data.rows,
            describe_split(config)
        ));
        Some(data)
    };
    // The raw pixels are encoded; free them before the test files are read.
    drop(images);

    let mut warnings = Vec::new();
    let train_counts = split::class_counts(&labels, &train_rows, names.len());
    let validation_counts = validation
        .as_ref()
        .map(|_| split::class_counts(&labels, &validation_rows, names.len()));
    report_classes(
        &names,
        &train_counts,
        validation_counts.as_deref(),
        Some(config.split.rule),
        &mut report,
        &mut warnings,
    );

    let test = match test {
        Some((test_images, test_labels)) => {
            let raw = idx::read_images(test_images, test_labels)?;
            let data = preprocessor.transform(&RawData::Images(raw))?;
            report.push(format!(
                "test rows: {} ({} and {})",
                data.rows,
                test_images.display(),
                test_labels.display()
            ));
            Some(data)
        }
        None => None,
    };
    Ok(PreparedData {
        train,
        validation,
        test,
        preprocessor,
        train_rows,
        validation_rows,
        report,
        warnings,
    })
}

/// Rejects the CSV-only options for IDX data.
fn check_image_options(config: &DataConfig) -> Result<()> {
    if config.target.is_some() || !config.drop.is_empty() {
        bail!("--target and --drop apply to CSV data; IDX labels come from the labels file");
    }
    if config.task == Some(TaskKind::Regression) {
        bail!("IDX labels are classes; --task regression does not apply to IDX data");
    }
    if config.fill_missing.is_some() {
        bail!("--fill-missing applies to CSV data; IDX pixels are never missing");
    }
    if config.scale != Scale::Standard {
        bail!("--scale applies to CSV features; IDX pixels are always divided by 255");
    }
    let csv = &config.csv;
    if csv.header.is_some() || csv.delimiter.is_some() || csv.decimal_comma {
        bail!(
            "--header, --no-header, --delimiter and --decimal apply to CSV data, not to IDX files"
        );
    }
    // TODO: accept an IDX directory or an images and labels pair as validation data.
    if let Some(path) = &config.validation_data {
        bail!(
            "--validation-data {} is not supported with IDX training data; use \
             --validation-split",
            path.display()
        );
    }
    Ok(())
}

/// Describes IDX data, its classes and its scaling for the report.
fn describe_images(images: &idx::Images, names: &[String]) -> Vec<String> {
    let compressed = |path: &Path| {
        if idx::is_gzip(path) { " (gzip)" } else { "" }
    };
    vec![
        format!(
            "data: {}{} and {}{}: {} images of {}×{} pixels",
            images.images_path.display(),
            compressed(&images.images_path),
            images.labels_path.display(),
            compressed(&images.labels_path),
            images.count,
            images.height,
            images.width
        ),
        format!(
            "task: classification, {} classes: the distinct label values in sorted order",
            names.len()
        ),
        format!("classes in index order: {}", table::list_classes(names)),
        "features: pixels divided by 255, no further scaling (--scale does not apply to IDX \
         images)"
            .to_string(),
    ]
}

/// Maps every image's label to its class index.
fn class_labels(preprocessor: &preprocess::Preprocessor, images: &idx::Images) -> Result<Vec<u32>> {
    let names = preprocessor.class_names().unwrap_or_default();
    let mut class_of = [0u32; 256];
    for (index, name) in names.iter().enumerate() {
        let value: u8 = name.parse()?;
        class_of[value as usize] = index as u32;
    }
    Ok(images
        .labels
        .iter()
        .map(|&l| class_of[l as usize])
        .collect())
}
