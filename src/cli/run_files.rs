//! Files of a run directory beyond the model: `run.json` (what is needed to
//! resume the run or score its validation part again) and the checkpoints.
//!
//! ```text
//! RUN/model.safetensors, RUN/model.json    the trained model
//! RUN/history.csv                          one row per completed epoch
//! RUN/run.json                             command line, split indices, data fingerprint
//! RUN/checkpoints/checkpoint.safetensors   the latest checkpoint (see train::checkpoint)
//! RUN/checkpoints/best/                    the best epoch's model (--checkpoint-best)
//! ```

use crate::cli::args::{Cli, Command, TrainArgs};
use crate::data::PreparedData;
use crate::model::file::{self, ModelMetadata};
use crate::train::History;
use crate::train::checkpoint::{self, Checkpoint, CheckpointKind};
use anyhow::{Context, Result, bail};
use clap::Parser;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};

/// File name of the run record.
pub const RUN_FILE: &str = "run.json";
/// Directory of the checkpoints inside a run directory.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// File name of the latest checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
/// Directory of the best epoch's model inside [`CHECKPOINT_DIR`].
pub const BEST_DIR: &str = "best";
/// Value of `format` in run.json.
pub const RUN_FORMAT: &str = "densetrain-run";

/// Data names that `--data` reads as built-in sets rather than paths.
const DATA_NAMES: [&str; 3] = ["digits", "fashion-mnist", "fashion_mnist"];

/// Contents of run.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Always [`RUN_FORMAT`].
    pub format: String,
    /// Layout version (1).
    pub version: u32,
    /// The arguments after the program name, with a random seed and the
    /// cosine length made explicit, so parsing them again gives the same run.
    pub command_line: Vec<String>,
    /// Directory that relative paths in `command_line` are relative to.
    pub working_directory: PathBuf,
    /// The data source, for messages.
    pub data: String,
    /// Fingerprint of the encoded training and validation parts.
    pub fingerprint: String,
    /// Source rows (from 0) of the training part.
    pub train_indices: Vec<usize>,
    /// Source rows of the validation part (empty with a validation file or no validation).
    pub validation_indices: Vec<usize>,
    /// Rows of the training part.
    pub train_rows: usize,
    /// Rows of the validation part (also with a validation file).
    pub validation_rows: usize,
    /// Rows per validation pass of the fit, which evaluation reuses so its sums match.
    pub batch_capacity: usize,
}

impl RunRecord {
    /// Builds the record of a new run from its options and prepared data.
    pub fn new(args: &TrainArgs, seed: u64, prepared: &PreparedData) -> Result<Self> {
        let mut command_line: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        if args.fit.seed.is_none() {
            command_line.extend(["--seed".to_string(), seed.to_string()]);
        }
        if args.control.lr_schedule == "cosine" && args.control.lr_cosine_epochs.is_none() {
            command_line.extend([
                "--lr-cosine-epochs".to_string(),
                args.fit.epochs.to_string(),
            ]);
        }
        let working_directory =
            std::env::current_dir().context("failed to read the working directory")?;
        let validation_rows = prepared.validation.as_ref().map_or(0, |v| v.rows);
        Ok(Self {
            format: RUN_FORMAT.to_string(),
            version: 1,
            command_line,
            working_directory,
            data: describe_data(args),
            fingerprint: fingerprint(prepared),
            train_indices: prepared.train_rows.clone(),
            validation_indices: prepared.validation_rows.clone(),
            train_rows: prepared.train.rows,
            validation_rows,
            batch_capacity: crate::train::batch_capacity(
                args.fit.batch_size,
                prepared.train.rows,
                validation_rows,
            ),
        })
    }

    /// Reads `dir/run.json`.
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(RUN_FILE);
        let text = fs::read_to_string(&path)
            .with_context(|| format!("failed to read {}", path.display()))?;
        let record: RunRecord = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a valid densetrain run.json", path.display()))?;
        if record.format != RUN_FORMAT || record.version > 1 {
            bail!(
                "{}: format '{}' version {} is not supported",
                path.display(),
                record.format,
                record.version
            );
        }
        Ok(record)
    }

    /// Writes `dir/run.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).context("failed to encode run.json")?;
        file::write_atomic(&dir.join(RUN_FILE), json.as_bytes())
    }

    /// Returns the record as JSON, for the checkpoint metadata.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).context("failed to encode run.json")
    }

    /// Parses the stored command line into `train` options, with relative
    /// paths resolved against the stored working directory.
    pub fn train_args(&self) -> Result<TrainArgs> {
        let program = std::iter::once("densetrain".to_string());
        let cli = Cli::try_parse_from(program.chain(self.command_line.iter().cloned()))
            .map_err(|e| anyhow::anyhow!("{}", e.render()))
            .context("the run's stored command line no longer parses")?;
        let Command::Train(mut args) = cli.command else {
            bail!("the run's stored command line is not a train command");
        };
        let base = &self.working_directory;
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        if let Some(data) = &mut args.data.data {
            if !DATA_NAMES.contains(&data.as_str()) && Path::new(data).is_relative() {
                *data = base.join(&*data).to_string_lossy().into_owned();
            }
        }
        for path in [
            args.data.images.as_mut(),
            args.data.labels.as_mut(),
            args.data.validation_data.as_mut(),
            args.control.initial_model.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            resolve(path);
        }
        Ok(*args)
    }

    /// Checks that `prepared` has the rows and values this run was trained
    /// on; the error names what differs.
    pub fn check_data(&self, prepared: &PreparedData) -> Result<()> {
        let validation_rows = prepared.validation.as_ref().map_or(0, |v| v.rows);
        let now = prepared.train.rows + validation_rows;
        let then = self.train_rows + self.validation_rows;
        if now != then {
            bail!(
                "the data changed since the run started: {} now gives {now} rows, the run \
                 had {then}; use the original data, or start a new run",
                self.data
            );
        }
        if prepared.train_rows != self.train_indices
            || prepared.validation_rows != self.validation_indices
        {
            bail!(
                "the data changed since the run started: the split of {} now selects other \
                 rows ({} training, {validation_rows} validation) than the run's ({} and {})",
                self.data,
                prepared.train.rows,
                self.train_rows,
                self.validation_rows
            );
        }
        let current = fingerprint(prepared);
        if current != self.fingerprint {
            bail!(
                "the data changed since the run started: the values of {} differ (fingerprint \
                 {current}, the run's {}); use the original data, or start a new run",
                self.data,
                self.fingerprint
            );
        }
        Ok(())
    }
}

/// Fingerprint of the encoded training and validation parts.
pub fn fingerprint(prepared: &PreparedData) -> String {
    let mut parts = vec![&prepared.train];
    parts.extend(prepared.validation.as_ref());
    checkpoint::data_fingerprint(&parts)
}

fn describe_data(args: &TrainArgs) -> String {
    match (&args.data.data, &args.data.images, &args.data.labels) {
        (_, Some(images), Some(labels)) => {
            format!("{} and {}", images.display(), labels.display())
        }
        (Some(data), _, _) => data.clone(),
        _ => "digits".to_string(),
    }
}

/// Path of the latest checkpoint of run directory `dir`.
pub fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_DIR).join(CHECKPOINT_FILE)
}

/// Writes the checkpoints of a fit, the history at each epoch's end, and the
/// best epoch's model with `--checkpoint-best`.
pub struct CheckpointWriter {
    dir: PathBuf,
    run: serde_json::Value,
    history: History,
    best_model: Option<ModelMetadata>,
}

impl CheckpointWriter {
    /// Creates the writer for run directory `dir`. `history` is an empty
    /// history with the run's columns; `best_model`, when given, is the
    /// model.json written with the best epoch's weights.
    pub fn new(
        dir: &Path,
        record: &RunRecord,
        history: History,
        best_model: Option<ModelMetadata>,
    ) -> Result<Self> {
        let checkpoints = dir.join(CHECKPOINT_DIR);
        fs::create_dir_all(&checkpoints)
            .with_context(|| format!("failed to create {}", checkpoints.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            run: record.to_json()?,
            history,
            best_model,
        })
    }

    /// Writes `checkpoint`; see the type's documentation.
    pub fn write(&mut self, checkpoint: &Checkpoint, kind: CheckpointKind) -> Result<()> {
        checkpoint::write(&checkpoint_path(&self.dir), checkpoint, &self.run)?;
        let CheckpointKind::EpochEnd { improved } = kind else {
            return Ok(());
        };
        let state = &checkpoint.state;
        self.history.epochs = state.history.clone();
        self.history.extra_columns = state.extra_columns.clone();
        self.history.extra_rows = state.extra_rows.clone();
        self.history.write_csv(&self.dir.join("history.csv"))?;
        if let (true, Some(template)) = (improved, &self.best_model) {
            let epoch = state.epochs_completed;
            let mut metadata = template.clone();
            metadata.training.epochs_run = epoch;
            metadata.training.saved_epoch = Some(epoch);
            metadata.training.best_epoch = Some(epoch);
            let best_dir = self.dir.join(CHECKPOINT_DIR).join(BEST_DIR);
            fs::create_dir_all(&best_dir)
                .with_context(|| format!("failed to create {}", best_dir.display()))?;
            file::save(&best_dir, &metadata, &checkpoint.best)?;
        }
        Ok(())
    }
}
