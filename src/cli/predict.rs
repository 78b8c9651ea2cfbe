//! `densetrain predict`: write a saved model's predictions for new rows as CSV.
//!
//! The output has one header line and one row per input row, in input
//! order. Classification: the predicted class name under the target's name,
//! then `probability_<class>` for every class. Regression: the predicted value
//! in the target's units under the target's name.

use crate::cli::{Outcome, device};
use crate::data::preprocess::{FeatureTransform, Preprocessor};
use crate::data::{DataSource, Dataset, idx};
use crate::model::file;
use crate::train::metrics::predicted_classes;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// Options of `densetrain predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The model: a run directory (also RUN/checkpoints/best), or its model.json.
    #[arg(long, value_name = "MODEL")]
    pub model: PathBuf,
    /// Rows to predict: a CSV file with the model's feature columns (the target column may
    /// be absent), a directory of IDX files (its t10k test images), or digits.
    #[arg(long, value_name = "SOURCE", required_unless_present = "images")]
    pub data: Option<String>,
    /// IDX images file (idx3, raw or gzip) to predict; no labels file is needed.
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    pub images: Option<PathBuf>,
    /// Output CSV file; it must not exist unless --force is given [default: standard output]
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Replace --output if it exists.
    #[arg(long, requires = "output")]
    pub force: bool,
    /// Rows per pass.
    #[arg(long, default_value_t = 1024)]
    pub batch_size: usize,
    /// CPU threads [default: all cores]
    #[arg(long, default_value_t = 0, hide_default_value = true, allow_negative_numbers = true,
          value_parser = crate::cli::args::whole_number)]
    pub threads: usize,
    /// Device: auto (a GPU when one works, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// Runs `densetrain predict`.
pub fn run(args: &PredictArgs) -> Result<Outcome> {
    if args.batch_size == 0 {
        bail!("invalid --batch-size 0: a pass needs at least 1 row");
    }
    if let Some(path) = &args.output {
        check_output(path, args.force)?;
        let inputs = [args.data.as_ref().map(PathBuf::from), args.images.clone()];
        for input in inputs.iter().flatten() {
            if same_file(path, input) {
                bail!(
                    "--output {}: that is the input file; writing predictions there would \
                     destroy the data, so choose another name",
                    path.display()
                );
            }
        }
    }
    let (metadata, params) = file::load(&args.model)?;
    let preprocessor = &metadata.preprocessing;
    let data = match (&args.data, &args.images) {
        (_, Some(images)) => encode_images(preprocessor, images)?,
        (Some(data), None) => {
            let source = DataSource::from_arg(data)?;
            preprocessor.transform(&preprocessor.read(&source)?)?
        }
        (None, None) => bail!("pass --data FILE or --images FILE"),
    };
    let backend = device::select_backend(
        &args.device,
        "f32",
        false,
        args.threads,
        crate::backend::cuda::Cuda::open,
    )?;
    let optimizer = crate::optim::OptimizerConfig {
        optimizer: crate::optim::Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        lr: 0.0,
        l2: 0.0,
        weight_decay: 0.0,
        clipnorm: None,
    };
    let mut net = crate::model::Network::new(
        &backend,
        &metadata.architecture,
        &params,
        &optimizer,
        args.batch_size,
    )?;
    let outputs = crate::train::predict(&backend, &mut net, &data)?;
    let csv = predictions_csv(preprocessor, &outputs, metadata.architecture.outputs)?;
    match &args.output {
        Some(path) => {
            write_output(path, csv.as_bytes(), args.force)?;
            log::info!("wrote {} predictions to {}", data.rows, path.display());
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(csv.as_bytes())
                .and_then(|()| stdout.flush())
                .context("failed to write the predictions to standard output")?;
        }
    }
    Ok(Outcome::Success)
}

/// Formats the predictions as CSV; `outputs` is `[rows, columns]` as
/// [`crate::train::predict`] returns it.
pub fn predictions_csv(
    preprocessor: &Preprocessor,
    outputs: &[f32],
    columns: usize,
) -> Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let target = preprocessor.target_name.as_str();
    match (preprocessor.class_names(), preprocessor.target_mean_std()) {
        (Some(names), _) => {
            let mut header = vec![target.to_string()];
            header.extend(names.iter().map(|n| format!("probability_{n}")));
            writer.write_record(&header)?;
            let classes = predicted_classes(outputs, columns);
            for (row, class) in outputs.chunks_exact(columns).zip(classes) {
                let mut record = vec![names[class].clone()];
                if columns == 1 {
                    // One sigmoid output is the probability of the second class.
                    record.push((1.0 - row[0]).to_string());
                    record.push(row[0].to_string());
                } else {
                    record.extend(row.iter().map(f32::to_string));
                }
                writer.write_record(&record)?;
            }
        }
        (None, Some((mean, std))) => {
            writer.write_record([target])?;
            for &value in outputs {
                writer.write_record([(f64::from(value) * std + mean).to_string()])?;
            }
        }
        (None, None) => bail!("the model's target has neither classes nor scaling"),
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| anyhow::anyhow!("failed to format the predictions: {e}"))?;
    String::from_utf8(bytes).context("the predictions are not valid UTF-8")
}

/// Rejects an existing output file unless `force`, before any work is done.
fn check_output(path: &Path, force: bool) -> Result<()> {
    if path.is_dir() {
        bail!(
            "--output {}: that is a directory; name a file",
            path.display()
        );
    }
    if path.exists() && !force {
        bail!(
            "--output {}: the file exists; pass --force to replace it, or choose another name",
            path.display()
        );
    }
    Ok(())
}

/// Writes the output: a new file that must not exist, or with `force` a
/// replacement through a temporary file, so a failed write keeps the old one.
fn write_output(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    if force {
        return file::write_atomic(path, bytes);
    }
    let mut handle = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(handle) => handle,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => bail!(
            "--output {}: the file exists; pass --force to replace it, or choose another name",
            path.display()
        ),
        Err(e) => {
            return Err(e).with_context(|| format!("failed to create {}", path.display()));
        }
    };
    if let Err(e) = handle.write_all(bytes).and_then(|()| handle.sync_all()) {
        drop(handle);
        let _ = fs::remove_file(path);
        return Err(e).with_context(|| format!("failed to write {}", path.display()));
    }
    Ok(())
}

/// Encodes an IDX images file without labels with the model's image scaling.
fn encode_images(preprocessor: &Preprocessor, path: &Path) -> Result<Dataset> {
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
            "--images {}: the model was trained on CSV columns; pass the rows with --data",
            path.display()
        );
    };
    let array = idx::read_idx(path)?;
    if array.dims.len() != 3 {
        bail!(
            "{}: expected an images file with 3 dimensions (idx3), got {}",
            path.display(),
            array.dims.len()
        );
    }
    let (count, h, w) = (array.dims[0], array.dims[1], array.dims[2]);
    if (h, w) != (*height, *width) {
        bail!(
            "{} contains {h}×{w} images, but the model was trained on {height}×{width}",
            path.display()
        );
    }
    if count == 0 {
        bail!("{} contains no images", path.display());
    }
    Ok(Dataset {
        x: array.data.iter().map(|&p| f32::from(p) * scale).collect(),
        y: Vec::new(),
        rows: count,
        cols: h * w,
    })
}

/// Whether two paths name the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
