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
    /// Learning-rate range test: sweep the rate, plot the loss, suggest a rate.
    LrFind(Box<crate::cli::lr_find::LrFindArgs>),
    /// Train several layer sizes, activations, optimizers or rates and compare them.
    Sweep(Box<crate::cli::sweep::SweepArgs>),
    /// K-fold cross-validation: held-out metrics per fold, mean and spread.
    Cv(Box<crate::cli::cv::CvArgs>),
    /// Show the GPUs, driver, CUDA libraries and kernel images found.
    Info(crate::cli::info::InfoArgs),
    /// Score a saved model: loss, accuracy, confusion matrix, per-class scores, or MAE,
    /// RMSE and R².
    Evaluate(Box<crate::cli::evaluate::EvaluateArgs>),
    /// Write a saved model's predictions for new rows as CSV.
    Predict(Box<crate::cli::predict::PredictArgs>),
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
    #[command(flatten)]
    pub control: RunControlArgs,
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
    #[arg(
        long,
        default_value = "128,64",
        value_name = "SIZES",
        allow_hyphen_values = true
    )]
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
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub dropout: f32,
}

/// The optimizer.
#[derive(Clone, Debug, Args)]
#[command(next_help_heading = "Optimizer")]
pub struct OptimizerArgs {
    /// Optimizer [default: adam; sgd for lr-find]
    #[arg(long, value_parser = ["sgd", "adam", "adamw", "rmsprop"])]
    pub optimizer: Option<String>,
    /// Learning rate, or `auto` to run the learning-rate range test first and train with
    /// its suggestion [default: 0.01 for sgd, 0.001 otherwise]
    #[arg(long, allow_negative_numbers = true, value_parser = parse_learning_rate)]
    pub lr: Option<LearningRate>,
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

/// A `--lr` value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LearningRate {
    /// A fixed rate.
    Value(f32),
    /// The suggestion of a learning-rate range test.
    Auto,
}

fn parse_learning_rate(text: &str) -> Result<LearningRate, String> {
    if text == "auto" {
        return Ok(LearningRate::Auto);
    }
    text.parse::<f32>()
        .map(LearningRate::Value)
        .map_err(|_| format!("'{text}' is not a number or 'auto'; expected e.g. 0.001 or auto"))
}

/// The fit loop, early stopping, output and device.
#[derive(Debug, Args)]
#[command(next_help_heading = "Training")]
pub struct FitArgs {
    /// Number of epochs.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = positive_number)]
    pub epochs: usize,
    /// Rows per batch; the last partial batch is used.
    #[arg(long, default_value_t = 32, allow_negative_numbers = true, value_parser = positive_number)]
    pub batch_size: usize,
    /// Keep the training rows in file order instead of shuffling every epoch.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Seed of initialisation, shuffling, splits and dropout [default: random, printed]
    #[arg(long, allow_negative_numbers = true, value_parser = seed_number)]
    pub seed: Option<u64>,
    /// Stop after this many epochs without improvement [default: no early stopping]
    #[arg(long, allow_negative_numbers = true, value_parser = whole_number)]
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
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = whole_number)]
    pub start_from_epoch: usize,
    /// Keep the last epoch's weights instead of the best epoch's.
    #[arg(long)]
    pub no_restore_best_weights: bool,
    /// Skip the per-epoch diagnostics (dead units, gradient sizes) and their warnings.
    #[arg(long)]
    pub no_diagnostics: bool,
    /// 0 silent, 1 progress bar per epoch, 2 one line per epoch.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true,
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub verbose: u8,
    /// CPU threads [default: all cores]
    #[arg(long, default_value_t = 0, hide_default_value = true, allow_negative_numbers = true,
          value_parser = whole_number)]
    pub threads: usize,
    /// Device: auto (a GPU when one works, else the CPU), cpu, cuda or cuda:N (GPU number N).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Precision of the matrix products: f32, bf16 or f16 (the half types need a GPU and keep
    /// f32 master weights).
    #[arg(long, default_value = "f32", value_parser = ["f32", "bf16", "f16"])]
    pub precision: String,
    /// Let f32 matrix products on the GPU use TF32 tensor cores (faster, about 3 significant
    /// digits per input).
    #[arg(long)]
    pub allow_tf32: bool,
    /// Run directory [default: a new numbered directory under runs/]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Checkpoints, resuming, fine-tuning and learning-rate control (`train` only).
#[derive(Debug, Args)]
#[command(next_help_heading = "Checkpoints and learning rate")]
pub struct RunControlArgs {
    /// Continue the run in RUN_DIR from its last checkpoint, appending to its history. Every
    /// option comes from the run; only --epochs (the total to reach), --patience, --verbose,
    /// --threads and --device may be given.
    #[arg(long, value_name = "RUN_DIR")]
    pub resume: Option<PathBuf>,
    /// Start from the weights of a saved model (a run directory or its model.json) instead
    /// of random ones. The data must have the model's columns and classes, and the model's
    /// fitted scaling is applied.
    #[arg(long, value_name = "MODEL", conflicts_with = "resume")]
    pub initial_model: Option<PathBuf>,
    /// Also write a checkpoint every N batches; one is always written at the end of every
    /// epoch, into RUN/checkpoints/.
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = whole_number)]
    pub checkpoint_every: Option<usize>,
    /// Keep the best epoch's model in RUN/checkpoints/best/ while training runs.
    #[arg(long)]
    pub checkpoint_best: bool,
    /// Multiply the learning rate by --reduce-lr-factor when the monitored quantity
    /// (--monitor) has not improved for --reduce-lr-patience epochs (Keras's
    /// ReduceLROnPlateau).
    #[arg(long)]
    pub reduce_lr_on_plateau: bool,
    /// Epochs without improvement before the rate drops [default: 10]
    #[arg(long, value_name = "EPOCHS")]
    pub reduce_lr_patience: Option<usize>,
    /// Factor applied to the rate, above 0 and below 1 [default: 0.1]
    #[arg(long, allow_negative_numbers = true)]
    pub reduce_lr_factor: Option<f64>,
    /// An epoch improves only if it beats the best by more than this [default: 1e-4]
    #[arg(long, allow_negative_numbers = true)]
    pub reduce_lr_min_delta: Option<f64>,
    /// Epochs after a reduction before epochs count as waiting again [default: 0]
    #[arg(long, value_name = "EPOCHS")]
    pub reduce_lr_cooldown: Option<usize>,
    /// Lowest rate --reduce-lr-on-plateau goes to, and the final rate of --lr-schedule cosine
    /// [default: 0]
    #[arg(long, allow_negative_numbers = true)]
    pub min_lr: Option<f64>,
    /// Learning-rate schedule, applied per epoch from --lr: step (times --lr-gamma every
    /// --lr-step-size epochs), exponential (times --lr-gamma every epoch) or cosine (from --lr
    /// down to --min-lr over --lr-cosine-epochs epochs).
    #[arg(long, value_parser = ["constant", "step", "exponential", "cosine"],
          default_value = "constant")]
    pub lr_schedule: String,
    /// Epochs between the drops of --lr-schedule step [default: 10]
    #[arg(long, value_name = "EPOCHS")]
    pub lr_step_size: Option<usize>,
    /// Factor of --lr-schedule step [default: 0.1] or exponential [default: 0.95]
    #[arg(long, allow_negative_numbers = true)]
    pub lr_gamma: Option<f64>,
    /// Length of the cosine decay of --lr-schedule cosine [default: --epochs]
    #[arg(long, value_name = "EPOCHS")]
    pub lr_cosine_epochs: Option<usize>,
}

/// Parses a count of at least 1, naming the accepted range in the error.
fn positive_number(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(value) if value >= 1 => Ok(value),
        _ => Err(format!(
            "expected a whole number of at least 1, got '{text}'"
        )),
    }
}

/// Parses a count that may be 0, naming the accepted range in the error.
pub(crate) fn whole_number(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .map_err(|_| format!("expected a whole number of at least 0, got '{text}'"))
}

/// Parses `--seed`.
fn seed_number(text: &str) -> Result<u64, String> {
    text.trim().parse::<u64>().map_err(|_| {
        format!(
            "expected a whole number from 0 to {}, got '{text}'",
            u64::MAX
        )
    })
}
