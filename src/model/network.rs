//! A dense network resident on a backend: parameters, gradients, optimizer
//! state and the activation buffers of one batch, all allocated once.

use crate::backend::{Backend, Dims, DropoutMask};
use crate::model::{ModelSpec, Params};
use crate::optim::OptimizerConfig;
use anyhow::Result;

/// Parameters, gradients and optimizer state of one dense layer.
struct Layer<B: Backend> {
    dims_in: usize,
    dims_out: usize,
    /// Weights `[O, I]`.
    w: B::Buf,
    /// Biases `[O]`.
    b: B::Buf,
    dw: B::Buf,
    db: B::Buf,
    /// Optimizer state of `w` (see `Optimizer::slot_count`).
    w_slots: Vec<B::Buf>,
    /// Optimizer state of `b`.
    b_slots: Vec<B::Buf>,
}

/// Device copies of a network's parameters (best weights, last good epoch).
pub struct Snapshot<B: Backend> {
    tensors: Vec<B::Buf>,
}

/// A dense network on a backend, sized for batches of up to `max_rows` rows.
pub struct Network<B: Backend> {
    spec: ModelSpec,
    layers: Vec<Layer<B>>,
    max_rows: usize,
    /// Activation output of each layer, `[max_rows, O_l]`.
    outputs: Vec<B::Buf>,
    /// Dropout output of each hidden layer when dropout is on, `[max_rows, O_l]`.
    dropped: Vec<B::Buf>,
    /// Gradient with respect to each layer's output, `[max_rows, O_l]`.
    grads: Vec<B::Buf>,
    /// Gradient clipping factor, `[1]`.
    clip: B::Buf,
}

impl<B: Backend> Network<B> {
    /// Uploads `params` (shaped as `spec` says) and allocates every buffer of a fit:
    /// gradients, `optimizer` state (zeros) and activations for `max_rows` rows.
    pub fn new(
        backend: &B,
        spec: &ModelSpec,
        params: &Params,
        optimizer: &OptimizerConfig,
        max_rows: usize,
    ) -> Result<Self> {
        let _ = (backend, spec, params, optimizer, max_rows);
        unimplemented!()
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Runs one optimizer step on a batch already on the device.
    ///
    /// `x` is `[rows, I]`, `targets` is `[rows]`. `step` counts optimizer
    /// steps from 0 over the whole run (Adam's `t` is `step + 1`; dropout
    /// masks are keyed by it). `batch` is the batch index within the epoch,
    /// recorded by the non-finite flag. Adds the batch's loss and metric to `stats`.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        backend: &B,
        x: &B::Buf,
        targets: &B::Buf,
        rows: usize,
        class_weights: Option<&B::Buf>,
        optimizer: &OptimizerConfig,
        lr: f32,
        step: u64,
        seed: u64,
        batch: u64,
        stats: &mut B::Stats,
    ) -> Result<()> {
        let _ = (
            backend,
            x,
            targets,
            rows,
            class_weights,
            optimizer,
            lr,
            step,
            seed,
            batch,
            stats,
        );
        unimplemented!()
    }

    /// Adds the loss and metric of a batch to `stats` without dropout or updates
    /// (validation and evaluation; no class weights).
    pub fn evaluate_batch(
        &mut self,
        backend: &B,
        x: &B::Buf,
        targets: &B::Buf,
        rows: usize,
        stats: &mut B::Stats,
    ) -> Result<()> {
        let _ = (backend, x, targets, rows, stats);
        unimplemented!()
    }

    /// Writes the predictions for `x[rows, I]` into `out[rows, C]`: class
    /// probabilities, the positive-class probability, or the value.
    pub fn predict_batch(
        &mut self,
        backend: &B,
        x: &B::Buf,
        rows: usize,
        out: &mut B::Buf,
    ) -> Result<()> {
        let _ = (backend, x, rows, out);
        unimplemented!()
    }

    /// Returns the index of the first layer whose output for `x[rows, I]` holds a
    /// non-finite value, or `None` (diagnosis after a non-finite loss).
    pub fn first_nonfinite_layer(
        &mut self,
        backend: &B,
        x: &B::Buf,
        rows: usize,
    ) -> Result<Option<usize>> {
        let _ = (backend, x, rows);
        unimplemented!()
    }

    /// Downloads the parameters.
    pub fn params(&self, backend: &B) -> Result<Params> {
        let _ = backend;
        unimplemented!()
    }

    /// Allocates a snapshot holding a copy of the current parameters.
    pub fn snapshot(&self, backend: &B) -> Result<Snapshot<B>> {
        let _ = backend;
        unimplemented!()
    }

    /// Overwrites `snapshot` with the current parameters (device to device).
    pub fn save_to(&self, backend: &B, snapshot: &mut Snapshot<B>) -> Result<()> {
        let _ = (backend, snapshot);
        unimplemented!()
    }

    /// Overwrites the current parameters with `snapshot`.
    pub fn restore_from(&mut self, backend: &B, snapshot: &Snapshot<B>) -> Result<()> {
        let _ = (backend, snapshot);
        unimplemented!()
    }

    /// Largest batch the buffers hold.
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }
}

#[allow(dead_code)]
fn unused_types(_: Dims, _: DropoutMask) {}
