//! `train --initial-model M`: continue training a saved model on data that
//! matches it (fine tuning).
//!
//! The data is loaded and split as for any run, then checked against the
//! model: same task, target and feature columns, and no class the model
//! lacks. It is then encoded with the model's fitted scaling and encoding,
//! because the weights expect inputs scaled that way. The architecture comes from the
//! model; the optimizer state starts at zero.

use crate::data::preprocess::Preprocessor;
use crate::data::{self, DataConfig, DataSource, PreparedData, RawData, idx};
use crate::model::file::{self, ModelMetadata};
use crate::model::{ModelSpec, Params};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// A saved model to start from.
pub struct InitialModel {
    /// Path it was loaded from.
    pub path: PathBuf,
    /// Its model.json.
    pub metadata: ModelMetadata,
    /// Its weights.
    pub params: Params,
}

/// Loads and splits the data of `config`; with `initial_model`, loads that
/// model and re-encodes the data with its preprocessing.
pub fn prepare_data(
    config: &DataConfig,
    initial_model: Option<&Path>,
) -> Result<(PreparedData, Option<InitialModel>)> {
    let prepared = data::prepare(config)?;
    let Some(path) = initial_model else {
        return Ok((prepared, None));
    };
    let (metadata, params) = file::load(path).with_context(|| {
        format!(
            "--initial-model {}: failed to load the model",
            path.display()
        )
    })?;
    let prepared = encode_with(prepared, &metadata.preprocessing, config, path)?;
    let model = InitialModel {
        path: path.to_path_buf(),
        metadata,
        params,
    };
    Ok((prepared, Some(model)))
}

/// Returns the model's architecture with the run's dropout rate; a hidden
/// layer, activation or initialiser option that differs is an error.
pub fn initial_spec(
    model: &InitialModel,
    requested: &ModelSpec,
    given: &[String],
) -> Result<ModelSpec> {
    let saved = &model.metadata.architecture;
    let differs = [
        ("layers", requested.hidden != saved.hidden),
        ("activation", requested.activation != saved.activation),
        ("init", requested.init != saved.init),
    ];
    for (id, different) in differs {
        if different && given.iter().any(|g| g == id) {
            bail!(
                "--{id} does not apply with --initial-model {}: the architecture comes from the \
                 model (layers {:?}, activation {}); drop --{id}",
                model.path.display(),
                saved.hidden,
                saved.activation.name()
            );
        }
    }
    let mut spec = saved.clone();
    spec.dropout = requested.dropout;
    Ok(spec)
}

/// Checks `prepared` against the model's preprocessing and encodes its
/// parts with it.
fn encode_with(
    mut prepared: PreparedData,
    model: &Preprocessor,
    config: &DataConfig,
    path: &Path,
) -> Result<PreparedData> {
    let fitted = &prepared.preprocessor;
    let origin = path.display();
    if fitted.task() != model.task() {
        bail!(
            "--initial-model {origin} was trained for {:?}, but the target '{}' of this data \
             gives {:?}; pass --task to match, or use another model",
            model.task(),
            fitted.target_name,
            fitted.task()
        );
    }
    if fitted.target_name != model.target_name {
        bail!(
            "--initial-model {origin} predicts '{}', but this run's target is '{}'; \
             pass --target {}",
            model.target_name,
            fitted.target_name,
            model.target_name
        );
    }
    let model_features = model.feature_names();
    let features = fitted.feature_names();
    if features != model_features {
        let missing: Vec<&str> = model_features
            .iter()
            .filter(|f| !features.contains(f))
            .copied()
            .collect();
        let extra: Vec<&str> = features
            .iter()
            .filter(|f| !model_features.contains(f))
            .copied()
            .collect();
        bail!(
            "--initial-model {origin} was trained on other feature columns: missing here [{}], \
             not in the model [{}]; the model's columns are {} (use --drop for extra columns)",
            missing.join(", "),
            extra.join(", "),
            model_features.join(", ")
        );
    }
    if let (Some(names), Some(known)) = (fitted.class_names(), model.class_names()) {
        let unknown: Vec<&str> = names
            .iter()
            .filter(|n| !known.contains(n))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            bail!(
                "--initial-model {origin} does not know the class{} {} of this data; its \
                 classes are {}",
                if unknown.len() == 1 { "" } else { "es" },
                unknown.join(", "),
                known.join(", ")
            );
        }
    }
    // The file layout (delimiter, header) and the dropped columns are those of
    // this data; the fitted constants are the model's.
    let mut reader = model.clone();
    reader.format = fitted.format.clone();
    reader.dropped = fitted.dropped.clone();
    let all = reader.transform(&read_training_source(&reader, &config.source)?)?;
    prepared.train = all.select(&prepared.train_rows);
    prepared.validation = match &config.validation_data {
        Some(file) => {
            let raw = reader.read(&DataSource::Csv(file.clone()))?;
            Some(reader.transform(&raw)?)
        }
        None if prepared.validation_rows.is_empty() => None,
        None => Some(all.select(&prepared.validation_rows)),
    };
    if prepared.test.is_some() {
        prepared.test = Some(reader.transform(&reader.read(&config.source)?)?);
    }
    prepared.report.push(format!(
        "scaling and encoding: those of the initial model {origin}"
    ));
    prepared.preprocessor = reader;
    Ok(prepared)
}

/// Reads the training rows of `source` (for an IDX directory its train
/// files, where [`Preprocessor::read`] takes the test files).
fn read_training_source(preprocessor: &Preprocessor, source: &DataSource) -> Result<RawData> {
    match source {
        DataSource::IdxDir(dir) => {
            let files = idx::find_dir_files(dir)?;
            let images = idx::read_images(&files.train_images, &files.train_labels)?;
            Ok(RawData::Images(images))
        }
        other => preprocessor.read(other),
    }
}
