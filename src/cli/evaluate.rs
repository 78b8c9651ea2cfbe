//! `densetrain evaluate`: score a saved model on labelled data, or on the
//! validation part of the run that trained it.

use crate::cli::{Outcome, device, fine_tune, run_files::RunRecord, settings};
use crate::data::{DataSource, Dataset};
use crate::model::file::{self, ModelMetadata};
use crate::train::metrics::{self, ClassificationMetrics, Evaluation};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Rows per pass when scoring data other than the run's validation part.
const DEFAULT_BATCH_ROWS: usize = 1024;

/// Options of `densetrain evaluate`.
#[derive(Debug, Args)]
pub struct EvaluateArgs {
    /// The model: a run directory (also RUN/checkpoints/best), or its model.json.
    #[arg(long, value_name = "MODEL")]
    pub model: PathBuf,
    /// Labelled data: a CSV file with the model's columns and target, a directory of IDX
    /// files (its t10k test files are scored), or digits [default: the validation rows of
    /// the run that trained the model]
    #[arg(long, value_name = "SOURCE")]
    pub data: Option<String>,
    /// IDX images file; use with --labels instead of --data.
    #[arg(
        long,
        value_name = "FILE",
        requires = "labels",
        conflicts_with = "data"
    )]
    pub images: Option<PathBuf>,
    /// IDX labels file; use with --images.
    #[arg(long, value_name = "FILE", requires = "images")]
    pub labels: Option<PathBuf>,
    /// Rows per pass [default: the run's validation pass size for its own validation
    /// rows, else 1024]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Print one JSON object with every value at full precision instead of text.
    #[arg(long)]
    pub json: bool,
    /// CPU threads [default: all cores]
    #[arg(long, default_value_t = 0, hide_default_value = true, allow_negative_numbers = true,
          value_parser = crate::cli::args::whole_number)]
    pub threads: usize,
    /// Device: auto (a GPU when one works, else the CPU), cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
}

/// Runs `densetrain evaluate`.
pub fn run(args: &EvaluateArgs) -> Result<Outcome> {
    if args.batch_size == Some(0) {
        bail!("invalid --batch-size 0: a pass needs at least 1 row");
    }
    let (metadata, params) = file::load(&args.model)?;
    let preprocessor = &metadata.preprocessing;
    let source = match (&args.data, &args.images, &args.labels) {
        (_, Some(images), Some(labels)) => Some(DataSource::IdxFiles {
            images: images.clone(),
            labels: labels.clone(),
        }),
        (Some(data), _, _) => Some(DataSource::from_arg(data)?),
        _ => None,
    };
    let (data, description, batch_rows) = match &source {
        Some(source) => {
            let raw = preprocessor.read(source)?;
            let data = preprocessor.transform(&raw)?;
            let rows = args.batch_size.unwrap_or(DEFAULT_BATCH_ROWS);
            (data, source.describe(), rows)
        }
        None => {
            let (data, description, rows) = run_validation(&args.model, &metadata)?;
            (data, description, args.batch_size.unwrap_or(rows))
        }
    };
    let backend = device::select_backend(
        &args.device,
        "f32",
        false,
        args.threads,
        crate::backend::cuda::Cuda::open,
    )?;
    let evaluation = metrics::evaluate_model(
        &backend,
        &metadata.architecture,
        &params,
        preprocessor,
        &data,
        batch_rows,
    )
    .with_context(|| format!("failed to score {description}"))?;
    if args.json {
        let json = serde_json::to_string_pretty(&evaluation).context("failed to encode JSON")?;
        println!("{json}");
    } else {
        println!("Model: {}", args.model.display());
        println!("Data: {description} ({} rows)", evaluation.rows);
        print!("{}", format_evaluation(&evaluation));
    }
    Ok(Outcome::Success)
}

/// Rebuilds the validation part of the run that wrote the model at `model`
/// and returns it, its description and the run's validation pass size.
fn run_validation(model: &Path, metadata: &ModelMetadata) -> Result<(Dataset, String, usize)> {
    let model_dir = if model.is_dir() {
        model.to_path_buf()
    } else {
        model.parent().map(Path::to_path_buf).unwrap_or_default()
    };
    // A --checkpoint-best model sits in RUN/checkpoints/best.
    let grandparent = model_dir
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf);
    let run_dir = std::iter::once(model_dir.clone())
        .chain(grandparent)
        .find(|dir| dir.join(crate::cli::run_files::RUN_FILE).is_file());
    let Some(run_dir) = run_dir else {
        bail!(
            "--model {}: no run.json beside the model, so the run's validation rows are \
             unknown; pass --data with labelled data",
            model.display()
        );
    };
    let record = RunRecord::read(&run_dir)?;
    let args = record.train_args()?;
    let Some(seed) = args.fit.seed else {
        bail!(
            "{}: the stored command line has no --seed",
            run_dir.display()
        );
    };
    let config = settings::data_config(&args.data, seed)?;
    let (prepared, _) = fine_tune::prepare_data(&config, args.control.initial_model.as_deref())?;
    record.check_data(&prepared)?;
    if prepared.preprocessor != metadata.preprocessing {
        bail!(
            "{}: the model's scaling and encoding differ from those of the run in {}; \
             pass --data to score it",
            model.display(),
            run_dir.display()
        );
    }
    let Some(validation) = prepared.validation else {
        bail!(
            "the run in {} trained without validation (--validation-split 0); pass --data \
             with labelled data",
            run_dir.display()
        );
    };
    let description = format!("the validation part of the run {}", run_dir.display());
    Ok((validation, description, record.batch_capacity))
}

/// Formats the loss and metrics as aligned text.
pub fn format_evaluation(evaluation: &Evaluation) -> String {
    let mut out = String::new();
    if let Some(c) = &evaluation.classification {
        let _ = writeln!(
            out,
            "loss: {:.4} - accuracy: {:.4}",
            evaluation.loss, c.accuracy
        );
        format_classification(c, &mut out);
    }
    if let Some(r) = &evaluation.regression {
        let _ = writeln!(
            out,
            "loss (mean squared error): {:.4} - mae: {:.4} - rmse: {:.4} - r2: {:.4}",
            evaluation.loss, r.mae, r.rmse, r.r2
        );
    }
    out
}

fn format_classification(c: &ClassificationMetrics, out: &mut String) {
    let names: Vec<&str> = c.classes.iter().map(|s| s.name.as_str()).collect();
    let width = names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max(9);
    let _ = writeln!(
        out,
        "Confusion matrix (rows: true class, columns: predicted class):"
    );
    let _ = write!(out, "  {:width$}", "");
    for name in &names {
        let _ = write!(out, " {name:>width$}");
    }
    out.push('\n');
    for (name, row) in names.iter().zip(&c.confusion) {
        let _ = write!(out, "  {name:width$}");
        for count in row {
            let _ = write!(out, " {count:>width$}");
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "  {:width$} {:>9} {:>9} {:>9} {:>9}",
        "class", "precision", "recall", "f1", "support"
    );
    for s in &c.classes {
        let _ = writeln!(
            out,
            "  {:width$} {:>9.4} {:>9.4} {:>9.4} {:>9}",
            s.name, s.precision, s.recall, s.f1, s.support
        );
    }
    let _ = writeln!(
        out,
        "  {:width$} {:>9} {:>9} {:>9.4}",
        "macro avg", "", "", c.macro_f1
    );
    if let Some(auc) = c.roc_auc {
        let _ = writeln!(out, "ROC AUC: {auc:.4}");
    }
}
