//! Command-line definitions (clap derive). Parsing only: `cli::settings`
//! turns these into validated configurations.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Train dense neural networks on CSV and IDX data, on the CPU or an NVIDIA GPU.
#[derive(Debug, Parser)]
#[command(name = "densetrain", version, about, max_term_width = 100)]
pub struct Cli {
    /// Log more detail to stderr (-v info, -vv debug); RUST_LOG overrides it.
    #[arg(short = 'v', long = "log-verbose", action = clap::ArgAction::Count, global = true)]
    pub log_verbosity: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fit a model and write it, its history and its summary into a run directory.
    Train(Box<TrainArgs>),
}

/// Options of `densetrain train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub optimizer: OptimizerArgs,
    #[command(flatten)]
    pub fit: FitArgs,
}

/// Where the data comes from and how it is read.
#[derive(Debug, Args)]
#[command(next_help_heading = "Data")]
pub struct DataArgs {
    /// Training data: `digits` (built in), `fashion-mnist`, a CSV file, or a directory of
    /// IDX files [default: digits]
    #[arg(long, value_name = "SOURCE")]
    pub data: Option<String>,
    /// IDX images file (idx3, raw or gzip); use with --labels instead of --data.
    #[arg(
        long,
        value_name = "FILE",
        requires = "labels",
        conflicts_with = "data"
    )]
    pub images: Option<PathBuf>,
    /// IDX labels file (idx1, raw or gzip); use with --images.
    #[arg(long, value_name = "FILE", requires = "images")]
    pub labels: Option<PathBuf>,
    /// Target column of a CSV file [default: the last column]
    #[arg(long, value_name = "COLUMN")]
    pub target: Option<String>,
    /// The CSV file has no header row; columns are named col0, col1, ...
    #[arg(long, conflicts_with = "header")]
    pub no_header: bool,
    /// The CSV file has a header row even if its cells look numeric (default: detected).
    #[arg(long)]
    pub header: bool,
    /// CSV field delimiter: ',', ';', 'tab' or one character [default: detected]
    #[arg(long, value_name = "CHAR")]
    pub delimiter: Option<String>,
    /// Decimal mark of CSV numbers: '.' or ','
    #[arg(long, value_name = "CHAR", default_value = ".")]
    pub decimal: String,
    /// Columns to ignore, comma-separated.
    #[arg(long, value_name = "COLUMNS", value_delimiter = ',', alias = "ignore")]
    pub drop: Vec<String>,
    /// Task, instead of inferring it from the target column.
    #[arg(long, value_parser = ["classification", "regression"])]
    pub task: Option<String>,
    /// Feature scaling, fitted on the training part.
    #[arg(long, default_value = "standard", value_parser = ["standard", "minmax", "none"])]
    pub scale: String,
    /// Replace missing feature cells instead of stopping with an error.
    #[arg(long, value_parser = ["mean", "zero"])]
    pub fill_missing: Option<String>,
    /// Share of rows held out for validation, at least 0 and below 1; 0 turns validation off.
    #[arg(long, default_value_t = 0.2, allow_negative_numbers = true)]
    pub validation_split: f64,
    /// Which rows validate: the file's last rows (Keras), a seeded random subset, or a
    /// seeded subset with every class in proportion.
    #[arg(long, default_value = "tail", value_parser = ["tail", "shuffled", "stratified"])]
    pub split: String,
    /// Validation file in the training data's format; replaces --validation-split.
    #[arg(long, value_name = "FILE")]
    pub validation_data: Option<PathBuf>,
    /// After training, score the test files of an IDX directory (t10k-*).
    #[arg(long)]
    pub evaluate_test: bool,
}

/// The network.
#[derive(Debug, Args)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// Hidden layer sizes, comma-separated; an empty string trains a linear or logistic model.
    #[arg(long, default_value = "128,64", value_name = "SIZES")]
    pub layers: String,
    /// Activation of the hidden layers.
    #[arg(long, default_value = "relu",
          value_parser = ["relu", "leaky_relu", "elu", "tanh", "sigmoid"])]
    pub activation: String,
    /// Weight initialisation of the hidden layers [default: he for the relu family,
    /// glorot otherwise]
    #[arg(long, value_parser = ["he", "glorot", "lecun"])]
    pub init: Option<String>,
    /// Dropout rate after each hidden layer, at least 0 and below 1.
    #[arg(long, default_value_t = 0.0)]
    pub dropout: f32,
}

/// The optimizer.
#[derive(Debug, Args)]
#[command(next_help_heading = "Optimizer")]
pub struct OptimizerArgs {
    /// Optimizer.
    #[arg(long, default_value = "adam", value_parser = ["sgd", "adam", "adamw", "rmsprop"])]
    pub optimizer: String,
    /// Learning rate [default: 0.01 for sgd, 0.001 otherwise]
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f32>,
    /// Momentum of sgd or rmsprop [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    pub momentum: Option<f32>,
    /// Nesterov momentum (sgd with --momentum).
    #[arg(long)]
    pub nesterov: bool,
    /// Adam's first-moment decay [default: 0.9]
    #[arg(long, allow_negative_numbers = true)]
    pub beta1: Option<f32>,
    /// Adam's second-moment decay [default: 0.999]
    #[arg(long, allow_negative_numbers = true)]
    pub beta2: Option<f32>,
    /// Epsilon of adam, adamw and rmsprop [default: 1e-7]
    #[arg(long, allow_negative_numbers = true)]
    pub epsilon: Option<f32>,
    /// Where adam adds epsilon: to sqrt of the uncorrected second moment (keras) or of the
    /// bias-corrected one (pytorch).
    #[arg(long, default_value = "keras", value_parser = ["keras", "pytorch"])]
    pub epsilon_style: String,
    /// RMSprop's decay of the squared-gradient average [default: 0.9]
    #[arg(long, allow_negative_numbers = true)]
    pub rho: Option<f32>,
    /// L2 penalty factor on weights: adds l2 * sum(w^2) to the loss.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub l2: f32,
    /// Decoupled weight decay on weights [default: 0.004 for adamw, 0 otherwise]
    #[arg(long, allow_negative_numbers = true)]
    pub weight_decay: Option<f32>,
    /// Clip gradients to this global L2 norm.
    #[arg(long, allow_negative_numbers = true)]
    pub clipnorm: Option<f32>,
    /// Weight each class's loss by n / (classes * class count).
    #[arg(long, value_parser = ["balanced"])]
    pub class_weight: Option<String>,
}

/// The fit loop, early stopping, output and device.
#[derive(Debug, Args)]
#[command(next_help_heading = "Training")]
pub struct FitArgs {
    /// Number of epochs.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Rows per batch; the last partial batch is used.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Keep the training rows in file order instead of shuffling every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Seed of initialisation, shuffling, splits and dropout [default: random, printed]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop after this many epochs without improvement [default: no early stopping]
    #[arg(long)]
    pub patience: Option<usize>,
    /// Smallest change of the monitored quantity that counts as an improvement.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub min_delta: f64,
    /// Quantity watched by early stopping and best-weight restoring
    /// [default: val_loss, or loss without validation]
    #[arg(long, value_name = "NAME")]
    pub monitor: Option<String>,
    /// Direction of improvement.
    #[arg(long, default_value = "auto", value_parser = ["auto", "min", "max"])]
    pub mode: String,
    /// Ignore the first N epochs for early stopping and the best epoch.
    #[arg(long, default_value_t = 0)]
    pub start_from_epoch: usize,
    /// Keep the last epoch's weights instead of the best epoch's.
    #[arg(long)]
    pub no_restore_best_weights: bool,
    /// 0 silent, 1 progress bar per epoch, 2 one line per epoch.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub verbose: u8,
    /// CPU threads [default: all cores]
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Precision of the matrix products: f32, bf16 or f16 (the half types need a GPU).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    pub precision: String,
    /// Run directory [default: a new numbered directory under runs/]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}
