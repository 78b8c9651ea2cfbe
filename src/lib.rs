//! densetrain trains dense (fully connected) neural networks on tabular and
//! small image data, on the CPU or an NVIDIA GPU, the way Keras's `model.fit`
//! does: layers, activation, optimizer, a validation split, early stopping and
//! learning curves.
//!
//! The command line is a thin layer over this library. The same steps in
//! code: load and split data, build a model, fit, evaluate, predict.
//!
//! ```
//! use densetrain::backend::{LossKind, cpu::Cpu};
//! use densetrain::data::{self, DataConfig, DataSource, SplitConfig, SplitRule};
//! use densetrain::model::{Activation, Init, ModelSpec, Network, init};
//! use densetrain::optim::{Optimizer, OptimizerConfig};
//! use densetrain::train::{self, EarlyStoppingConfig, FitConfig, Mode, Monitor, Units};
//!
//! # fn main() -> anyhow::Result<()> {
//! // The built-in digits, 20% held out by a seeded stratified split.
//! let config = DataConfig {
//!     source: DataSource::Digits,
//!     split: SplitConfig { fraction: 0.2, rule: SplitRule::Stratified, seed: 1 },
//!     ..DataConfig::default()
//! };
//! let prepared = data::prepare(&config)?;
//! let classes = prepared.preprocessor.class_names().unwrap().len();
//!
//! let spec = ModelSpec {
//!     inputs: prepared.preprocessor.input_count(),
//!     hidden: vec![64],
//!     activation: Activation::Relu,
//!     outputs: classes,
//!     loss: LossKind::SoftmaxCrossEntropy,
//!     init: Init::He,
//!     dropout: 0.0,
//! };
//! let optimizer = OptimizerConfig {
//!     optimizer: Optimizer::with_defaults("adam").unwrap(),
//!     lr: 1e-3,
//!     l2: 0.0,
//!     weight_decay: 0.0,
//!     clipnorm: None,
//! };
//! let fit = FitConfig {
//!     epochs: 5,
//!     batch_size: 32,
//!     shuffle: true,
//!     seed: 1,
//!     optimizer,
//!     early_stopping: EarlyStoppingConfig {
//!         monitor: Monitor::ValLoss,
//!         mode: Mode::Auto,
//!         patience: Some(2),
//!         min_delta: 0.0,
//!         start_from_epoch: 0,
//!         restore_best_weights: true,
//!     },
//!     class_weights: None,
//!     verbose: 0,
//!     diagnostics: true,
//! };
//!
//! let backend = Cpu::new(0)?;
//! let validation = prepared.validation.as_ref().unwrap();
//! let result = train::fit(
//!     &backend,
//!     &spec,
//!     &init::init_params(&spec, 1),
//!     &prepared.train,
//!     Some(validation),
//!     Units::IDENTITY,
//!     &fit,
//! )?;
//! assert_eq!(result.history.epochs.len(), 5);
//!
//! // Score and predict with the trained weights.
//! let mut net = Network::new(&backend, &spec, &result.params, &optimizer, 256)?;
//! let scores = train::evaluate(&backend, &mut net, validation, true, Units::IDENTITY)?;
//! assert!(scores.metric > 0.9, "validation accuracy {}", scores.metric);
//! let probabilities = train::predict(&backend, &mut net, validation)?;
//! assert_eq!(probabilities.len(), validation.rows * classes);
//! # Ok(())
//! # }
//! ```

pub mod backend;
pub mod cli;
pub mod data;
pub mod model;
pub mod optim;
pub mod rng;
pub mod tools;
pub mod train;
