//! Fitted preprocessing: feature scaling and encoding, label mapping.

use crate::data::TaskKind;
use serde::{Deserialize, Serialize};

/// How one input column becomes one or more network inputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FeatureTransform {
    /// A numeric column: `(value - shift) * scale`; missing cells become `fill` first.
    Numeric {
        name: String,
        shift: f32,
        scale: f32,
        fill: Option<f32>,
    },
    /// A string column expanded into one 0/1 input per category.
    OneHot {
        name: String,
        categories: Vec<String>,
    },
}

/// How the target column maps to what the network predicts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TargetTransform {
    /// Class names in index order (sorted).
    Classes { names: Vec<String> },
    /// Regression target standardised as `(y - mean) / std`.
    Standardized { mean: f64, std: f64 },
}

/// The file format the preprocessing was fitted on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceFormat {
    /// CSV with these reading options.
    Csv { delimiter: u8, decimal_comma: bool },
    /// IDX images (pixels are features).
    Idx,
}

/// Every constant fitted on the training part, kept with the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Preprocessor {
    /// Input columns in order.
    pub features: Vec<FeatureTransform>,
    /// Target name (`label` for IDX).
    pub target_name: String,
    /// Target mapping.
    pub target: TargetTransform,
    /// Format of the data.
    pub format: SourceFormat,
    /// Columns ignored by request.
    pub dropped: Vec<String>,
}

impl Preprocessor {
    /// Classification or regression.
    pub fn task(&self) -> TaskKind {
        match self.target {
            TargetTransform::Classes { .. } => TaskKind::Classification,
            TargetTransform::Standardized { .. } => TaskKind::Regression,
        }
    }

    /// Class names in index order, for classification.
    pub fn class_names(&self) -> Option<&[String]> {
        match &self.target {
            TargetTransform::Classes { names } => Some(names),
            TargetTransform::Standardized { .. } => None,
        }
    }

    /// `(mean, std)` of the regression target.
    pub fn target_mean_std(&self) -> Option<(f64, f64)> {
        match self.target {
            TargetTransform::Standardized { mean, std } => Some((mean, std)),
            TargetTransform::Classes { .. } => None,
        }
    }

    /// Number of network inputs after encoding.
    pub fn input_count(&self) -> usize {
        self.features
            .iter()
            .map(|f| match f {
                FeatureTransform::Numeric { .. } => 1,
                FeatureTransform::OneHot { categories, .. } => categories.len(),
            })
            .sum()
    }

    /// Names of the source columns used as features, in order.
    pub fn feature_names(&self) -> Vec<&str> {
        self.features
            .iter()
            .map(|f| match f {
                FeatureTransform::Numeric { name, .. } | FeatureTransform::OneHot { name, .. } => {
                    name.as_str()
                }
            })
            .collect()
    }
}
