//! Model files: `model.safetensors` (weights) plus `model.json` (everything else).
//!
//! Tensor names: layer `i` (0 is the first hidden layer, the last is the
//! output layer) is stored as `layers.{i}.weight` with shape `[out, in]` and
//! `layers.{i}.bias` with shape `[out]`, f32 little-endian, exactly as
//! PyTorch's `torch.nn.Linear(in, out)` keeps `weight` and `bias`. Every write
//! goes to a temporary file in the same directory that is flushed and then
//! renamed, so a crash leaves either the old file or the new one.

use crate::data::Preprocessor;
use crate::model::{LayerParams, ModelSpec, Params};
use crate::optim::OptimizerConfig;
use anyhow::{Context, Result, bail};
use safetensors::tensor::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// File name of the weights inside a run directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the metadata inside a run directory.
pub const METADATA_FILE: &str = "model.json";
/// Value of `format` in model.json.
pub const FORMAT: &str = "densetrain-model";
/// Version of the model.json layout.
pub const FORMAT_VERSION: u32 = 1;

/// How the saved weights were produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    /// The optimizer settings.
    pub optimizer: OptimizerConfig,
    /// The run's seed.
    pub seed: u64,
    /// Epochs completed.
    pub epochs_run: usize,
    /// Epoch (from 1) whose weights were saved.
    pub saved_epoch: Option<usize>,
    /// Epoch (from 1) with the best monitored value.
    pub best_epoch: Option<usize>,
    /// The monitored quantity.
    pub monitor: String,
}

/// Contents of model.json.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Always [`FORMAT`].
    pub format: String,
    /// Layout version, [`FORMAT_VERSION`].
    pub version: u32,
    /// The network architecture.
    pub architecture: ModelSpec,
    /// The fitted feature and target preprocessing.
    pub preprocessing: Preprocessor,
    /// How the weights were trained.
    pub training: TrainingInfo,
}

/// Writes `bytes` to `path` through a flushed temporary file and a rename.
///
/// A crash at any moment leaves either the old file or the new one at
/// `path`. At worst a stale temporary file `.NAME.tmp` remains beside it,
/// and the next write replaces it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_temporary(path, bytes)?;
    commit_temporary(&tmp, path)
}

/// Returns the temporary file name [`write_atomic`] uses for `path`.
pub fn temporary_path(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path
        .file_name()
        .with_context(|| format!("invalid output path {}", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    Ok(match dir {
        Some(d) => d.join(&tmp_name),
        None => PathBuf::from(&tmp_name),
    })
}

/// Writes and flushes `bytes` to the temporary file of `path` and returns its
/// name; the first half of [`write_atomic`].
pub fn write_temporary(path: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = temporary_path(path)?;
    let result = (|| -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("failed to write {}", path.display()));
    }
    Ok(tmp)
}

/// Renames a flushed temporary file onto `path`; the second half of [`write_atomic`].
pub fn commit_temporary(tmp: &Path, path: &Path) -> Result<()> {
    if let Err(e) = fs::rename(tmp, path) {
        let _ = fs::remove_file(tmp);
        return Err(e).with_context(|| format!("failed to write {}", path.display()));
    }
    // Flushing the directory makes the rename itself survive a power loss.
    // Some file systems refuse to open a directory for this, so a failure is ignored.
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if let Ok(handle) = fs::File::open(dir) {
            let _ = handle.sync_all();
        }
    }
    Ok(())
}

/// A borrowed f32 tensor that safetensors writes straight from its values.
pub(crate) struct F32Tensor<'a> {
    values: &'a [f32],
    shape: Vec<usize>,
}

impl View for F32Tensor<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        if cfg!(target_endian = "little") {
            // SAFETY: f32 has no padding bytes, u8 has alignment 1, and the
            // slice covers exactly the bytes of `values`, which outlive it.
            Cow::Borrowed(unsafe {
                std::slice::from_raw_parts(
                    self.values.as_ptr().cast::<u8>(),
                    std::mem::size_of_val(self.values),
                )
            })
        } else {
            Cow::Owned(f32_bytes(self.values))
        }
    }

    fn data_len(&self) -> usize {
        std::mem::size_of_val(self.values)
    }
}

/// Named tensors of a safetensors file, borrowed from the values they hold.
pub(crate) type NamedTensors<'a> = Vec<(String, F32Tensor<'a>)>;

/// Appends `{prefix}layers.{i}.weight` (`[out, in]`) and `{prefix}layers.{i}.bias` of every layer.
pub(crate) fn push_layer_tensors<'a>(out: &mut NamedTensors<'a>, prefix: &str, params: &'a Params) {
    for (i, layer) in params.layers.iter().enumerate() {
        out.push((
            format!("{prefix}layers.{i}.weight"),
            F32Tensor {
                values: &layer.w,
                shape: vec![layer.outputs, layer.inputs],
            },
        ));
        out.push((
            format!("{prefix}layers.{i}.bias"),
            F32Tensor {
                values: &layer.b,
                shape: vec![layer.outputs],
            },
        ));
    }
}

/// Appends a one-dimensional tensor.
pub(crate) fn push_vector<'a>(out: &mut NamedTensors<'a>, name: String, values: &'a [f32]) {
    let shape = vec![values.len()];
    out.push((name, F32Tensor { values, shape }));
}

/// Writes `tensors` as a safetensors file at `path` without first building
/// the whole file in memory, with the crash guarantee of [`write_atomic`].
pub(crate) fn write_safetensors_atomic(
    path: &Path,
    tensors: NamedTensors<'_>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let tmp = temporary_path(path)?;
    let result = (|| -> Result<()> {
        // safetensors writes through its own temporary file, created with mode
        // 0600, and renames it onto `tmp`. The mode of a file created here is
        // restored afterwards, so model files are as readable as the others.
        // NOTE: a hard kill mid-write can leave that file (`.tmpXXXXXX`) behind.
        let permissions = fs::File::create(&tmp)?.metadata()?.permissions();
        safetensors::serialize_to_file(tensors, metadata, &tmp)?;
        fs::set_permissions(&tmp, permissions)?;
        fs::File::open(&tmp)?.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("failed to write {}", path.display()));
    }
    commit_temporary(&tmp, path)
}

/// Serialises the weights in the safetensors layout described in the module docs.
pub fn weights_to_safetensors(params: &Params) -> Result<Vec<u8>> {
    let mut tensors = NamedTensors::new();
    push_layer_tensors(&mut tensors, "", params);
    safetensors::serialize(tensors, None).context("failed to serialise the weights")
}

/// Reads weights for `spec` from safetensors bytes, checking every name and shape.
pub fn weights_from_safetensors(bytes: &[u8], spec: &ModelSpec, origin: &Path) -> Result<Params> {
    let tensors = SafeTensors::deserialize(bytes)
        .with_context(|| format!("{} is not a valid safetensors file", origin.display()))?;
    let mut layers = Vec::new();
    for (i, (inputs, outputs)) in spec.layer_shapes().into_iter().enumerate() {
        let w = read_tensor(
            &tensors,
            &format!("layers.{i}.weight"),
            &[outputs, inputs],
            origin,
        )?;
        let b = read_tensor(&tensors, &format!("layers.{i}.bias"), &[outputs], origin)?;
        layers.push(LayerParams {
            inputs,
            outputs,
            w,
            b,
        });
    }
    Ok(Params { layers })
}

fn read_tensor(
    tensors: &SafeTensors<'_>,
    name: &str,
    shape: &[usize],
    origin: &Path,
) -> Result<Vec<f32>> {
    let view = tensors.tensor(name).with_context(|| {
        format!(
            "{}: tensor '{name}' is missing; the file does not match model.json",
            origin.display()
        )
    })?;
    if view.dtype() != Dtype::F32 {
        bail!(
            "{}: tensor '{name}' has type {:?}, expected F32",
            origin.display(),
            view.dtype()
        );
    }
    if view.shape() != shape {
        bail!(
            "{}: tensor '{name}' has shape {:?}, expected {shape:?} from model.json",
            origin.display(),
            view.shape()
        );
    }
    let values: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        bail!(
            "{}: tensor '{name}' holds a non-finite value ({}) at index {index}; \
             the file is damaged or the model diverged, so retrain it",
            origin.display(),
            values[index]
        );
    }
    Ok(values)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Writes model.safetensors and model.json into `dir`.
pub fn save(dir: &Path, metadata: &ModelMetadata, params: &Params) -> Result<()> {
    let mut tensors = NamedTensors::new();
    push_layer_tensors(&mut tensors, "", params);
    write_safetensors_atomic(&dir.join(WEIGHTS_FILE), tensors, None)?;
    let json = serde_json::to_string_pretty(metadata).context("failed to encode model.json")?;
    write_atomic(&dir.join(METADATA_FILE), json.as_bytes())
}

/// Loads a model from a run directory, or from its model.json or model.safetensors path.
pub fn load(path: &Path) -> Result<(ModelMetadata, Params)> {
    if !path.exists() {
        bail!(
            "{}: no such file or directory; a model is a run directory or its model.json",
            path.display()
        );
    }
    let dir = if path.is_dir() {
        path.to_path_buf()
    } else {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name != METADATA_FILE && name != WEIGHTS_FILE {
            bail!(
                "{}: not a model; give a run directory, or its {METADATA_FILE} or {WEIGHTS_FILE}",
                path.display()
            );
        }
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    let json_path = dir.join(METADATA_FILE);
    let weights_path = dir.join(WEIGHTS_FILE);
    let json = fs::read_to_string(&json_path).with_context(|| {
        format!(
            "failed to read {}: a model is a directory holding {METADATA_FILE} and {WEIGHTS_FILE}",
            json_path.display()
        )
    })?;
    let metadata: ModelMetadata = serde_json::from_str(&json).with_context(|| {
        format!(
            "{} is not a valid densetrain model.json",
            json_path.display()
        )
    })?;
    if metadata.format != FORMAT || metadata.version > FORMAT_VERSION {
        bail!(
            "{}: format '{}' version {} is not supported (expected '{FORMAT}' version {FORMAT_VERSION} or lower)",
            json_path.display(),
            metadata.format,
            metadata.version
        );
    }
    let bytes = fs::read(&weights_path)
        .with_context(|| format!("failed to read {}", weights_path.display()))?;
    let params = weights_from_safetensors(&bytes, &metadata.architecture, &weights_path)?;
    Ok((metadata, params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LossKind;
    use crate::model::{Activation, Init};

    fn spec() -> ModelSpec {
        ModelSpec {
            inputs: 3,
            hidden: vec![4],
            activation: Activation::Relu,
            outputs: 2,
            loss: LossKind::SoftmaxCrossEntropy,
            init: Init::He,
            dropout: 0.0,
        }
    }

    fn params() -> Params {
        let shapes = spec().layer_shapes();
        Params {
            layers: shapes
                .iter()
                .map(|&(i, o)| LayerParams {
                    inputs: i,
                    outputs: o,
                    w: (0..i * o).map(|k| k as f32 * 0.5 - 1.0).collect(),
                    b: (0..o).map(|k| k as f32 + 0.25).collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn weights_round_trip_with_torch_names_and_shapes() {
        let bytes = weights_to_safetensors(&params()).unwrap();
        let parsed = SafeTensors::deserialize(&bytes).unwrap();
        let t = parsed.tensor("layers.0.weight").unwrap();
        assert_eq!(t.shape(), &[4, 3]);
        assert_eq!(parsed.tensor("layers.1.bias").unwrap().shape(), &[2]);
        let back = weights_from_safetensors(&bytes, &spec(), Path::new("m")).unwrap();
        assert_eq!(back, params());
    }

    #[test]
    fn non_finite_weight_is_an_error() {
        let mut broken = params();
        broken.layers[1].w[3] = f32::NAN;
        let bytes = weights_to_safetensors(&broken).unwrap();
        let err = weights_from_safetensors(&bytes, &spec(), Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("layers.1.weight"), "{err}");
        assert!(err.contains("index 3"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn weights_file_as_readable_as_json() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut tensors = NamedTensors::new();
        let model = params();
        push_layer_tensors(&mut tensors, "", &model);
        let weights = dir.path().join(WEIGHTS_FILE);
        write_safetensors_atomic(&weights, tensors, None).unwrap();
        let json = dir.path().join(METADATA_FILE);
        write_atomic(&json, b"{}").unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&weights), mode(&json));
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "temporary files left: {names:?}");
    }

    #[test]
    fn other_file_is_not_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("history.csv");
        fs::write(&other, "epoch\n").unwrap();
        let err = load(&other).unwrap_err().to_string();
        assert!(err.contains("not a model"), "{err}");
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let bytes = weights_to_safetensors(&params()).unwrap();
        let mut other = spec();
        other.hidden = vec![5];
        let err = weights_from_safetensors(&bytes, &other, Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("layers.0.weight"), "{err}");
        assert!(err.contains("[4, 3]"), "{err}");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
