//! A dense network resident on a backend: parameters, gradients, optimizer
//! state and the activation buffers of one batch, all allocated once.
//!
//! Layer `l` computes `outputs[l] = act(input · w[l]ᵀ + b[l])`, where the
//! input is the batch for the first layer and otherwise the previous layer's
//! output, after dropout when training with dropout. The output layer is
//! linear; the loss applies softmax or sigmoid to its logits.

use crate::backend::{Backend, Dims, DropoutMask};
use crate::model::{LayerParams, ModelSpec, Params};
use crate::optim::OptimizerConfig;
use anyhow::{Result, bail, ensure};

/// Largest number of parameter tensors whose references the gradient clipping
/// collects on the stack; deeper networks use a heap vector.
const STACK_TENSORS: usize = 32;

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
    /// `w` then `b` of each layer, first layer first.
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
    /// Uploads `params` (shaped as `spec` describes) and allocates every buffer of a fit:
    /// gradients, `optimizer` state (zeros) and activations for `max_rows` rows.
    pub fn new(
        backend: &B,
        spec: &ModelSpec,
        params: &Params,
        optimizer: &OptimizerConfig,
        max_rows: usize,
    ) -> Result<Self> {
        spec.validate()?;
        ensure!(
            max_rows > 0,
            "a network needs room for at least one row per batch"
        );
        check_params(spec, params)?;
        let slot_count = optimizer.optimizer.slot_count();
        let mut layers = Vec::with_capacity(params.layers.len());
        let mut outputs = Vec::with_capacity(params.layers.len());
        let mut grads = Vec::with_capacity(params.layers.len());
        for p in &params.layers {
            let (i, o) = (p.inputs, p.outputs);
            layers.push(Layer {
                dims_in: i,
                dims_out: o,
                w: backend.upload(&p.w)?,
                b: backend.upload(&p.b)?,
                dw: backend.zeros(o * i)?,
                db: backend.zeros(o)?,
                w_slots: zero_buffers(backend, slot_count, o * i)?,
                b_slots: zero_buffers(backend, slot_count, o)?,
            });
            outputs.push(backend.zeros(max_rows * o)?);
            grads.push(backend.zeros(max_rows * o)?);
        }
        let mut dropped = Vec::new();
        if spec.dropout > 0.0 {
            for &units in &spec.hidden {
                dropped.push(backend.zeros(max_rows * units)?);
            }
        }
        Ok(Self {
            spec: spec.clone(),
            layers,
            max_rows,
            outputs,
            dropped,
            grads,
            clip: backend.zeros(1)?,
        })
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
        self.compute_gradients(
            backend,
            x,
            targets,
            rows,
            class_weights,
            step,
            seed,
            batch,
            stats,
        )?;
        self.apply_gradients(backend, optimizer, lr, step, stats)
    }

    /// Runs the forward pass (with dropout when the spec has it), the loss and
    /// the backward pass, leaving every layer's `dw` and `db` in place for
    /// [`Self::apply_gradients`] or [`Self::gradients`]. Arguments are those of
    /// [`Self::train_step`].
    #[allow(clippy::too_many_arguments)]
    pub fn compute_gradients(
        &mut self,
        backend: &B,
        x: &B::Buf,
        targets: &B::Buf,
        rows: usize,
        class_weights: Option<&B::Buf>,
        step: u64,
        seed: u64,
        batch: u64,
        stats: &mut B::Stats,
    ) -> Result<()> {
        self.check_rows(rows)?;
        let dropout = (self.spec.dropout > 0.0).then_some((seed, step));
        self.forward(backend, x, rows, dropout)?;
        let last = self.layers.len() - 1;
        backend.loss(
            self.spec.loss,
            &self.outputs[last],
            targets,
            class_weights,
            rows,
            self.spec.outputs,
            batch,
            Some(&mut self.grads[last]),
            stats,
        )?;
        self.backward(backend, x, rows, dropout)
    }

    /// Updates every parameter tensor from the gradients of the last
    /// [`Self::compute_gradients`], clipping their global norm first when
    /// `optimizer.clipnorm` is set. Does nothing once `stats` carries the
    /// non-finite flag.
    pub fn apply_gradients(
        &mut self,
        backend: &B,
        optimizer: &OptimizerConfig,
        lr: f32,
        step: u64,
        stats: &mut B::Stats,
    ) -> Result<()> {
        // NOTE: the clipped norm covers the loss gradient only, and the L2 term is
        // added after clipping. Keras clips the sum, because its L2 penalty is part of the loss.
        if let Some(max_norm) = optimizer.clipnorm {
            self.compute_clip_scale(backend, max_norm)?;
        }
        let scale = optimizer.clipnorm.map(|_| &self.clip);
        let w_rule = optimizer.rule(step + 1, lr, true);
        let b_rule = optimizer.rule(step + 1, lr, false);
        for layer in &mut self.layers {
            backend.optimizer_step(
                &w_rule,
                &mut layer.w,
                &layer.dw,
                &mut layer.w_slots,
                scale,
                stats,
            )?;
            backend.optimizer_step(
                &b_rule,
                &mut layer.b,
                &layer.db,
                &mut layer.b_slots,
                scale,
                stats,
            )?;
        }
        Ok(())
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
        self.check_rows(rows)?;
        self.forward(backend, x, rows, None)?;
        let last = self.layers.len() - 1;
        backend.loss(
            self.spec.loss,
            &self.outputs[last],
            targets,
            None,
            rows,
            self.spec.outputs,
            0,
            None,
            stats,
        )
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
        self.check_rows(rows)?;
        self.forward(backend, x, rows, None)?;
        let last = self.layers.len() - 1;
        backend.predict(
            self.spec.loss,
            &self.outputs[last],
            rows,
            self.spec.outputs,
            out,
        )
    }

    /// Returns the index of the first layer whose output for `x[rows, I]` contains a
    /// non-finite value, or `None` (diagnosis after a non-finite loss).
    pub fn first_nonfinite_layer(
        &mut self,
        backend: &B,
        x: &B::Buf,
        rows: usize,
    ) -> Result<Option<usize>> {
        self.check_rows(rows)?;
        self.forward(backend, x, rows, None)?;
        for (index, (output, layer)) in self.outputs.iter().zip(&self.layers).enumerate() {
            let values = backend.download(output)?;
            if values[..rows * layer.dims_out]
                .iter()
                .any(|v| !v.is_finite())
            {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// Downloads the parameters.
    pub fn params(&self, backend: &B) -> Result<Params> {
        self.download_pairs(backend, |layer| (&layer.w, &layer.b))
    }

    /// Downloads the gradients of the last [`Self::compute_gradients`] or
    /// [`Self::train_step`], shaped as parameters (`w` contains `dw`, `b` contains `db`).
    pub fn gradients(&self, backend: &B) -> Result<Params> {
        self.download_pairs(backend, |layer| (&layer.dw, &layer.db))
    }

    /// Overwrites the parameters with `params` (shaped as the spec describes).
    pub fn load_params(&mut self, backend: &B, params: &Params) -> Result<()> {
        check_params(&self.spec, params)?;
        for (layer, p) in self.layers.iter_mut().zip(&params.layers) {
            backend.write(&p.w, &mut layer.w)?;
            backend.write(&p.b, &mut layer.b)?;
        }
        Ok(())
    }

    /// Downloads the optimizer state: for each layer, the state buffers of `w`
    /// and then those of `b`.
    pub fn optimizer_state(&self, backend: &B) -> Result<Vec<Vec<f32>>> {
        self.state_buffers()
            .map(|buf| backend.download(buf))
            .collect()
    }

    /// Overwrites the optimizer state with buffers in the order
    /// [`Self::optimizer_state`] returns them (resuming a checkpoint).
    pub fn load_optimizer_state(&mut self, backend: &B, state: &[Vec<f32>]) -> Result<()> {
        let expected = self.state_buffers().count();
        if state.len() != expected {
            bail!(
                "invalid optimizer state: it has {} tensors, but this optimizer and model need {expected}",
                state.len()
            );
        }
        let buffers = self
            .layers
            .iter_mut()
            .flat_map(|layer| layer.w_slots.iter_mut().chain(layer.b_slots.iter_mut()));
        for (buf, host) in buffers.zip(state) {
            backend.write(host, buf)?;
        }
        Ok(())
    }

    /// Allocates a snapshot holding a copy of the current parameters.
    pub fn snapshot(&self, backend: &B) -> Result<Snapshot<B>> {
        let mut tensors = Vec::with_capacity(2 * self.layers.len());
        for layer in &self.layers {
            let mut w = backend.zeros(layer.dims_in * layer.dims_out)?;
            let mut b = backend.zeros(layer.dims_out)?;
            backend.copy(&layer.w, &mut w)?;
            backend.copy(&layer.b, &mut b)?;
            tensors.push(w);
            tensors.push(b);
        }
        Ok(Snapshot { tensors })
    }

    /// Overwrites `snapshot` with the current parameters (device to device).
    pub fn save_to(&self, backend: &B, snapshot: &mut Snapshot<B>) -> Result<()> {
        self.check_snapshot(snapshot)?;
        for (layer, pair) in self.layers.iter().zip(snapshot.tensors.chunks_exact_mut(2)) {
            backend.copy(&layer.w, &mut pair[0])?;
            backend.copy(&layer.b, &mut pair[1])?;
        }
        Ok(())
    }

    /// Overwrites the current parameters with `snapshot`.
    pub fn restore_from(&mut self, backend: &B, snapshot: &Snapshot<B>) -> Result<()> {
        self.check_snapshot(snapshot)?;
        for (layer, pair) in self.layers.iter_mut().zip(snapshot.tensors.chunks_exact(2)) {
            backend.copy(&pair[0], &mut layer.w)?;
            backend.copy(&pair[1], &mut layer.b)?;
        }
        Ok(())
    }

    /// Downloads the parameters held in `snapshot` (for a checkpoint).
    pub fn snapshot_params(&self, backend: &B, snapshot: &Snapshot<B>) -> Result<Params> {
        self.check_snapshot(snapshot)?;
        let mut layers = Vec::with_capacity(self.layers.len());
        for (layer, pair) in self.layers.iter().zip(snapshot.tensors.chunks_exact(2)) {
            layers.push(LayerParams {
                inputs: layer.dims_in,
                outputs: layer.dims_out,
                w: backend.download(&pair[0])?,
                b: backend.download(&pair[1])?,
            });
        }
        Ok(Params { layers })
    }

    /// Overwrites `snapshot` with `params` (resuming a checkpoint).
    pub fn write_snapshot(
        &self,
        backend: &B,
        params: &Params,
        snapshot: &mut Snapshot<B>,
    ) -> Result<()> {
        self.check_snapshot(snapshot)?;
        check_params(&self.spec, params)?;
        for (p, pair) in params
            .layers
            .iter()
            .zip(snapshot.tensors.chunks_exact_mut(2))
        {
            backend.write(&p.w, &mut pair[0])?;
            backend.write(&p.b, &mut pair[1])?;
        }
        Ok(())
    }

    /// Largest batch the buffers hold.
    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    /// Runs the forward pass on `x[rows, I]` without dropout and adds, for each
    /// hidden layer `l` listed in `layers`, the rows whose output is exactly zero
    /// to `counts[k][O_l]` (one count buffer per listed layer, dead-unit diagnostics).
    pub fn count_zero_outputs(
        &mut self,
        backend: &B,
        x: &B::Buf,
        rows: usize,
        layers: &[usize],
        counts: &mut [B::Buf],
    ) -> Result<()> {
        self.check_rows(rows)?;
        ensure!(
            layers.len() == counts.len(),
            "{} layers listed for {} count buffers",
            layers.len(),
            counts.len()
        );
        self.forward(backend, x, rows, None)?;
        for (&layer, count) in layers.iter().zip(counts) {
            let cols = self.layers[layer].dims_out;
            backend.count_zeros(&self.outputs[layer], rows, cols, count)?;
        }
        Ok(())
    }

    /// Adds `sum(dw^2)` of each layer's weight gradient from the last
    /// [`Self::compute_gradients`] to `sums[l]` (`[1]` each), on the device.
    ///
    /// The sum of squares is the 1×1 matrix product `dw · dwᵀ` plus the running
    /// sum as bias, so it needs no primitive beyond [`Backend::dense_forward`];
    /// `scratch` (`[1]`) receives the product before it is copied into `sums[l]`.
    pub fn add_weight_gradient_squares(
        &self,
        backend: &B,
        sums: &mut [B::Buf],
        scratch: &mut B::Buf,
    ) -> Result<()> {
        ensure!(
            sums.len() == self.layers.len(),
            "{} sums given for {} layers",
            sums.len(),
            self.layers.len()
        );
        for (layer, sum) in self.layers.iter().zip(sums) {
            let dims = Dims {
                rows: 1,
                inputs: layer.dims_in * layer.dims_out,
                outputs: 1,
            };
            let act = crate::model::Activation::Linear;
            backend.dense_forward(&layer.dw, &layer.dw, sum, dims, act, scratch)?;
            backend.copy(scratch, sum)?;
        }
        Ok(())
    }

    fn check_rows(&self, rows: usize) -> Result<()> {
        if rows == 0 || rows > self.max_rows {
            bail!(
                "a batch of {rows} rows does not fit this network: expected 1 to {} rows",
                self.max_rows
            );
        }
        Ok(())
    }

    fn check_snapshot(&self, snapshot: &Snapshot<B>) -> Result<()> {
        ensure!(
            snapshot.tensors.len() == 2 * self.layers.len(),
            "the snapshot holds {} tensors, this network has {}",
            snapshot.tensors.len(),
            2 * self.layers.len()
        );
        Ok(())
    }

    fn dims(&self, index: usize, rows: usize) -> Dims {
        let layer = &self.layers[index];
        Dims {
            rows,
            inputs: layer.dims_in,
            outputs: layer.dims_out,
        }
    }

    /// Fills `outputs` for `x[rows, I]`; `dropout` is `(seed, step)` when training with dropout.
    fn forward(
        &mut self,
        backend: &B,
        x: &B::Buf,
        rows: usize,
        dropout: Option<(u64, u64)>,
    ) -> Result<()> {
        let hidden = self.spec.hidden.len();
        for index in 0..self.layers.len() {
            let dims = self.dims(index, rows);
            let act = self.spec.layer_activation(index);
            let (done, rest) = self.outputs.split_at_mut(index);
            let input = match index {
                0 => x,
                _ if dropout.is_some() => &self.dropped[index - 1],
                _ => &done[index - 1],
            };
            let layer = &self.layers[index];
            backend.dense_forward(input, &layer.w, &layer.b, dims, act, &mut rest[0])?;
            if let Some(key) = dropout.filter(|_| index < hidden) {
                let mask = dropout_mask(key, index, self.spec.dropout);
                let len = rows * dims.outputs;
                backend.dropout_forward(
                    &self.outputs[index],
                    len,
                    mask,
                    &mut self.dropped[index],
                )?;
            }
        }
        Ok(())
    }

    /// Backpropagates `grads[last]` (the loss gradient) into every layer's `dw` and `db`.
    fn backward(
        &mut self,
        backend: &B,
        x: &B::Buf,
        rows: usize,
        dropout: Option<(u64, u64)>,
    ) -> Result<()> {
        let rate = self.spec.dropout;
        for index in (0..self.layers.len()).rev() {
            let dims = self.dims(index, rows);
            let act = self.spec.layer_activation(index);
            let input = match index {
                0 => x,
                _ if dropout.is_some() => &self.dropped[index - 1],
                _ => &self.outputs[index - 1],
            };
            let (before, rest) = self.grads.split_at_mut(index);
            // The first layer's input is the data, which needs no gradient.
            let dx = before.last_mut();
            let layer = &mut self.layers[index];
            backend.dense_backward(
                input,
                &layer.w,
                &self.outputs[index],
                dims,
                act,
                &mut rest[0],
                &mut layer.dw,
                &mut layer.db,
                dx,
            )?;
            if let (Some(key), Some(dx)) = (dropout, before.last_mut()) {
                let mask = dropout_mask(key, index - 1, rate);
                backend.dropout_backward(dx, rows * dims.inputs, mask)?;
            }
        }
        Ok(())
    }

    /// Writes the global-norm clipping factor of all gradients into `clip`.
    fn compute_clip_scale(&mut self, backend: &B, max_norm: f32) -> Result<()> {
        let count = 2 * self.layers.len();
        let tensors = self.layers.iter().flat_map(|layer| [&layer.dw, &layer.db]);
        if count <= STACK_TENSORS {
            let mut refs = [&self.layers[0].dw; STACK_TENSORS];
            for (slot, tensor) in refs.iter_mut().zip(tensors) {
                *slot = tensor;
            }
            backend.clip_scale(&refs[..count], max_norm, &mut self.clip)
        } else {
            let refs: Vec<&B::Buf> = tensors.collect();
            backend.clip_scale(&refs, max_norm, &mut self.clip)
        }
    }

    fn state_buffers(&self) -> impl Iterator<Item = &B::Buf> {
        self.layers
            .iter()
            .flat_map(|layer| layer.w_slots.iter().chain(&layer.b_slots))
    }

    fn download_pairs(
        &self,
        backend: &B,
        pick: impl Fn(&Layer<B>) -> (&B::Buf, &B::Buf),
    ) -> Result<Params> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let (w, b) = pick(layer);
            layers.push(LayerParams {
                inputs: layer.dims_in,
                outputs: layer.dims_out,
                w: backend.download(w)?,
                b: backend.download(b)?,
            });
        }
        Ok(Params { layers })
    }
}

/// Fails unless `params` has the layer shapes `spec` describes.
fn check_params(spec: &ModelSpec, params: &Params) -> Result<()> {
    let shapes = spec.layer_shapes();
    if params.layers.len() != shapes.len() {
        bail!(
            "the parameters have {} layers but the architecture has {}",
            params.layers.len(),
            shapes.len()
        );
    }
    for (index, (p, &(inputs, outputs))) in params.layers.iter().zip(&shapes).enumerate() {
        let shape_ok = p.inputs == inputs && p.outputs == outputs;
        if !shape_ok || p.w.len() != inputs * outputs || p.b.len() != outputs {
            bail!(
                "layer {index} has weights [{}, {}] ({} values) and {} biases, \
                 but the architecture needs [{outputs}, {inputs}] and {outputs} biases",
                p.outputs,
                p.inputs,
                p.w.len(),
                p.b.len()
            );
        }
    }
    Ok(())
}

/// Identifies the mask of hidden layer `layer`; `key` is `(seed, step)`.
fn dropout_mask((seed, step): (u64, u64), layer: usize, rate: f32) -> DropoutMask {
    DropoutMask {
        seed,
        step,
        layer: layer as u64,
        rate,
    }
}

fn zero_buffers<B: Backend>(backend: &B, count: usize, len: usize) -> Result<Vec<B::Buf>> {
    (0..count).map(|_| backend.zeros(len)).collect()
}
