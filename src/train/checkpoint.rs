//! Checkpoints: everything a fit needs to continue exactly where it stopped.
//!
//! A checkpoint is one safetensors file, so one atomic rename replaces it.
//! Its tensors (f32, little-endian) are the current weights
//! (`weights.layers.{i}.weight` `[out, in]`, `weights.layers.{i}.bias`), the
//! optimizer state (`optimizer.{k}`, in the order of
//! [`Network::optimizer_state`](crate::model::Network::optimizer_state)),
//! the best epoch's weights (`best.layers...`) and the weights at the end of
//! the last completed epoch (`last_epoch.layers...`). The header's metadata
//! contains `format`, `version`, `state` (the [`TrainingState`] as JSON) and
//! `run` (JSON the caller adds, such as the command line, the split
//! indices and the data fingerprint).
//!
//! Random draws need no generator state: the shuffle of an epoch is a
//! function of the seed and the epoch, and a dropout mask of the seed and the
//! step, so the counters are enough.

use crate::backend::StatsValues;
use crate::data::Dataset;
use crate::model::file::{NamedTensors, push_layer_tensors, push_vector, write_safetensors_atomic};
use crate::model::{LayerParams, ModelSpec, Params};
use crate::optim::OptimizerConfig;
use crate::train::early_stopping::EarlyStoppingState;
use crate::train::history::EpochRecord;
use crate::train::schedule::LrSnapshot;
use anyhow::{Context, Result, bail};
use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

/// Value of the `format` metadata entry.
pub const FORMAT: &str = "densetrain-checkpoint";
/// Version of the checkpoint layout.
pub const VERSION: u32 = 1;

/// Training accumulators of a partly run epoch, as in [`StatsValues`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningStats {
    /// Sum of the per-row losses.
    pub loss_sum: f64,
    /// Rows seen.
    pub rows: f64,
    /// Correct predictions.
    pub correct: f64,
    /// Sum of absolute errors (training units).
    pub abs_error_sum: f64,
    /// Sum of the L2 penalties.
    pub penalty_sum: f64,
    /// Batch of the first non-finite loss.
    pub nonfinite_batch: Option<u64>,
}

impl From<StatsValues> for RunningStats {
    fn from(v: StatsValues) -> Self {
        Self {
            loss_sum: v.loss_sum,
            rows: v.rows,
            correct: v.correct,
            abs_error_sum: v.abs_error_sum,
            penalty_sum: v.penalty_sum,
            nonfinite_batch: v.nonfinite_batch,
        }
    }
}

impl From<RunningStats> for StatsValues {
    fn from(v: RunningStats) -> Self {
        Self {
            loss_sum: v.loss_sum,
            rows: v.rows,
            correct: v.correct,
            abs_error_sum: v.abs_error_sum,
            penalty_sum: v.penalty_sum,
            nonfinite_batch: v.nonfinite_batch,
        }
    }
}

/// Counters and small state of a fit, stored as JSON in the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// The architecture the tensors have.
    pub spec: ModelSpec,
    /// The optimizer settings (the base learning rate included).
    pub optimizer: OptimizerConfig,
    /// Epochs completed.
    pub epochs_completed: usize,
    /// Batches already run in epoch `epochs_completed + 1`; 0 at an epoch's end.
    pub batches_done: usize,
    /// Optimizer steps run so far (Adam's `t` and the dropout key continue from it).
    pub step: u64,
    /// Accumulators of the partly run epoch, when `batches_done > 0`.
    pub running: Option<RunningStats>,
    /// Epoch whose weights are in `best` (0 for the initial weights).
    pub best_saved: usize,
    /// Early stopping counters.
    pub early_stopping: EarlyStoppingState,
    /// Learning-rate state.
    pub lr: LrSnapshot,
    /// Completed epochs.
    pub history: Vec<EpochRecord>,
    /// Names of the extra history columns (diagnostics).
    pub extra_columns: Vec<String>,
    /// Values of the extra columns, one row per completed epoch.
    pub extra_rows: Vec<Vec<f64>>,
    /// Seconds spent in training passes so far.
    pub train_seconds: f64,
    /// Partial-epoch accumulators of the training diagnostics, when they are on.
    #[serde(default)]
    pub diagnostics: Option<DiagnosticsAccumulators>,
}

/// Partial-epoch accumulators of the training diagnostics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiagnosticsAccumulators {
    /// `sum(dw^2)` of each layer over the epoch's batches so far.
    pub sums: Vec<f32>,
    /// Batches added so far.
    pub batches: usize,
}

/// A checkpoint in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// Counters and small state.
    pub state: TrainingState,
    /// Current weights.
    pub params: Params,
    /// Optimizer state buffers.
    pub optimizer_state: Vec<Vec<f32>>,
    /// Weights of the best epoch so far (the initial weights before one).
    pub best: Params,
    /// Weights at the end of the last completed epoch (the initial weights before one).
    pub last_epoch: Params,
}

/// Reason the fit loop wrote a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointKind {
    /// The end of an epoch; `improved` when it is the new best.
    EpochEnd { improved: bool },
    /// `--checkpoint-every` batches passed.
    Periodic,
    /// A stop was requested (a signal); the fit returns right after.
    Interrupt,
}

/// Serialises `checkpoint` with the caller's `run` metadata (JSON).
pub fn encode(checkpoint: &Checkpoint, run: &serde_json::Value) -> Result<Vec<u8>> {
    safetensors::serialize(tensors_of(checkpoint), Some(metadata_of(checkpoint, run)?))
        .context("failed to serialise the checkpoint")
}

/// Lists the tensors of a checkpoint, borrowed from it.
fn tensors_of(checkpoint: &Checkpoint) -> NamedTensors<'_> {
    let mut tensors = NamedTensors::new();
    push_layer_tensors(&mut tensors, "weights.", &checkpoint.params);
    push_layer_tensors(&mut tensors, "best.", &checkpoint.best);
    push_layer_tensors(&mut tensors, "last_epoch.", &checkpoint.last_epoch);
    for (k, buffer) in checkpoint.optimizer_state.iter().enumerate() {
        push_vector(&mut tensors, format!("optimizer.{k}"), buffer);
    }
    tensors
}

fn metadata_of(
    checkpoint: &Checkpoint,
    run: &serde_json::Value,
) -> Result<HashMap<String, String>> {
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), FORMAT.to_string());
    metadata.insert("version".to_string(), VERSION.to_string());
    metadata.insert(
        "state".to_string(),
        serde_json::to_string(&checkpoint.state).context("failed to encode the training state")?,
    );
    metadata.insert("run".to_string(), run.to_string());
    Ok(metadata)
}

/// Reads a checkpoint and its `run` metadata from `bytes` read from `origin`.
pub fn decode(bytes: &[u8], origin: &Path) -> Result<(Checkpoint, serde_json::Value)> {
    let invalid = || {
        format!(
            "{} is not a valid densetrain checkpoint (damaged or not written by densetrain); \
             the run cannot resume from it, so start a new run with the same options",
            origin.display()
        )
    };
    let (_, header) = SafeTensors::read_metadata(bytes).with_context(invalid)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let entry = |key: &str| -> Result<&String> {
        metadata
            .get(key)
            .with_context(|| format!("{}: the '{key}' metadata entry is missing", invalid()))
    };
    if entry("format")? != FORMAT {
        bail!("{}: its format is '{}'", invalid(), entry("format")?);
    }
    let version: u32 = entry("version")?.parse().with_context(invalid)?;
    if version > VERSION {
        bail!(
            "{}: checkpoint version {version} is newer than this densetrain reads \
             ({VERSION}); use the densetrain that wrote it",
            origin.display()
        );
    }
    let state: TrainingState = serde_json::from_str(entry("state")?).with_context(invalid)?;
    let run: serde_json::Value = serde_json::from_str(entry("run")?).with_context(invalid)?;
    let tensors = SafeTensors::deserialize(bytes).with_context(invalid)?;
    let read = |name: &str, len: usize| -> Result<Vec<f32>> {
        let view = tensors
            .tensor(name)
            .with_context(|| format!("{}: tensor '{name}' is missing", invalid()))?;
        if view.dtype() != Dtype::F32 || view.data().len() != 4 * len {
            bail!(
                "{}: tensor '{name}' has {} bytes of {:?}, expected {len} f32 values",
                invalid(),
                view.data().len(),
                view.dtype()
            );
        }
        let values = f32_values(view.data());
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            bail!(
                "{}: tensor '{name}' contains a non-finite value ({}) at index {index}",
                invalid(),
                values[index]
            );
        }
        Ok(values)
    };
    let read_params = |prefix: &str| -> Result<Params> {
        let mut layers = Vec::new();
        for (i, (inputs, outputs)) in state.spec.layer_shapes().into_iter().enumerate() {
            layers.push(LayerParams {
                inputs,
                outputs,
                w: read(&format!("{prefix}.layers.{i}.weight"), inputs * outputs)?,
                b: read(&format!("{prefix}.layers.{i}.bias"), outputs)?,
            });
        }
        Ok(Params { layers })
    };
    let params = read_params("weights")?;
    let best = read_params("best")?;
    let last_epoch = read_params("last_epoch")?;
    let mut optimizer_state = Vec::new();
    for k in 0.. {
        let name = format!("optimizer.{k}");
        let Ok(view) = tensors.tensor(&name) else {
            break;
        };
        optimizer_state.push(read(&name, view.data().len() / 4)?);
    }
    let checkpoint = Checkpoint {
        state,
        params,
        optimizer_state,
        best,
        last_epoch,
    };
    Ok((checkpoint, run))
}

/// Reads the checkpoint file at `path`.
pub fn read(path: &Path) -> Result<(Checkpoint, serde_json::Value)> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("failed to read the checkpoint {}", path.display()))?;
    decode(&bytes, path)
}

/// Writes `checkpoint` to `path` atomically (a flushed temporary file, then a rename).
pub fn write(path: &Path, checkpoint: &Checkpoint, run: &serde_json::Value) -> Result<()> {
    let metadata = metadata_of(checkpoint, run)?;
    write_safetensors_atomic(path, tensors_of(checkpoint), Some(metadata))
        .context("failed to save the checkpoint")
}

/// Returns a fingerprint of the rows and targets of `parts`, as 16 hex digits.
///
/// It is a 64-bit hash of every dimension and value bit pattern (SplitMix64
/// mixing), not a cryptographic digest: it detects changed data, not
/// deliberate collisions.
pub fn data_fingerprint(parts: &[&Dataset]) -> String {
    let mut hash = crate::rng::mix64(parts.len() as u64);
    let mut feed = |value: u64| hash = crate::rng::mix64(hash ^ value);
    for part in parts {
        feed(part.rows as u64);
        feed(part.cols as u64);
        feed(part.y.len() as u64);
        for pair in part.x.chunks(2).chain(part.y.chunks(2)) {
            let low = u64::from(pair[0].to_bits());
            let high = pair.get(1).map_or(0, |v| u64::from(v.to_bits()));
            feed(low | (high << 32));
        }
    }
    format!("{hash:016x}")
}

fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LossKind;
    use crate::model::{Activation, Init};
    use crate::optim::Optimizer;
    use crate::train::schedule::PlateauState;

    fn spec() -> ModelSpec {
        ModelSpec {
            inputs: 3,
            hidden: vec![2],
            activation: Activation::Relu,
            outputs: 4,
            loss: LossKind::SoftmaxCrossEntropy,
            init: Init::He,
            dropout: 0.0,
        }
    }

    fn params(offset: f32) -> Params {
        Params {
            layers: spec()
                .layer_shapes()
                .into_iter()
                .map(|(i, o)| LayerParams {
                    inputs: i,
                    outputs: o,
                    w: (0..i * o).map(|k| k as f32 * 0.1 + offset).collect(),
                    b: (0..o).map(|k| -(k as f32) - offset).collect(),
                })
                .collect(),
        }
    }

    fn sample() -> Checkpoint {
        Checkpoint {
            state: TrainingState {
                spec: spec(),
                optimizer: crate::optim::OptimizerConfig {
                    optimizer: Optimizer::with_defaults("adam").unwrap(),
                    lr: 1e-3,
                    l2: 0.0,
                    weight_decay: 0.0,
                    clipnorm: None,
                },
                epochs_completed: 2,
                batches_done: 3,
                step: 17,
                running: Some(RunningStats {
                    loss_sum: 0.1 + 0.2,
                    rows: 96.0,
                    correct: 50.0,
                    abs_error_sum: 0.0,
                    penalty_sum: 1e-300,
                    nonfinite_batch: None,
                }),
                best_saved: 1,
                early_stopping: EarlyStoppingState {
                    best: Some(std::f64::consts::PI),
                    best_epoch: Some(1),
                    wait: 1,
                },
                lr: LrSnapshot {
                    current: 1e-3,
                    plateau: Some(PlateauState {
                        best: Some(0.3),
                        wait: 1,
                        cooldown_counter: 0,
                    }),
                },
                history: Vec::new(),
                extra_columns: vec!["grad_rms_1".to_string()],
                extra_rows: vec![vec![1.0 / 3.0], vec![2.0 / 3.0]],
                train_seconds: 0.5,
                diagnostics: Some(DiagnosticsAccumulators {
                    sums: vec![0.1, 1e-30],
                    batches: 3,
                }),
            },
            params: params(0.0),
            optimizer_state: vec![vec![0.25; 6], vec![1e-8; 6], vec![0.5; 2]],
            best: params(1.0),
            last_epoch: params(2.0),
        }
    }

    #[test]
    fn checkpoint_round_trips_bit_for_bit() {
        let checkpoint = sample();
        let run = serde_json::json!({"seed": 7, "validation_rows": [4, 5]});
        let bytes = encode(&checkpoint, &run).unwrap();
        let (back, run_back) = decode(&bytes, Path::new("c")).unwrap();
        assert_eq!(back, checkpoint);
        assert_eq!(run_back, run);
    }

    #[test]
    fn checkpoint_is_a_valid_safetensors_file() {
        let bytes = encode(&sample(), &serde_json::Value::Null).unwrap();
        let tensors = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            tensors.tensor("weights.layers.0.weight").unwrap().shape(),
            &[2, 3]
        );
        assert_eq!(tensors.tensor("best.layers.1.bias").unwrap().shape(), &[4]);
        assert_eq!(tensors.tensor("optimizer.2").unwrap().shape(), &[2]);
    }

    #[test]
    fn model_file_is_not_a_checkpoint() {
        let bytes = crate::model::file::weights_to_safetensors(&params(0.0)).unwrap();
        let err = decode(&bytes, Path::new("model.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a valid densetrain checkpoint"), "{err}");
    }

    #[test]
    fn non_finite_checkpoint_is_rejected() {
        let mut broken = sample();
        broken.optimizer_state[1][0] = f32::INFINITY;
        let bytes = encode(&broken, &serde_json::Value::Null).unwrap();
        let err = decode(&bytes, Path::new("c")).unwrap_err().to_string();
        assert!(err.contains("'optimizer.1'"), "{err}");
        assert!(err.contains("non-finite value (inf) at index 0"), "{err}");
        assert!(err.contains("start a new run"), "{err}");

        let mut broken = sample();
        broken.params.layers[0].w[2] = f32::NAN;
        let bytes = encode(&broken, &serde_json::Value::Null).unwrap();
        let err = decode(&bytes, Path::new("c")).unwrap_err().to_string();
        assert!(err.contains("'weights.layers.0.weight'"), "{err}");
    }

    #[test]
    fn interrupted_write_leaves_the_old_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.safetensors");
        let old = sample();
        write(&path, &old, &serde_json::Value::Null).unwrap();

        // A crash between the write of the temporary file and the rename.
        let mut new = sample();
        new.state.step = 99;
        let bytes = encode(&new, &serde_json::Value::Null).unwrap();
        let tmp = crate::model::file::write_temporary(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(tmp.exists());
        let (loaded, _) = read(&path).unwrap();
        assert_eq!(loaded.state.step, 17);

        // The next write replaces the stale temporary file and the checkpoint.
        write(&path, &new, &serde_json::Value::Null).unwrap();
        assert!(!tmp.exists());
        assert_eq!(read(&path).unwrap().0.state.step, 99);
    }

    #[test]
    fn fingerprint_changes_with_any_value() {
        let data = Dataset {
            x: vec![1.0, 2.0, 3.0, 4.0],
            y: vec![0.0, 1.0],
            rows: 2,
            cols: 2,
        };
        let base = data_fingerprint(&[&data]);
        assert_eq!(base.len(), 16);
        let mut changed = data.clone();
        changed.x[3] = 4.000001;
        assert_ne!(data_fingerprint(&[&changed]), base);
        let mut relabelled = data.clone();
        relabelled.y[0] = 1.0;
        assert_ne!(data_fingerprint(&[&relabelled]), base);
        assert_ne!(data_fingerprint(&[&data, &Dataset::default()]), base);
    }
}
