//! Data sets: loaders (CSV, IDX, built-in), preprocessing and splitting.
//!
//! The flow is: load a source into a [`RawData`] (columns as read), decide the
//! task and the labels, split row indices into training and validation parts,
//! fit the [`Preprocessor`] on the training part only, and transform every
//! part into a [`Dataset`] of f32 features and targets.

pub mod builtin;
pub mod csv;
pub mod idx;
pub mod preprocess;
pub mod split;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use preprocess::Preprocessor;
pub use split::{SplitConfig, SplitRule};

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// The built-in digits set (1797 8x8 images, embedded in the binary).
    Digits,
    /// A CSV file.
    Csv(PathBuf),
    /// A directory of IDX files with the standard train and test names.
    IdxDir(PathBuf),
    /// One IDX images file and one IDX labels file.
    IdxFiles { images: PathBuf, labels: PathBuf },
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
#[derive(Clone, Debug, PartialEq)]
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
pub fn prepare(config: &DataConfig) -> anyhow::Result<PreparedData> {
    let _ = config;
    unimplemented!()
}
