//! densetrain trains dense (fully connected) neural networks on tabular and
//! small image data, on the CPU or an NVIDIA GPU, the way Keras's `model.fit`
//! does: layers, activation, optimizer, a validation split, early stopping and
//! learning curves.

pub mod backend;
pub mod data;
pub mod model;
pub mod optim;
pub mod rng;
pub mod train;
