//! The device interface: dense-net primitives on device-resident buffers.
//!
//! All matrices are row-major f32. Letters in shapes: N batch rows, I layer
//! inputs, O layer outputs, C model outputs. Weights are stored as PyTorch's
//! `nn.Linear` stores them, `w[O, I]`, so a forward pass is `x · wᵀ + b`.
//!
//! The fit loop in `train/` only calls this trait, so a CUDA implementation
//! slots in beside [`cpu::Cpu`]. Rules an implementation keeps:
//! - every scalar the loop needs (loss sums, accuracy counts, the non-finite
//!   flag) lives in a [`Backend::Stats`] on the device and is read back only by
//!   [`Backend::read_stats`]. The fit loop calls it at most once per progress
//!   update plus once per epoch (the learning-rate range test reads it every
//!   step, because it needs each step's loss);
//! - [`Backend::optimizer_step`] does nothing once the non-finite flag of its
//!   `stats` is raised, so the weights stay as they were before the first bad
//!   batch without a host round trip.

pub mod cpu;
pub mod cuda;

use crate::model::Activation;
use crate::optim::UpdateRule;
use anyhow::Result;

/// Loss paired with its output activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Softmax over C >= 3 outputs with categorical cross-entropy; targets are class indices.
    SoftmaxCrossEntropy,
    /// Sigmoid over one output with binary cross-entropy; targets are 0 or 1.
    SigmoidBinaryCrossEntropy,
    /// Identity output with mean squared error; targets are real values.
    MeanSquaredError,
}

/// Shape of one dense layer applied to a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Rows in the batch (N).
    pub rows: usize,
    /// Inputs of the layer (I).
    pub inputs: usize,
    /// Outputs of the layer (O).
    pub outputs: usize,
}

/// Identity of one dropout mask: the same values draw the same mask on every device.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DropoutMask {
    /// The run's seed.
    pub seed: u64,
    /// The optimizer step (counted from 0 over the whole run).
    pub step: u64,
    /// Index of the hidden layer whose output is dropped.
    pub layer: u64,
    /// Probability of dropping an element, in `[0, 1)`.
    pub rate: f32,
}

/// Values accumulated in a [`Backend::Stats`] since its last reset.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StatsValues {
    /// Sum over rows of the (class-weighted) per-row loss.
    pub loss_sum: f64,
    /// Rows seen.
    pub rows: f64,
    /// Rows whose predicted class equals the target (classification only).
    pub correct: f64,
    /// Sum over rows of |prediction - target| (regression only, in training units).
    pub abs_error_sum: f64,
    /// Sum of the L2 penalties `l2 * sum(w^2)` added by optimizer steps.
    pub penalty_sum: f64,
    /// Batch index passed to [`Backend::loss`] of the first batch whose loss was not
    /// finite, or `None`.
    pub nonfinite_batch: Option<u64>,
}

/// A compute device for dense networks.
pub trait Backend: Sync {
    /// A device buffer of f32 values.
    type Buf: Send + Sync;
    /// A device buffer of u32 values (row indices).
    type Idx: Send + Sync;
    /// Device-resident accumulators for losses, metrics and the non-finite flag.
    type Stats: Send;

    /// Describes the device for the run summary, e.g. `cpu (2 threads)`.
    fn description(&self) -> String;

    /// Runs `f`, which calls this backend many times, on the backend's own
    /// worker threads where it has them. The CPU backend's parallel passes
    /// then start from one of its workers, instead of waking a blocked
    /// caller after each pass (`cargo bench --bench cpu_threading` times both).
    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        f()
    }

    /// Allocates `len` zeros.
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// Copies host values into a new buffer.
    fn upload(&self, host: &[f32]) -> Result<Self::Buf>;
    /// Moves host values into a new buffer. A backend whose buffers live in
    /// host memory keeps the vector itself, so large data is never held twice.
    fn upload_vec(&self, host: Vec<f32>) -> Result<Self::Buf> {
        self.upload(&host)
    }
    /// Copies host values into an existing buffer of the same length.
    fn write(&self, host: &[f32], dst: &mut Self::Buf) -> Result<()>;
    /// Copies a buffer to the host.
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>>;
    /// Copies `src` into `dst`; both have the same length.
    fn copy(&self, src: &Self::Buf, dst: &mut Self::Buf) -> Result<()>;
    /// Copies host indices into a new buffer.
    fn upload_idx(&self, host: &[u32]) -> Result<Self::Idx>;
    /// Copies host indices into an existing buffer of the same length.
    fn write_idx(&self, host: &[u32], dst: &mut Self::Idx) -> Result<()>;

    /// Creates zeroed accumulators.
    fn new_stats(&self) -> Result<Self::Stats>;
    /// Zeroes the accumulators and clears the non-finite flag.
    fn reset_stats(&self, stats: &mut Self::Stats) -> Result<()>;
    /// Reads the accumulators back to the host (the loop's only synchronisation).
    fn read_stats(&self, stats: &Self::Stats) -> Result<StatsValues>;
    /// Overwrites the accumulators with `values`, the non-finite flag
    /// included, so a run resumed in the middle of an epoch adds its next
    /// batches to the same sums as an uninterrupted run.
    ///
    /// The default returns an error, so a backend without it can resume only
    /// at the end of an epoch.
    fn write_stats(&self, values: &StatsValues, stats: &mut Self::Stats) -> Result<()> {
        let _ = (values, stats);
        anyhow::bail!(
            "{} cannot restore training accumulators, so it cannot resume a checkpoint \
             written in the middle of an epoch",
            self.description()
        )
    }

    /// Gathers rows: `dst[r, :] = src[idx[start + r], :]` for `r` in `0..count`.
    ///
    /// `src` is `[rows, cols]`, and `dst` has room for at least `count * cols` values.
    fn gather_rows(
        &self,
        src: &Self::Buf,
        cols: usize,
        idx: &Self::Idx,
        start: usize,
        count: usize,
        dst: &mut Self::Buf,
    ) -> Result<()>;

    /// Computes `y[N, O] = act(x[N, I] · w[O, I]ᵀ + b[O])`.
    fn dense_forward(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        b: &Self::Buf,
        dims: Dims,
        act: Activation,
        y: &mut Self::Buf,
    ) -> Result<()>;

    /// Backpropagates through one dense layer.
    ///
    /// On entry `dy[N, O]` is the gradient of the loss with respect to `y`;
    /// it is overwritten with `dz = dy * act'(y)`, where `y` is the layer's
    /// activation output. Then `dw[O, I] = dzᵀ · x`, `db[O] = sum over N of dz`,
    /// and, when `dx` is given, `dx[N, I] = dz · w`. `dw` and `db` are
    /// overwritten, not accumulated.
    #[allow(clippy::too_many_arguments)]
    fn dense_backward(
        &self,
        x: &Self::Buf,
        w: &Self::Buf,
        y: &Self::Buf,
        dims: Dims,
        act: Activation,
        dy: &mut Self::Buf,
        dw: &mut Self::Buf,
        db: &mut Self::Buf,
        dx: Option<&mut Self::Buf>,
    ) -> Result<()>;

    /// Applies inverted dropout: `out = y * keep / (1 - rate)` for the first `len` values.
    fn dropout_forward(
        &self,
        y: &Self::Buf,
        len: usize,
        mask: DropoutMask,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// Backpropagates through dropout in place: `dy = dy * keep / (1 - rate)`.
    fn dropout_backward(&self, dy: &mut Self::Buf, len: usize, mask: DropoutMask) -> Result<()>;

    /// Computes the loss of a batch from the logits (pre-activation outputs).
    ///
    /// `logits` is `[N, C]`, `targets` is `[N]` (class indices as f32, or
    /// values). `class_weights[C']` (C' classes) scales each row's loss and
    /// gradient by its class's weight. The batch loss is
    /// `sum(weight * row_loss) / N`; `dlogits[N, C]`, when given, receives its
    /// gradient. Adds to `stats` the loss sum, the rows, the correct
    /// predictions or absolute errors, and raises the non-finite flag with
    /// `batch` when the loss is not finite.
    #[allow(clippy::too_many_arguments)]
    fn loss(
        &self,
        kind: LossKind,
        logits: &Self::Buf,
        targets: &Self::Buf,
        class_weights: Option<&Self::Buf>,
        rows: usize,
        outputs: usize,
        batch: u64,
        dlogits: Option<&mut Self::Buf>,
        stats: &mut Self::Stats,
    ) -> Result<()>;

    /// Turns logits `[N, C]` into predictions: softmax probabilities,
    /// the sigmoid probability, or the identity.
    fn predict(
        &self,
        kind: LossKind,
        logits: &Self::Buf,
        rows: usize,
        outputs: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// Writes to `scale[0]` the factor that clips the global gradient norm:
    /// `min(1, max_norm / (norm + 1e-6))` where `norm` is the L2 norm of all of `grads`.
    fn clip_scale(&self, grads: &[&Self::Buf], max_norm: f32, scale: &mut Self::Buf) -> Result<()>;

    /// Updates one parameter tensor in place with one fused pass.
    ///
    /// `slots` contains the optimizer state the rule needs
    /// ([`UpdateRule::slot_count`] buffers, each the length of `param`).
    /// `grad_scale[0]`, when given, multiplies the gradient first. Skips the
    /// update when `stats` carries the non-finite flag. Adds the L2 penalty of
    /// `param` to `stats` when the rule has one.
    fn optimizer_step(
        &self,
        rule: &UpdateRule,
        param: &mut Self::Buf,
        grad: &Self::Buf,
        slots: &mut [Self::Buf],
        grad_scale: Option<&Self::Buf>,
        stats: &mut Self::Stats,
    ) -> Result<()>;

    /// Counts, per column of `y[N, O]`, the rows where the value is exactly zero,
    /// adding to `counts[O]` (dead ReLU diagnostics).
    fn count_zeros(
        &self,
        y: &Self::Buf,
        rows: usize,
        cols: usize,
        counts: &mut Self::Buf,
    ) -> Result<()>;
}

/// Checks the output count of a loss and returns how many class weights it takes
/// (classes for softmax, 2 for sigmoid, 0 for mean squared error).
pub fn loss_class_count(kind: LossKind, outputs: usize, class_weights: bool) -> Result<usize> {
    let c = outputs;
    match kind {
        LossKind::SoftmaxCrossEntropy => {
            anyhow::ensure!(
                c >= 2,
                "loss: softmax cross-entropy needs at least 2 outputs, got {c}"
            );
            Ok(c)
        }
        LossKind::SigmoidBinaryCrossEntropy => {
            anyhow::ensure!(c == 1, "loss: binary cross-entropy needs 1 output, got {c}");
            Ok(2)
        }
        LossKind::MeanSquaredError => {
            anyhow::ensure!(c == 1, "loss: mean squared error needs 1 output, got {c}");
            anyhow::ensure!(
                !class_weights,
                "loss: class weights apply to classification only, not to mean squared error"
            );
            Ok(0)
        }
    }
}
