//! Data sets: loaders (CSV, IDX, built-in), preprocessing and splitting.
//!
//! The flow is: load a source into a [`RawData`] (columns as read), decide the
//! task and the labels, split row indices into training and validation parts,
//! fit the [`Preprocessor`] on the training part only, and transform every
//! part into a [`Dataset`] of f32 features and targets.

pub mod builtin;
pub mod csv;
pub mod idx;
mod pipeline;
pub mod preprocess;
pub mod split;
pub mod table;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::path::{Path, PathBuf};

pub use preprocess::Preprocessor;
pub use split::{SplitConfig, SplitRule, kfold_indices, split_indices};

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum DataSource {
    /// The built-in digits set (1797 8x8 images, embedded in the binary).
    #[default]
    Digits,
    /// A CSV file.
    Csv(PathBuf),
    /// A directory of IDX files with the standard train and test names.
    IdxDir(PathBuf),
    /// One IDX images file and one IDX labels file.
    IdxFiles { images: PathBuf, labels: PathBuf },
}

impl DataSource {
    /// Turns a `--data` value into a source.
    ///
    /// The names `digits` and `fashion-mnist` come first (write `./digits` for
    /// a directory of that name); `fashion-mnist` is the directory that the
    /// Debian package `dataset-fashion-mnist` installs. Otherwise a directory
    /// is read as IDX files and a file as CSV. A file that starts like IDX or
    /// gzip data is rejected with a message that shows how to pass IDX files.
    pub fn from_arg(value: &str) -> Result<DataSource> {
        Self::from_arg_with(value, Path::new(idx::FASHION_MNIST_DIR))
    }

    /// Turns a `--data` value into a source as [`from_arg`](Self::from_arg)
    /// does, looking for Fashion-MNIST in `fashion_dir`.
    pub fn from_arg_with(value: &str, fashion_dir: &Path) -> Result<DataSource> {
        if matches!(value, "digits" | "fashion-mnist" | "fashion_mnist")
            && Path::new(value).exists()
        {
            log::warn!(
                "--data {value} names the built-in data set, not the file '{value}' in this \
                 directory; write ./{value} to read the file"
            );
        }
        match value {
            "digits" => return Ok(DataSource::Digits),
            "fashion-mnist" | "fashion_mnist" => {
                if fashion_dir.is_dir() {
                    return Ok(DataSource::IdxDir(fashion_dir.to_path_buf()));
                }
                bail!(
                    "fashion-mnist is not installed: {} does not exist; install the Debian \
                     package dataset-fashion-mnist (sudo apt-get install -y \
                     dataset-fashion-mnist), or put the four IDX files in a directory and pass \
                     --data DIR",
                    fashion_dir.display()
                );
            }
            _ => {}
        }
        let path = PathBuf::from(value);
        if path.is_dir() {
            return Ok(DataSource::IdxDir(path));
        }
        if !path.is_file() {
            bail!(
                "--data {value}: no such file or directory; --data takes a CSV file, a \
                 directory of IDX files, or one of the names digits and fashion-mnist"
            );
        }
        let mut start = [0u8; 4];
        let read = std::fs::File::open(&path)
            .and_then(|mut file| std::io::Read::read(&mut file, &mut start))
            .map_err(|e| anyhow::anyhow!("cannot read {value}: {e}"))?;
        if read >= 2 && start[..2] == [0x1F, 0x8B] {
            bail!(
                "{value} is gzip-compressed: pass IDX files as --images FILE --labels FILE or \
                 as the directory that holds them; decompress a CSV file first"
            );
        }
        if read == 4 && start[..2] == [0, 0] && (0x08..=0x0E).contains(&start[2]) {
            bail!(
                "{value} is an IDX file: pass it with --images FILE --labels FILE, or pass \
                 the directory that holds the train and t10k files"
            );
        }
        Ok(DataSource::Csv(path))
    }

    /// Names the source for messages.
    pub fn describe(&self) -> String {
        match self {
            DataSource::Digits => builtin::DIGITS_ORIGIN.to_string(),
            DataSource::Csv(path) | DataSource::IdxDir(path) => path.display().to_string(),
            DataSource::IdxFiles { images, labels } => {
                format!("{} and {}", images.display(), labels.display())
            }
        }
    }
}

/// Data as read, before any preprocessing.
#[derive(Clone, Debug, PartialEq)]
pub enum RawData {
    /// A CSV table.
    Table(csv::Table),
    /// IDX images and labels.
    Images(idx::Images),
}

/// How to read a CSV file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CsvOptions {
    /// `Some(true)` forces a header row, `Some(false)` forces none (columns are
    /// named `col0`, `col1`, ...), `None` detects it: a first line whose cells
    /// are all numbers is data.
    pub header: Option<bool>,
    /// Field delimiter; `None` detects comma, semicolon or tab.
    pub delimiter: Option<u8>,
    /// Read `1,5` as 1.5 (requires a delimiter other than comma).
    pub decimal_comma: bool,
}

/// Classification or regression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Predict one of a fixed set of classes.
    Classification,
    /// Predict a real value.
    Regression,
}

/// How feature columns are scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// Subtract the training mean, divide by the training standard deviation.
    #[default]
    Standard,
    /// Map the training minimum to 0 and maximum to 1.
    MinMax,
    /// Leave values as they are (IDX pixels are still divided by 255).
    None,
}

/// What to do with missing feature cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FillMissing {
    /// Replace with the training part's column mean.
    Mean,
    /// Replace with 0 (before scaling).
    Zero,
}

/// Everything that decides which rows and columns a run trains on.
///
/// The default reads the built-in digits with every other setting at its
/// documented default (20% tail validation split, standard scaling).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DataConfig {
    /// The training data.
    pub source: DataSource,
    /// CSV reading options (also used for `validation_data`).
    pub csv: CsvOptions,
    /// Target column name; `None` takes the last column.
    pub target: Option<String>,
    /// Columns to ignore.
    pub drop: Vec<String>,
    /// Overrides task inference.
    pub task: Option<TaskKind>,
    /// Feature scaling.
    pub scale: Scale,
    /// Missing-value policy; `None` makes a missing cell an error.
    pub fill_missing: Option<FillMissing>,
    /// How to hold out validation rows (ignored when `validation_data` is given).
    pub split: SplitConfig,
    /// A separate validation file in the same format as `source`.
    pub validation_data: Option<PathBuf>,
    /// Also load the test files of an IDX directory.
    pub load_test: bool,
}

/// Features and targets ready for a backend.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Dataset {
    /// Features `[rows, cols]`, row-major, already scaled and encoded.
    pub x: Vec<f32>,
    /// Targets `[rows]`: class indices as f32, or standardised values.
    pub y: Vec<f32>,
    /// Number of rows.
    pub rows: usize,
    /// Number of feature columns after encoding.
    pub cols: usize,
}

/// Lets [`fit`](crate::train::fit) take a dataset by value, so a CPU
/// backend trains on it in place instead of holding a copy.
impl From<Dataset> for Cow<'_, Dataset> {
    fn from(data: Dataset) -> Self {
        Cow::Owned(data)
    }
}

impl<'a> From<&'a Dataset> for Cow<'a, Dataset> {
    fn from(data: &'a Dataset) -> Self {
        Cow::Borrowed(data)
    }
}

impl Dataset {
    /// Returns the rows listed in `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let mut x = Vec::with_capacity(indices.len() * self.cols);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend_from_slice(&self.x[i * self.cols..(i + 1) * self.cols]);
            y.push(self.y[i]);
        }
        Dataset {
            x,
            y,
            rows: indices.len(),
            cols: self.cols,
        }
    }
}

/// The training, validation and optional test data of one run.
#[derive(Clone, Debug)]
pub struct PreparedData {
    /// Training part.
    pub train: Dataset,
    /// Validation part, `None` when validation is off.
    pub validation: Option<Dataset>,
    /// Test part (IDX directories with `load_test`).
    pub test: Option<Dataset>,
    /// The fitted preprocessing, kept with the model.
    pub preprocessor: Preprocessor,
    /// Row indices (into the source file's data rows, from 0) of the training part.
    pub train_rows: Vec<usize>,
    /// Row indices of the validation part (empty with `validation_data`).
    pub validation_rows: Vec<usize>,
    /// Lines for the user: the detected delimiter, header choice, task, split sizes and
    /// class counts. The command line prints them unless `--verbose 0`.
    pub report: Vec<String>,
    /// Warnings for the user (skewed or sorted splits, dropped columns).
    pub warnings: Vec<String>,
}

/// Loads `config.source`, splits it, fits the preprocessing on the training
/// part and returns every part ready for training.
///
/// Nothing is printed: lines for the user go into `report`, warnings into
/// `warnings`. Any problem with the data or the options is an error that
/// names the file, line, column or value.
pub fn prepare(config: &DataConfig) -> anyhow::Result<PreparedData> {
    pipeline::prepare(config)
}

/// Returns scikit-learn's "balanced" class weights, `n / (classes * count)`,
/// from the class counts of `train`. A class without training rows gets
/// weight 1; no training sample uses it.
pub fn balanced_class_weights(train: &Dataset, classes: usize) -> Vec<f32> {
    let mut counts = vec![0usize; classes];
    for &label in &train.y {
        if let Some(count) = counts.get_mut(label as usize) {
            *count += 1;
        }
    }
    counts
        .iter()
        .map(|&count| {
            if count == 0 {
                1.0
            } else {
                train.rows as f32 / (classes * count) as f32
            }
        })
        .collect()
}
