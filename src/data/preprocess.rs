//! Fitted preprocessing: feature scaling and encoding, label mapping.
//!
//! Every constant here is fitted on the training part only and stored in
//! `model.json`, so evaluation and prediction apply exactly what training
//! learned. CSV numeric columns are scaled as `(value - shift) * scale`, and
//! text columns become one 0/1 input per category. IDX pixels are divided by
//! 255 and nothing else: no standardisation on top, whatever the scaling
//! option.

use crate::data::csv::{self, Cell, Table, escape_invisible, looks_like_decimal_comma};
use crate::data::table::{FeatureKind, TargetValues, cell_location};
use crate::data::{
    CsvOptions, DataSource, Dataset, FillMissing, RawData, Scale, TaskKind, builtin, idx,
};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// How one input column becomes one or more network inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureTransform {
    /// A numeric column: `(value - shift) * scale`; missing cells become `fill` first.
    Numeric {
        name: String,
        shift: f32,
        scale: f32,
        fill: Option<f32>,
    },
    /// A string column expanded into one 0/1 input per category.
    /// A missing cell becomes `fill` (one value per category) when it is set.
    OneHot {
        name: String,
        categories: Vec<String>,
        #[serde(default)]
        fill: Option<Vec<f32>>,
    },
    /// An IDX image: `height * width` inputs, each pixel byte times `scale` (1/255).
    Image {
        name: String,
        height: usize,
        width: usize,
        scale: f32,
    },
}

/// How the target column maps to what the network predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetTransform {
    /// Class names in index order (sorted).
    Classes { names: Vec<String> },
    /// Regression target standardised as `(y - mean) / std`.
    Standardized { mean: f64, std: f64 },
}

/// The file format the preprocessing was fitted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceFormat {
    /// CSV with these reading options.
    Csv {
        delimiter: u8,
        decimal_comma: bool,
        /// Whether the first line is a header; without one, columns are `col0`, `col1`, ...
        #[serde(default = "default_header")]
        header: bool,
    },
    /// IDX images (pixels are features).
    Idx,
}

fn default_header() -> bool {
    true
}

/// Every constant fitted on the training part, kept with the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    /// Input columns in order.
    pub features: Vec<FeatureTransform>,
    /// Target name (`label` for IDX).
    pub target_name: String,
    /// Target mapping.
    pub target: TargetTransform,
    /// Format of the data.
    pub format: SourceFormat,
    /// Columns ignored by request.
    pub dropped: Vec<String>,
}

/// Name of the single feature of IDX data and of its target.
pub const IDX_FEATURE_NAME: &str = "pixels";
/// Name of the target of IDX data.
pub const IDX_TARGET_NAME: &str = "label";

impl Preprocessor {
    /// Classification or regression.
    pub fn task(&self) -> TaskKind {
        match self.target {
            TargetTransform::Classes { .. } => TaskKind::Classification,
            TargetTransform::Standardized { .. } => TaskKind::Regression,
        }
    }

    /// Class names in index order, for classification.
    pub fn class_names(&self) -> Option<&[String]> {
        match &self.target {
            TargetTransform::Classes { names } => Some(names),
            TargetTransform::Standardized { .. } => None,
        }
    }

    /// `(mean, std)` of the regression target.
    pub fn target_mean_std(&self) -> Option<(f64, f64)> {
        match self.target {
            TargetTransform::Standardized { mean, std } => Some((mean, std)),
            TargetTransform::Classes { .. } => None,
        }
    }

    /// Number of network inputs after encoding.
    pub fn input_count(&self) -> usize {
        self.features
            .iter()
            .map(|f| match f {
                FeatureTransform::Numeric { .. } => 1,
                FeatureTransform::OneHot { categories, .. } => categories.len(),
                FeatureTransform::Image { height, width, .. } => height * width,
            })
            .sum()
    }

    /// Names of the source columns used as features, in order. An IDX image
    /// is one feature named `pixels`.
    pub fn feature_names(&self) -> Vec<&str> {
        self.features.iter().map(feature_name).collect()
    }

    /// Reads `source` with the reading options the preprocessing was fitted
    /// with. For an IDX directory that is its test files (`t10k-...`), the
    /// data a trained model is evaluated on.
    pub fn read(&self, source: &DataSource) -> Result<RawData> {
        match (source, &self.format) {
            (DataSource::Digits, SourceFormat::Csv { .. }) => {
                Ok(RawData::Table(builtin::digits()?.table))
            }
            (
                DataSource::Csv(path),
                SourceFormat::Csv {
                    delimiter,
                    decimal_comma,
                    header,
                },
            ) => {
                let options = CsvOptions {
                    header: Some(*header),
                    delimiter: Some(*delimiter),
                    decimal_comma: *decimal_comma,
                };
                Ok(RawData::Table(csv::read_file(path, &options)?.table))
            }
            (DataSource::IdxDir(dir), SourceFormat::Idx) => {
                let files = idx::find_dir_files(dir)?;
                let Some((images, labels)) = files.test else {
                    bail!(
                        "{} holds no IDX test files (t10k-images-idx3-ubyte and \
                         t10k-labels-idx1-ubyte, or with '.' before idx, with or without .gz)",
                        dir.display()
                    );
                };
                Ok(RawData::Images(idx::read_images(&images, &labels)?))
            }
            (DataSource::IdxFiles { images, labels }, SourceFormat::Idx) => {
                Ok(RawData::Images(idx::read_images(images, labels)?))
            }
            (source, SourceFormat::Idx) => bail!(
                "the model was trained on IDX images, but {} is CSV data",
                source.describe()
            ),
            (source, SourceFormat::Csv { .. }) => bail!(
                "the model was trained on CSV data, but {} is IDX data",
                source.describe()
            ),
        }
    }

    /// Applies the fitted preprocessing to new data.
    ///
    /// A table must contain every feature column the model was trained on and
    /// no column it has not seen. Dropped columns and the target column may be
    /// present or not. Without the target the returned `y` is empty. With it,
    /// `y` contains class indices or standardised values as in training, and a
    /// label the model does not know is an error.
    pub fn transform(&self, raw: &RawData) -> Result<Dataset> {
        match raw {
            RawData::Table(table) => {
                let map = self.map_columns(table)?;
                let rows: Vec<usize> = (0..table.rows()).collect();
                encode_table(self, table, &map, &rows)
            }
            RawData::Images(images) => {
                let rows: Vec<usize> = (0..images.count).collect();
                encode_images(self, images, &rows)
            }
        }
    }

    /// Finds the table column of every feature and of the target.
    fn map_columns(&self, table: &Table) -> Result<ColumnMap> {
        if self.format == SourceFormat::Idx {
            bail!(
                "the model was trained on IDX images, but {} is CSV data",
                table.origin
            );
        }
        let mut features = Vec::with_capacity(self.features.len());
        let mut missing = Vec::new();
        for name in self.feature_names() {
            match table.column_index(name) {
                Some(index) => features.push(index),
                None => missing.push(name.to_string()),
            }
        }
        if !missing.is_empty() {
            bail!(
                "{} lacks the feature {} {} that the model was trained on; its columns are: {}",
                table.origin,
                if missing.len() == 1 {
                    "column"
                } else {
                    "columns"
                },
                csv::list_names(&missing, 20),
                table.describe_columns()
            );
        }
        let target = table.column_index(&self.target_name);
        let unknown: Vec<String> = table
            .names
            .iter()
            .filter(|n| {
                !self.feature_names().contains(&n.as_str())
                    && **n != self.target_name
                    && !self.dropped.contains(n)
            })
            .cloned()
            .collect();
        if !unknown.is_empty() {
            bail!(
                "{} has {} {} that the model was not trained on; the model's columns are: {} \
                 (target '{}')",
                table.origin,
                if unknown.len() == 1 {
                    "a column"
                } else {
                    "columns"
                },
                csv::list_names(&unknown, 20),
                csv::list_names(
                    &self
                        .feature_names()
                        .iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>(),
                    20
                ),
                escape_invisible(&self.target_name)
            );
        }
        Ok(ColumnMap { features, target })
    }
}

fn feature_name(feature: &FeatureTransform) -> &str {
    match feature {
        FeatureTransform::Numeric { name, .. }
        | FeatureTransform::OneHot { name, .. }
        | FeatureTransform::Image { name, .. } => name,
    }
}

/// The table column of each feature transform, and of the target when present.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ColumnMap {
    pub features: Vec<usize>,
    pub target: Option<usize>,
}

/// Fits the preprocessing of a table on `train_rows`.
///
/// Missing numeric cells are filled first (with the training mean of the
/// column or 0), then the scaling is fitted on the filled training values,
/// as an imputer followed by a scaler would. A constant column gets scale 1,
/// so it becomes 0 under standard and min-max scaling. The standard deviation
/// is the population one (divided by n), as scikit-learn's `StandardScaler`
/// computes it. Returns the preprocessor and report lines about filling.
#[allow(clippy::too_many_arguments)]
pub(crate) fn fit_table(
    table: &Table,
    features: &[(usize, FeatureKind)],
    target: (usize, &TargetValues),
    train_rows: &[usize],
    scale: Scale,
    fill_missing: Option<FillMissing>,
    dropped: Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(Preprocessor, Vec<String>)> {
    let mut transforms = Vec::with_capacity(features.len());
    let mut report = Vec::new();
    for (column, kind) in features {
        let name = table.names[*column].clone();
        let missing = (0..table.rows())
            .filter(|&row| matches!(table.cell(row, *column), Cell::Missing(_)))
            .count();
        let transform = match kind {
            FeatureKind::Numeric => {
                let (transform, fill) =
                    fit_numeric(table, *column, train_rows, scale, fill_missing)?;
                if let (Some(fill), true) = (fill, missing > 0) {
                    report.push(format!(
                        "filled {missing} missing {} of column '{}' with {fill}",
                        if missing == 1 { "cell" } else { "cells" },
                        escape_invisible(&name)
                    ));
                }
                transform
            }
            FeatureKind::Categorical(categories) => {
                let fill = fill_missing
                    .map(|policy| category_fill(table, *column, categories, train_rows, policy));
                if fill.is_some() && missing > 0 {
                    let how = match fill_missing {
                        Some(FillMissing::Mean) => "the training share of each category",
                        _ => "zeros",
                    };
                    report.push(format!(
                        "filled {missing} missing {} of text column '{}' with {how}",
                        if missing == 1 { "cell" } else { "cells" },
                        escape_invisible(&name)
                    ));
                }
                FeatureTransform::OneHot {
                    name,
                    categories: categories.clone(),
                    fill,
                }
            }
        };
        transforms.push(transform);
    }
    let (target_column, target_values) = target;
    let target_name = table.names[target_column].clone();
    let target = match target_values {
        TargetValues::Classes { names, .. } => TargetTransform::Classes {
            names: names.clone(),
        },
        TargetValues::Values(values) => {
            let train: Vec<f64> = train_rows.iter().map(|&row| values[row]).collect();
            let (mean, std) = mean_std(&train);
            let std = if is_negligible(std) {
                warnings.push(format!(
                    "the target '{}' is constant ({mean}) in the training part; the network \
                     can only learn that constant",
                    escape_invisible(&target_name)
                ));
                1.0
            } else {
                std
            };
            TargetTransform::Standardized { mean, std }
        }
    };
    let preprocessor = Preprocessor {
        features: transforms,
        target_name,
        target,
        format: SourceFormat::Csv {
            delimiter: table.delimiter,
            decimal_comma: table.decimal_comma,
            header: table.header,
        },
        dropped,
    };
    Ok((preprocessor, report))
}

/// Fits one numeric column; returns the transform and a description of the fill value.
fn fit_numeric(
    table: &Table,
    column: usize,
    train_rows: &[usize],
    scale: Scale,
    fill_missing: Option<FillMissing>,
) -> Result<(FeatureTransform, Option<String>)> {
    let present: Vec<f64> = train_rows
        .iter()
        .filter_map(|&row| match table.cell(row, column) {
            Cell::Number(value) => Some(value),
            _ => None,
        })
        .collect();
    let name = table.names[column].clone();
    let fill = match fill_missing {
        None => None,
        Some(FillMissing::Zero) => Some(0.0),
        Some(FillMissing::Mean) => {
            if present.is_empty() {
                bail!(
                    "column '{}' has no values in the training part, so --fill-missing mean \
                     has nothing to average; drop it with --drop {} or use --fill-missing zero",
                    escape_invisible(&name),
                    escape_invisible(&name)
                );
            }
            Some(mean_std(&present).0)
        }
    };
    let filled: Vec<f64> = train_rows
        .iter()
        .map(|&row| match table.cell(row, column) {
            Cell::Number(value) => value,
            _ => fill.unwrap_or(0.0),
        })
        .collect();
    let (shift, factor) = match scale {
        Scale::Standard => {
            let (mean, std) = mean_std(&filled);
            (mean, if is_negligible(std) { 1.0 } else { 1.0 / std })
        }
        Scale::MinMax => {
            let min = filled.iter().copied().fold(f64::INFINITY, f64::min);
            let max = filled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let range = max - min;
            (
                min,
                if is_negligible(range) {
                    1.0
                } else {
                    1.0 / range
                },
            )
        }
        Scale::None => (0.0, 1.0),
    };
    let description = fill.map(|value| match fill_missing {
        Some(FillMissing::Mean) => format!("the training mean {value}"),
        _ => "0".to_string(),
    });
    // NOTE: shift and scale are stored as f32, so a column whose spread is
    // below about 1e-7 of its magnitude loses most of its variation.
    let transform = FeatureTransform::Numeric {
        name,
        shift: shift as f32,
        scale: factor as f32,
        fill: fill.map(|v| v as f32),
    };
    Ok((transform, description))
}

/// Computes the fill vector of a one-hot column: each category's share of the
/// training rows that have a value (the mean of its 0/1 input), or zeros.
fn category_fill(
    table: &Table,
    column: usize,
    categories: &[String],
    train_rows: &[usize],
    policy: FillMissing,
) -> Vec<f32> {
    let mut counts = vec![0usize; categories.len()];
    if policy == FillMissing::Zero {
        return vec![0.0; categories.len()];
    }
    let mut present = 0;
    for &row in train_rows {
        let cell = table.cell(row, column);
        if matches!(cell, Cell::Missing(_)) {
            continue;
        }
        if let Some(index) = categories.iter().position(|c| *c == cell.key()) {
            counts[index] += 1;
            present += 1;
        }
    }
    counts
        .iter()
        .map(|&count| count as f32 / present.max(1) as f32)
        .collect()
}

/// Mean and population standard deviation (two passes, in f64).
pub(crate) fn mean_std(values: &[f64]) -> (f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, variance.sqrt())
}

/// Returns true for a spread too small to divide by; scikit-learn uses the
/// same bound (10 machine epsilons) for a constant column.
fn is_negligible(spread: f64) -> bool {
    spread < 10.0 * f64::EPSILON
}

/// Encodes `rows` of a table with fitted preprocessing, checking every cell.
pub(crate) fn encode_table(
    preprocessor: &Preprocessor,
    table: &Table,
    map: &ColumnMap,
    rows: &[usize],
) -> Result<Dataset> {
    let cols = preprocessor.input_count();
    let mut x = Vec::with_capacity(rows.len() * cols);
    let class_index: Option<HashMap<&str, u32>> = preprocessor.class_names().map(|names| {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i as u32))
            .collect()
    });
    let category_index: Vec<HashMap<&str, usize>> = preprocessor
        .features
        .iter()
        .map(|feature| match feature {
            FeatureTransform::OneHot { categories, .. } => categories
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), i))
                .collect(),
            _ => HashMap::new(),
        })
        .collect();
    for &row in rows {
        for (f, (feature, &column)) in preprocessor.features.iter().zip(&map.features).enumerate() {
            encode_cell(table, row, column, feature, &category_index[f], &mut x)?;
        }
    }
    let mut y = Vec::new();
    if let Some(column) = map.target {
        y.reserve(rows.len());
        for &row in rows {
            y.push(encode_target(
                preprocessor,
                table,
                row,
                column,
                class_index.as_ref(),
            )?);
        }
    }
    Ok(Dataset {
        x,
        y,
        rows: rows.len(),
        cols,
    })
}

fn encode_cell(
    table: &Table,
    row: usize,
    column: usize,
    feature: &FeatureTransform,
    categories: &HashMap<&str, usize>,
    x: &mut Vec<f32>,
) -> Result<()> {
    let cell = table.cell(row, column);
    let location = || cell_location(table, row, column);
    match (feature, cell) {
        (_, Cell::NonFinite(text)) => bail!(
            "{}: non-finite value '{text}'; only finite numbers within the float32 \
             range (about ±3.4e38) are accepted, also with --fill-missing",
            location()
        ),
        (FeatureTransform::Numeric { shift, scale, .. }, Cell::Number(value)) => {
            x.push(((value - *shift as f64) * *scale as f64) as f32);
        }
        (
            FeatureTransform::Numeric {
                shift, scale, fill, ..
            },
            Cell::Missing(text),
        ) => match fill {
            Some(fill) => x.push((fill - shift) * scale),
            None => bail!(
                "{}: missing value '{text}'; fill in the cell, or train with --fill-missing \
                 mean (or zero) to replace missing feature values",
                location()
            ),
        },
        (FeatureTransform::Numeric { .. }, Cell::Text(text)) => {
            let hint = if looks_like_decimal_comma(text) {
                " (decimal comma? use --decimal ',')"
            } else {
                "; the column is numeric"
            };
            bail!("{}: '{text}' is not a number{hint}", location());
        }
        (FeatureTransform::OneHot { fill, .. }, Cell::Missing(text)) => match fill {
            Some(fill) => x.extend_from_slice(fill),
            None => bail!(
                "{}: missing value '{text}'; fill in the cell, or train with --fill-missing \
                 mean (or zero) to replace missing feature values",
                location()
            ),
        },
        (
            FeatureTransform::OneHot {
                categories: names, ..
            },
            cell,
        ) => {
            let key = cell.key();
            let Some(&index) = categories.get(key.as_str()) else {
                bail!(
                    "{}: category '{}' is not one the model was trained on ({})",
                    location(),
                    escape_invisible(&key),
                    csv::list_names(names, 20)
                );
            };
            let start = x.len();
            x.resize(start + names.len(), 0.0);
            x[start + index] = 1.0;
        }
        (FeatureTransform::Image { .. }, _) => bail!(
            "{}: the model was trained on IDX images, not on CSV columns",
            table.origin
        ),
    }
    Ok(())
}

fn encode_target(
    preprocessor: &Preprocessor,
    table: &Table,
    row: usize,
    column: usize,
    class_index: Option<&HashMap<&str, u32>>,
) -> Result<f32> {
    let cell = table.cell(row, column);
    let location = || cell_location(table, row, column);
    match (cell, &preprocessor.target) {
        (Cell::Missing(text), _) => bail!(
            "{}: missing target value '{text}'; every row needs a target (fill it in or \
             remove the row)",
            location()
        ),
        (Cell::NonFinite(text), _) => bail!(
            "{}: non-finite target value '{text}'; only finite numbers within the float32 range (about ±3.4e38) are accepted",
            location()
        ),
        (Cell::Number(value), TargetTransform::Standardized { mean, std }) => {
            Ok(((value - mean) / std) as f32)
        }
        (Cell::Text(text), TargetTransform::Standardized { .. }) => {
            let hint = if looks_like_decimal_comma(text) {
                " (decimal comma? use --decimal ',')"
            } else {
                "; the model predicts a number"
            };
            bail!("{}: '{text}' is not a number{hint}", location())
        }
        (cell, TargetTransform::Classes { names }) => {
            let key = cell.key();
            match class_index.and_then(|index| index.get(key.as_str())) {
                Some(&index) => Ok(index as f32),
                None => bail!(
                    "{}: label '{}' is not one of the classes the model was trained on ({})",
                    location(),
                    escape_invisible(&key),
                    csv::list_names(names, 30)
                ),
            }
        }
    }
}

/// Builds the preprocessing of IDX images: pixels divided by 255, the
/// distinct label values (sorted) as classes.
pub(crate) fn fit_images(images: &idx::Images) -> Preprocessor {
    Preprocessor {
        features: vec![FeatureTransform::Image {
            name: IDX_FEATURE_NAME.to_string(),
            height: images.height,
            width: images.width,
            scale: 1.0 / 255.0,
        }],
        target_name: IDX_TARGET_NAME.to_string(),
        target: TargetTransform::Classes {
            names: idx::label_classes(&images.labels),
        },
        format: SourceFormat::Idx,
        dropped: Vec::new(),
    }
}

/// Encodes `rows` of IDX images; every label must be a known class.
pub(crate) fn encode_images(
    preprocessor: &Preprocessor,
    images: &idx::Images,
    rows: &[usize],
) -> Result<Dataset> {
    let [
        FeatureTransform::Image {
            height,
            width,
            scale,
            ..
        },
    ] = preprocessor.features.as_slice()
    else {
        bail!(
            "the model was trained on CSV columns, but {} contains IDX images",
            images.images_path.display()
        );
    };
    if (*height, *width) != (images.height, images.width) {
        bail!(
            "{} contains {}×{} images, but the model was trained on {height}×{width}",
            images.images_path.display(),
            images.height,
            images.width
        );
    }
    let names = preprocessor.class_names().unwrap_or_default();
    let mut class_of = [None; 256];
    for (index, name) in names.iter().enumerate() {
        if let Ok(value) = name.parse::<u8>() {
            class_of[value as usize] = Some(index as f32);
        }
    }
    let size = height * width;
    let mut x = Vec::with_capacity(rows.len() * size);
    let mut y = Vec::with_capacity(rows.len());
    for &row in rows {
        let label = images.labels[row];
        let Some(class) = class_of[label as usize] else {
            bail!(
                "{}: label {label} at index {row} is not one of the classes the model was \
                 trained on ({})",
                images.labels_path.display(),
                names.join(", ")
            );
        };
        y.push(class);
        let pixels = &images.pixels[row * size..(row + 1) * size];
        x.extend(pixels.iter().map(|&p| p as f32 * scale));
    }
    Ok(Dataset {
        x,
        y,
        rows: rows.len(),
        cols: size,
    })
}
