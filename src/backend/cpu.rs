//! The CPU backend: the reference implementation of every primitive.
//!
//! Buffers are plain `Vec<f32>` in host memory. Matrix products go through
//! the `gemm` crate with row-major strides (a transpose is a swap of strides,
//! never a copy), split across the backend's own rayon pool. Elementwise
//! passes are split across the pool only above [`PAR_MIN_VALUES`]. Every
//! reduction (bias gradients, loss sums, norms, L2 penalties) runs in a fixed
//! order, so a run is reproducible bit for bit for a given thread count.

use crate::backend::{Backend, Dims, DropoutMask, LossKind, StatsValues};
use crate::model::Activation;
use crate::optim::{AdamScalars, Optimizer, UpdateRule};
use crate::rng;
use anyhow::{Context, Result, bail, ensure};
use gemm::Parallelism;
use rayon::prelude::*;
use std::sync::{Mutex, TryLockError};

/// Smallest elementwise pass (in values) that is split across threads.
const PAR_MIN_VALUES: usize = 1 << 15;
/// Values per task of a parallel elementwise pass. The split of the L2
/// penalty sum depends only on this, never on the thread count or timing.
const PAR_CHUNK: usize = 1 << 13;
/// Smallest matrix product (`m * n * k` multiply-adds) that is split across threads.
const GEMM_PAR_MIN: usize = 1 << 18;
/// Largest product split by output columns, one single-threaded call per
/// thread; larger ones use the gemm crate's own threading. The column split
/// ran 10-60% faster than the crate's threading on the small benchmark
/// task's products (at most 128 x 256 x 784) on 2 cores. On the wide
/// network's products (512 x 2048 x 2048 and the like) both ways ran equally
/// fast, at about 140-175 GFLOP/s on 2 cores (`cargo bench --bench cpu_threading`).
const GEMM_SPLIT_MAX: usize = 1 << 25;
/// Minimum output columns of one part of a split product.
const GEMM_SPLIT_COLS: usize = 32;

/// The CPU device with its own thread pool.
pub struct Cpu {
    threads: usize,
    pool: rayon::ThreadPool,
    /// Per-chunk L2 penalties of a parallel optimizer step; its capacity is
    /// reused, so it grows only on the first step of the largest tensor.
    partial_sums: Mutex<Vec<f64>>,
}

/// Accumulators of the CPU backend (plain host values).
#[derive(Clone, Debug, Default)]
pub struct CpuStats {
    values: StatsValues,
}

impl Cpu {
    /// Creates a CPU backend using `threads` threads (0 means all cores).
    ///
    /// More threads than cores is an error: it only adds contention, and a
    /// mistyped count (`--threads 100000`) would otherwise start that many threads.
    pub fn new(threads: usize) -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if threads > cores {
            bail!(
                "invalid --threads {threads}: this machine has {cores} cores; use at most {cores} (0 uses all)"
            );
        }
        let threads = if threads == 0 { cores } else { threads };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("densetrain-cpu-{i}"))
            .build()
            .with_context(|| format!("failed to start a pool of {threads} CPU threads"))?;
        Ok(Self {
            threads,
            pool,
            partial_sums: Mutex::new(Vec::new()),
        })
    }

    /// Number of threads used.
    pub fn threads(&self) -> usize {
        self.threads
    }

    fn parallel(&self, values: usize) -> bool {
        self.threads > 1 && values >= PAR_MIN_VALUES
    }

    /// Applies `f` to each row of `data[rows, cols]`, in parallel for large passes.
    fn for_each_row<F>(&self, data: &mut [f32], rows: usize, cols: usize, f: F)
    where
        F: Fn(&mut [f32]) + Sync,
    {
        let data = &mut data[..rows * cols];
        if self.parallel(data.len()) {
            let rows_per_task = (PAR_CHUNK / cols).max(1);
            self.pool.install(|| {
                data.par_chunks_mut(rows_per_task * cols)
                    .for_each(|block| block.chunks_exact_mut(cols).for_each(&f));
            });
        } else {
            data.chunks_exact_mut(cols).for_each(f);
        }
    }

    /// Applies `f(offset, chunk)` to consecutive chunks of `data`, in parallel for large passes.
    fn for_each_chunk<F>(&self, data: &mut [f32], f: F)
    where
        F: Fn(usize, &mut [f32]) + Sync,
    {
        if self.parallel(data.len()) {
            self.pool.install(|| {
                data.par_chunks_mut(PAR_CHUNK)
                    .enumerate()
                    .for_each(|(i, chunk)| f(i * PAR_CHUNK, chunk));
            });
        } else {
            f(0, data);
        }
    }

    /// Computes `dst[m, n] = a[m, k] · b[k, n]`, overwriting `dst`. Public so
    /// the benchmarks time the products the dense passes run.
    // NOTE: the gemm crate allocates its packing buffers inside each call for
    // products past its small-size paths; the backend's own passes allocate nothing.
    pub fn matmul(&self, dst: &mut [f32], a: Operand<'_>, b: Operand<'_>) -> Result<()> {
        self.matmul_threaded(dst, a, b, ProductThreading::Auto)
    }

    /// Computes the product of [`Self::matmul`], spread over the threads by
    /// `threading`. Public so a benchmark can compare the ways.
    pub fn matmul_threaded(
        &self,
        dst: &mut [f32],
        a: Operand<'_>,
        b: Operand<'_>,
        threading: ProductThreading,
    ) -> Result<()> {
        let (m, k) = a.logical_shape();
        let (k2, n) = b.logical_shape();
        ensure!(k == k2, "matmul: inner dimensions differ ({k} and {k2})");
        ensure!(
            a.data.len() >= m * k && b.data.len() >= k * n && dst.len() >= m * n,
            "matmul: a buffer is shorter than its [{m}, {k}] x [{k}, {n}] shape"
        );
        let dst = &mut dst[..m * n];
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            dst.fill(0.0);
            return Ok(());
        }
        let (a_rs, a_cs) = a.strides();
        let (b_rs, b_cs) = b.strides();
        let dst_ptr = SendPtr(dst.as_mut_ptr());
        // Computes output columns `first..first + cols`.
        let run = |first: usize, cols: usize, parallelism: Parallelism| {
            let dst = dst_ptr;
            // SAFETY: `a` and `b` contain at least `m * k` and `k * n` values (checked
            // above), and their strides address exactly the elements of those
            // row-major or transposed shapes, so every read is in bounds. Column
            // `first` of `b` starts `first * b_cs` values in. `dst` contains
            // `m * n` values written with row stride `n`. Each call writes only
            // columns `first..first + cols <= n`, so concurrent calls on disjoint
            // column ranges never write the same value. `dst` cannot alias `a`
            // or `b` because it is borrowed mutably.
            unsafe {
                gemm::gemm(
                    m,
                    cols,
                    k,
                    dst.0.add(first),
                    1,
                    n as isize,
                    false,
                    a.data.as_ptr(),
                    a_cs,
                    a_rs,
                    b.data.as_ptr().offset(first as isize * b_cs),
                    b_cs,
                    b_rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        };
        let work = m * n * k;
        let parts = self.threads.min(n / GEMM_SPLIT_COLS);
        let split = match threading {
            ProductThreading::Auto => work <= GEMM_SPLIT_MAX,
            ProductThreading::ColumnSplit => true,
            ProductThreading::GemmCrate => false,
        };
        if self.threads == 1 || (threading == ProductThreading::Auto && work < GEMM_PAR_MIN) {
            run(0, n, Parallelism::None);
        } else if split && parts > 1 {
            // Equal parts rounded to whole tiles of 16 columns; the last takes the rest.
            let step = n.div_ceil(parts).div_ceil(16) * 16;
            self.pool.install(|| {
                (0..parts).into_par_iter().for_each(|part| {
                    let first = part * step;
                    if first < n {
                        run(first, step.min(n - first), Parallelism::None);
                    }
                });
            });
        } else {
            self.pool
                .install(|| run(0, n, Parallelism::Rayon(self.threads)));
        }
        Ok(())
    }
}

/// The way [`Cpu::matmul_threaded`] spreads one product over the backend's threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProductThreading {
    /// The choice of [`Cpu::matmul`]: one thread below 2^18 multiply-adds, a
    /// column split up to 2^25, the gemm crate's own threading above.
    Auto,
    /// Output columns split into one part per thread, each part computed by
    /// a single-threaded gemm call. Parts have at least 32 columns, and a
    /// product too narrow for two parts runs as `GemmCrate`.
    ColumnSplit,
    /// One gemm call using the gemm crate's own threading.
    GemmCrate,
}

/// A raw output pointer shared by the threads of a split matrix product,
/// each of which writes its own columns.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: the pointer is only written through on disjoint column ranges
// (see `Cpu::matmul`), and the buffer outlives the parallel section.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// A row-major buffer used as a matrix-product operand, as stored or transposed.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    data: &'a [f32],
    /// Stored rows.
    rows: usize,
    /// Stored columns (the row stride).
    cols: usize,
    transposed: bool,
}

impl<'a> Operand<'a> {
    /// Uses `data[rows, cols]` as stored.
    pub fn plain(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            transposed: false,
        }
    }

    /// Uses the transpose of `data[rows, cols]`, without copying it.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            transposed: true,
        }
    }

    /// Shape as the product reads it.
    fn logical_shape(&self) -> (usize, usize) {
        if self.transposed {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        }
    }

    /// Row and column strides of the logical matrix.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (1, self.cols as isize)
        } else {
            (self.cols as isize, 1)
        }
    }
}

/// Fails unless `buf` contains at least `need` values.
fn check_len(op: &str, name: &str, buf: &[f32], need: usize) -> Result<()> {
    if buf.len() < need {
        bail!(
            "{op}: buffer '{name}' is too short: it has {} values, the shape needs {need}",
            buf.len()
        );
    }
    Ok(())
}

/// Runs `$body` with `$a` bound to `$act` as a constant, so the compiler
/// specialises each pass for one activation.
macro_rules! with_activation {
    ($act:expr, $a:ident => $body:expr) => {
        match $act {
            Activation::Relu => {
                let $a = Activation::Relu;
                $body
            }
            Activation::LeakyRelu => {
                let $a = Activation::LeakyRelu;
                $body
            }
            Activation::Elu => {
                let $a = Activation::Elu;
                $body
            }
            Activation::Tanh => {
                let $a = Activation::Tanh;
                $body
            }
            Activation::Sigmoid => {
                let $a = Activation::Sigmoid;
                $body
            }
            Activation::Linear => {
                let $a = Activation::Linear;
                $body
            }
        }
    };
}

impl Backend for Cpu {
    type Buf = Vec<f32>;
    type Idx = Vec<u32>;
    type Stats = CpuStats;

    fn description(&self) -> String {
        let unit = if self.threads == 1 {
            "thread"
        } else {
            "threads"
        };
        format!("cpu ({} {unit})", self.threads)
    }

    fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        if self.threads == 1 {
            f()
        } else {
            self.pool.install(f)
        }
    }

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        let mut buf = Vec::new();
        buf.try_reserve_exact(len).map_err(|_| {
            anyhow::anyhow!(
                "failed to allocate {:.2} GiB for a buffer of {len} values; \
                 use smaller --layers or --batch-size",
                (len as f64 * 4.0) / (1u64 << 30) as f64
            )
        })?;
        buf.resize(len, 0.0);
        Ok(buf)
    }

    fn upload(&self, host: &[f32]) -> Result<Vec<f32>> {
        Ok(host.to_vec())
    }

    fn upload_vec(&self, host: Vec<f32>) -> Result<Vec<f32>> {
        Ok(host)
    }

    fn write(&self, host: &[f32], dst: &mut Vec<f32>) -> Result<()> {
        ensure!(
            host.len() == dst.len(),
            "write: {} host values do not fit a buffer of {}",
            host.len(),
            dst.len()
        );
        dst.copy_from_slice(host);
        Ok(())
    }

    fn download(&self, buf: &Vec<f32>) -> Result<Vec<f32>> {
        Ok(buf.clone())
    }

    fn copy(&self, src: &Vec<f32>, dst: &mut Vec<f32>) -> Result<()> {
        ensure!(
            src.len() == dst.len(),
            "copy: source holds {} values, destination {}",
            src.len(),
            dst.len()
        );
        dst.copy_from_slice(src);
        Ok(())
    }

    fn upload_idx(&self, host: &[u32]) -> Result<Vec<u32>> {
        Ok(host.to_vec())
    }

    fn write_idx(&self, host: &[u32], dst: &mut Vec<u32>) -> Result<()> {
        ensure!(
            host.len() == dst.len(),
            "write_idx: {} host indices do not fit a buffer of {}",
            host.len(),
            dst.len()
        );
        dst.copy_from_slice(host);
        Ok(())
    }

    fn new_stats(&self) -> Result<CpuStats> {
        Ok(CpuStats::default())
    }

    fn reset_stats(&self, stats: &mut CpuStats) -> Result<()> {
        stats.values = StatsValues::default();
        Ok(())
    }

    fn read_stats(&self, stats: &CpuStats) -> Result<StatsValues> {
        Ok(stats.values)
    }

    fn write_stats(&self, values: &StatsValues, stats: &mut CpuStats) -> Result<()> {
        stats.values = *values;
        Ok(())
    }

    fn gather_rows(
        &self,
        src: &Vec<f32>,
        cols: usize,
        idx: &Vec<u32>,
        start: usize,
        count: usize,
        dst: &mut Vec<f32>,
    ) -> Result<()> {
        ensure!(
            start + count <= idx.len(),
            "gather_rows: rows {start}..{} are past the {} indices",
            start + count,
            idx.len()
        );
        check_len("gather_rows", "dst", dst, count * cols)?;
        let src_rows = src.len().checked_div(cols).unwrap_or(0);
        for (r, &i) in idx[start..start + count].iter().enumerate() {
            let i = i as usize;
            ensure!(
                i < src_rows || cols == 0,
                "gather_rows: index {i} is out of range for {src_rows} rows"
            );
            dst[r * cols..(r + 1) * cols].copy_from_slice(&src[i * cols..(i + 1) * cols]);
        }
        Ok(())
    }

    fn dense_forward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        b: &Vec<f32>,
        dims: Dims,
        act: Activation,
        y: &mut Vec<f32>,
    ) -> Result<()> {
        // x[N, I], w[O, I], b[O], y[N, O]
        let Dims {
            rows: n,
            inputs: i,
            outputs: o,
        } = dims;
        check_len("dense_forward", "x", x, n * i)?;
        check_len("dense_forward", "w", w, o * i)?;
        check_len("dense_forward", "b", b, o)?;
        check_len("dense_forward", "y", y, n * o)?;
        if n == 0 || o == 0 {
            return Ok(());
        }
        self.matmul(y, Operand::plain(x, n, i), Operand::transposed(w, o, i))?;
        let b = &b[..o];
        with_activation!(act, a => self.for_each_row(y, n, o, |row| {
            for (v, &bias) in row.iter_mut().zip(b) {
                *v = a.apply(*v + bias);
            }
        }));
        Ok(())
    }

    fn dense_backward(
        &self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        y: &Vec<f32>,
        dims: Dims,
        act: Activation,
        dy: &mut Vec<f32>,
        dw: &mut Vec<f32>,
        db: &mut Vec<f32>,
        dx: Option<&mut Vec<f32>>,
    ) -> Result<()> {
        // x[N, I], w[O, I], y[N, O], dy[N, O] (becomes dz), dw[O, I], db[O], dx[N, I]
        let Dims {
            rows: n,
            inputs: i,
            outputs: o,
        } = dims;
        check_len("dense_backward", "x", x, n * i)?;
        check_len("dense_backward", "w", w, o * i)?;
        check_len("dense_backward", "y", y, n * o)?;
        check_len("dense_backward", "dy", dy, n * o)?;
        check_len("dense_backward", "dw", dw, o * i)?;
        check_len("dense_backward", "db", db, o)?;
        if let Some(dx) = dx.as_deref() {
            check_len("dense_backward", "dx", dx, n * i)?;
        }

        // One serial pass: dz = dy * act'(y) and db = sum over rows of dz, in row order.
        let db = &mut db[..o];
        db.fill(0.0);
        if o > 0 {
            let rows = dy[..n * o].chunks_exact_mut(o).zip(y.chunks_exact(o));
            with_activation!(act, a => for (dz_row, y_row) in rows {
                for ((dz, &yv), acc) in dz_row.iter_mut().zip(y_row).zip(db.iter_mut()) {
                    *dz *= a.derivative_from_output(yv);
                    *acc += *dz;
                }
            });
        }

        // dw[O, I] = dzᵀ[O, N] · x[N, I]
        self.matmul(dw, Operand::transposed(dy, n, o), Operand::plain(x, n, i))?;
        // dx[N, I] = dz[N, O] · w[O, I]
        if let Some(dx) = dx {
            self.matmul(dx, Operand::plain(dy, n, o), Operand::plain(w, o, i))?;
        }
        Ok(())
    }

    fn dropout_forward(
        &self,
        y: &Vec<f32>,
        len: usize,
        mask: DropoutMask,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("dropout_forward", "y", y, len)?;
        check_len("dropout_forward", "out", out, len)?;
        check_rate(mask.rate)?;
        let key = rng::dropout_key(mask.step, mask.layer);
        let scale = 1.0 / (1.0 - mask.rate);
        let y = &y[..len];
        self.for_each_chunk(&mut out[..len], |offset, chunk| {
            for (j, v) in chunk.iter_mut().enumerate() {
                let e = offset + j;
                *v = if keeps(mask, key, e) {
                    y[e] * scale
                } else {
                    0.0
                };
            }
        });
        Ok(())
    }

    fn dropout_backward(&self, dy: &mut Vec<f32>, len: usize, mask: DropoutMask) -> Result<()> {
        check_len("dropout_backward", "dy", dy, len)?;
        check_rate(mask.rate)?;
        let key = rng::dropout_key(mask.step, mask.layer);
        let scale = 1.0 / (1.0 - mask.rate);
        self.for_each_chunk(&mut dy[..len], |offset, chunk| {
            for (j, v) in chunk.iter_mut().enumerate() {
                *v = if keeps(mask, key, offset + j) {
                    *v * scale
                } else {
                    0.0
                };
            }
        });
        Ok(())
    }

    fn loss(
        &self,
        kind: LossKind,
        logits: &Vec<f32>,
        targets: &Vec<f32>,
        class_weights: Option<&Vec<f32>>,
        rows: usize,
        outputs: usize,
        batch: u64,
        mut dlogits: Option<&mut Vec<f32>>,
        stats: &mut CpuStats,
    ) -> Result<()> {
        // logits[N, C], targets[N], class_weights[C'], dlogits[N, C]
        let (n, c) = (rows, outputs);
        check_len("loss", "logits", logits, n * c)?;
        check_len("loss", "targets", targets, n)?;
        if let Some(d) = dlogits.as_deref() {
            check_len("loss", "dlogits", d, n * c)?;
        }
        let classes = super::loss_class_count(kind, c, class_weights.is_some())?;
        if let Some(weights) = class_weights {
            check_len("loss", "class_weights", weights, classes)?;
        }

        let inv_n = 1.0 / n.max(1) as f64;
        let mut sums = RowSums::default();
        for r in 0..n {
            let z = &logits[r * c..(r + 1) * c];
            let target = targets[r];
            let class = match kind {
                LossKind::SoftmaxCrossEntropy => Some(class_index(target, c, r)?),
                LossKind::SigmoidBinaryCrossEntropy => Some(class_index(target, 2, r)?),
                LossKind::MeanSquaredError => None,
            };
            let weight = match (class_weights, class) {
                (Some(weights), Some(k)) => f64::from(weights[k]),
                _ => 1.0,
            };
            let grad = dlogits.as_deref_mut().map(|d| &mut d[r * c..(r + 1) * c]);
            let row = match kind {
                LossKind::SoftmaxCrossEntropy => {
                    softmax_cross_entropy_row(z, class.unwrap_or(0), weight * inv_n, grad)
                }
                LossKind::SigmoidBinaryCrossEntropy => {
                    sigmoid_cross_entropy_row(z[0], target, weight * inv_n, grad)
                }
                LossKind::MeanSquaredError => squared_error_row(z[0], target, inv_n, grad),
            };
            sums.loss += weight * row.loss;
            sums.correct += f64::from(u8::from(row.correct));
            sums.abs_error += row.abs_error;
        }

        let values = &mut stats.values;
        values.loss_sum += sums.loss;
        values.rows += n as f64;
        match kind {
            LossKind::MeanSquaredError => values.abs_error_sum += sums.abs_error,
            _ => values.correct += sums.correct,
        }
        if !sums.loss.is_finite() && values.nonfinite_batch.is_none() {
            values.nonfinite_batch = Some(batch);
        }
        Ok(())
    }

    fn predict(
        &self,
        kind: LossKind,
        logits: &Vec<f32>,
        rows: usize,
        outputs: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let (n, c) = (rows, outputs);
        check_len("predict", "logits", logits, n * c)?;
        check_len("predict", "out", out, n * c)?;
        let z = &logits[..n * c];
        let out = &mut out[..n * c];
        match kind {
            LossKind::SoftmaxCrossEntropy => {
                if c > 0 {
                    for (zr, pr) in z.chunks_exact(c).zip(out.chunks_exact_mut(c)) {
                        softmax_row(zr, pr);
                    }
                }
            }
            LossKind::SigmoidBinaryCrossEntropy => {
                for (p, &zv) in out.iter_mut().zip(z) {
                    *p = sigmoid(f64::from(zv)) as f32;
                }
            }
            LossKind::MeanSquaredError => out.copy_from_slice(z),
        }
        Ok(())
    }

    fn clip_scale(&self, grads: &[&Vec<f32>], max_norm: f32, scale: &mut Vec<f32>) -> Result<()> {
        check_len("clip_scale", "scale", scale, 1)?;
        let sum_sq: f64 = grads
            .iter()
            .map(|g| g.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
            .sum();
        let norm = sum_sq.sqrt();
        scale[0] = (f64::from(max_norm) / (norm + 1e-6)).min(1.0) as f32;
        Ok(())
    }

    fn optimizer_step(
        &self,
        rule: &UpdateRule,
        param: &mut Vec<f32>,
        grad: &Vec<f32>,
        slots: &mut [Vec<f32>],
        grad_scale: Option<&Vec<f32>>,
        stats: &mut CpuStats,
    ) -> Result<()> {
        let len = param.len();
        ensure!(
            grad.len() == len,
            "optimizer_step: gradient holds {} values, parameter {len}",
            grad.len()
        );
        ensure!(
            slots.len() == rule.slot_count(),
            "optimizer_step: got {} state buffers, but {} keeps {} per tensor",
            slots.len(),
            rule.optimizer.name(),
            rule.slot_count()
        );
        for slot in slots.iter() {
            ensure!(
                slot.len() == len,
                "optimizer_step: a state buffer holds {} values, parameter {len}",
                slot.len()
            );
        }
        let scale = match grad_scale {
            Some(s) => {
                check_len("optimizer_step", "grad_scale", s, 1)?;
                s[0]
            }
            None => 1.0,
        };
        if stats.values.nonfinite_batch.is_some() {
            return Ok(());
        }

        let step = StepScalars::new(rule, scale);
        let penalty = match slots {
            [] => self.update_tensor(&step, param, grad, &mut [], &mut []),
            [s0] => self.update_tensor(&step, param, grad, s0, &mut []),
            [s0, s1] => self.update_tensor(&step, param, grad, s0, s1),
            _ => bail!("optimizer_step: more than 2 state buffers"),
        };
        if rule.l2 != 0.0 {
            stats.values.penalty_sum += f64::from(rule.l2) * penalty;
        }
        Ok(())
    }

    fn count_zeros(
        &self,
        y: &Vec<f32>,
        rows: usize,
        cols: usize,
        counts: &mut Vec<f32>,
    ) -> Result<()> {
        check_len("count_zeros", "y", y, rows * cols)?;
        check_len("count_zeros", "counts", counts, cols)?;
        if cols == 0 {
            return Ok(());
        }
        for row in y[..rows * cols].chunks_exact(cols) {
            for (count, &v) in counts.iter_mut().zip(row) {
                if v == 0.0 {
                    *count += 1.0;
                }
            }
        }
        Ok(())
    }
}

impl Cpu {
    /// Runs one fused optimizer pass over a tensor and returns `sum(w^2)` before the update.
    ///
    /// `s0` and `s1` are the state buffers the rule uses, or empty.
    fn update_tensor(
        &self,
        step: &StepScalars,
        w: &mut [f32],
        g: &[f32],
        s0: &mut [f32],
        s1: &mut [f32],
    ) -> f64 {
        if !self.parallel(w.len()) {
            // The same chunks as the parallel path, so the penalty sum does not
            // depend on the thread count either.
            let mut sum_sq = 0.0;
            for start in (0..w.len()).step_by(PAR_CHUNK) {
                let end = (start + PAR_CHUNK).min(w.len());
                sum_sq += update_chunk(
                    step,
                    &mut w[start..end],
                    &g[start..end],
                    sub_slice(s0, start, end),
                    sub_slice(s1, start, end),
                );
            }
            return sum_sq;
        }
        // The shared buffer is only taken when free (`try_lock`), because a pool
        // worker waiting inside this parallel section can pick up another
        // caller's step, which would then block on the lock its own thread
        // holds. A call that finds the buffer taken allocates its own.
        let mut own = Vec::new();
        let mut guard = match self.partial_sums.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        let partials: &mut Vec<f64> = match guard.as_mut() {
            Some(shared) => shared,
            None => &mut own,
        };
        self.pool.install(|| {
            let w = w.par_chunks_mut(PAR_CHUNK);
            let g = g.par_chunks(PAR_CHUNK);
            match (s0.is_empty(), s1.is_empty()) {
                (true, _) => w
                    .zip(g)
                    .map(|(w, g)| update_chunk(step, w, g, &mut [], &mut []))
                    .collect_into_vec(partials),
                (false, true) => w
                    .zip(g)
                    .zip(s0.par_chunks_mut(PAR_CHUNK))
                    .map(|((w, g), s0)| update_chunk(step, w, g, s0, &mut []))
                    .collect_into_vec(partials),
                (false, false) => w
                    .zip(g)
                    .zip(s0.par_chunks_mut(PAR_CHUNK))
                    .zip(s1.par_chunks_mut(PAR_CHUNK))
                    .map(|(((w, g), s0), s1)| update_chunk(step, w, g, s0, s1))
                    .collect_into_vec(partials),
            }
        });
        // Summed in chunk order, so the result does not depend on the thread count.
        partials.iter().sum()
    }
}

/// Returns `s[start..end]`, or `s` itself when it is empty (an unused state buffer).
fn sub_slice(s: &mut [f32], start: usize, end: usize) -> &mut [f32] {
    if s.is_empty() { s } else { &mut s[start..end] }
}

/// The optimizer kinds after their settings are resolved for one step.
#[derive(Clone, Copy)]
enum StepKind {
    Sgd,
    SgdMomentum {
        momentum: f32,
        nesterov: bool,
    },
    Adam(AdamStep),
    RmsProp {
        rho: f32,
        epsilon: f32,
    },
    RmsPropMomentum {
        rho: f32,
        epsilon: f32,
        momentum: f32,
    },
}

#[derive(Clone, Copy)]
struct AdamStep {
    beta1: f32,
    beta2: f32,
    epsilon: f32,
    scalars: AdamScalars,
}

/// Scalars of one optimizer step, resolved once per tensor.
struct StepScalars {
    kind: StepKind,
    lr: f32,
    /// Factor applied to the raw gradient (gradient clipping).
    grad_scale: f32,
    /// `2 * l2`, the factor of `w` in the L2 gradient.
    l2_grad: f32,
    /// `lr * weight_decay`, the decoupled decay of this step.
    decay: f32,
}

impl StepScalars {
    fn new(rule: &UpdateRule, grad_scale: f32) -> Self {
        let kind = match rule.optimizer {
            Optimizer::Sgd { momentum, nesterov } => {
                if momentum != 0.0 {
                    StepKind::SgdMomentum { momentum, nesterov }
                } else {
                    StepKind::Sgd
                }
            }
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
                epsilon_style,
            }
            | Optimizer::AdamW {
                beta1,
                beta2,
                epsilon,
                epsilon_style,
            } => StepKind::Adam(AdamStep {
                beta1,
                beta2,
                epsilon,
                scalars: AdamScalars::new(rule.lr, beta1, beta2, rule.t, epsilon_style),
            }),
            Optimizer::RmsProp {
                rho,
                momentum,
                epsilon,
            } => {
                if momentum != 0.0 {
                    StepKind::RmsPropMomentum {
                        rho,
                        epsilon,
                        momentum,
                    }
                } else {
                    StepKind::RmsProp { rho, epsilon }
                }
            }
        };
        Self {
            kind,
            lr: rule.lr,
            grad_scale,
            l2_grad: 2.0 * rule.l2,
            decay: rule.lr * rule.weight_decay,
        }
    }

    /// Returns the effective gradient (scaled, plus the L2 term, both at the
    /// weight before this step) and the weight after decoupled decay.
    #[inline(always)]
    fn prepare(&self, w: f32, g: f32) -> (f32, f32) {
        let g = g * self.grad_scale + self.l2_grad * w;
        (w - self.decay * w, g)
    }
}

/// Updates one chunk of a tensor and returns its `sum(w^2)` before the update.
fn update_chunk(
    step: &StepScalars,
    w: &mut [f32],
    g: &[f32],
    s0: &mut [f32],
    s1: &mut [f32],
) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the processor supports AVX, checked just above.
        return unsafe { update_chunk_avx(step, w, g, s0, s1) };
    }
    update_chunk_body(step, w, g, s0, s1)
}

/// [`update_chunk`] compiled with 8-wide AVX vectors. FMA stays off, so every
/// value is rounded exactly as in the baseline build and results do not
/// depend on the processor.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn update_chunk_avx(
    step: &StepScalars,
    w: &mut [f32],
    g: &[f32],
    s0: &mut [f32],
    s1: &mut [f32],
) -> f64 {
    update_chunk_body(step, w, g, s0, s1)
}

#[inline(always)]
fn update_chunk_body(
    step: &StepScalars,
    w: &mut [f32],
    g: &[f32],
    s0: &mut [f32],
    s1: &mut [f32],
) -> f64 {
    let sum_sq: f64 = if step.l2_grad != 0.0 {
        w.iter().map(|&v| f64::from(v) * f64::from(v)).sum()
    } else {
        0.0
    };
    let lr = step.lr;
    match step.kind {
        StepKind::Sgd => {
            for (w, &g) in w.iter_mut().zip(g) {
                let (wd, g) = step.prepare(*w, g);
                *w = wd - lr * g;
            }
        }
        StepKind::SgdMomentum { momentum, nesterov } => {
            for ((w, &g), v) in w.iter_mut().zip(g).zip(s0.iter_mut()) {
                let (wd, g) = step.prepare(*w, g);
                *v = momentum * *v - lr * g;
                *w = if nesterov {
                    wd + momentum * *v - lr * g
                } else {
                    wd + *v
                };
            }
        }
        StepKind::Adam(adam) => {
            let AdamScalars {
                step_size,
                denom_scale,
            } = adam.scalars;
            let (b1, b2) = (adam.beta1, adam.beta2);
            for (((w, &g), m), v) in w.iter_mut().zip(g).zip(s0.iter_mut()).zip(s1.iter_mut()) {
                let (wd, g) = step.prepare(*w, g);
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                *w = wd - step_size * *m / (v.sqrt() * denom_scale + adam.epsilon);
            }
        }
        StepKind::RmsProp { rho, epsilon } => {
            for ((w, &g), v) in w.iter_mut().zip(g).zip(s0.iter_mut()) {
                let (wd, g) = step.prepare(*w, g);
                *v = rho * *v + (1.0 - rho) * g * g;
                *w = wd - lr * g / (*v + epsilon).sqrt();
            }
        }
        StepKind::RmsPropMomentum {
            rho,
            epsilon,
            momentum,
        } => {
            for (((w, &g), v), mom) in w.iter_mut().zip(g).zip(s0.iter_mut()).zip(s1.iter_mut()) {
                let (wd, g) = step.prepare(*w, g);
                *v = rho * *v + (1.0 - rho) * g * g;
                *mom = momentum * *mom + lr * g / (*v + epsilon).sqrt();
                *w = wd - *mom;
            }
        }
    }
    sum_sq
}

fn check_rate(rate: f32) -> Result<()> {
    ensure!(
        (0.0..1.0).contains(&rate),
        "dropout rate {rate} is invalid: expected at least 0 and below 1"
    );
    Ok(())
}

/// Returns whether dropout keeps element `e`, given `key = rng::dropout_key(mask.step, mask.layer)`.
#[inline]
fn keeps(mask: DropoutMask, key: u64, e: usize) -> bool {
    rng::unit_f32(rng::hash(mask.seed, key, e as u64)) >= mask.rate
}

/// Converts a target stored as f32 into a class index below `classes`.
fn class_index(target: f32, classes: usize, row: usize) -> Result<usize> {
    if target >= 0.0 && target < classes as f32 && target.fract() == 0.0 {
        Ok(target as usize)
    } else {
        bail!("loss: target {target} of batch row {row} is not a class index in 0..{classes}")
    }
}

/// Loss and metric contributions of one batch.
#[derive(Default)]
struct RowSums {
    loss: f64,
    correct: f64,
    abs_error: f64,
}

/// Unweighted loss of one row and its metric.
struct RowLoss {
    loss: f64,
    correct: bool,
    abs_error: f64,
}

/// Writes `softmax(z)` into `p`; returns `(max(z), sum(exp(z - max)))` in f64.
fn softmax_row(z: &[f32], p: &mut [f32]) -> (f64, f64) {
    let max = f64::from(z.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    let mut sum = 0.0f64;
    for (pv, &zv) in p.iter_mut().zip(z) {
        let e = (f64::from(zv) - max).exp();
        *pv = e as f32;
        sum += e;
    }
    for pv in p.iter_mut() {
        *pv = (f64::from(*pv) / sum) as f32;
    }
    (max, sum)
}

/// Softmax cross-entropy of one row from its logits: `log(sum(exp(z - max))) + max - z[t]`.
///
/// The sum is at least 1 (the maximum contributes `exp(0)`), so the log's
/// argument is never 0, and nothing overflows for any finite logits. The gradient,
/// `grad_scale * (softmax(z) - onehot(t))`, goes to `grad`.
fn softmax_cross_entropy_row(
    z: &[f32],
    target: usize,
    grad_scale: f64,
    grad: Option<&mut [f32]>,
) -> RowLoss {
    let argmax = z
        .iter()
        .enumerate()
        .fold(0, |best, (j, &v)| if v > z[best] { j } else { best });
    let max = f64::from(z.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    let loss = match grad {
        Some(grad) => {
            let (_, sum) = softmax_row(z, grad);
            for (j, g) in grad.iter_mut().enumerate() {
                let onehot = if j == target { 1.0 } else { 0.0 };
                *g = ((f64::from(*g) - onehot) * grad_scale) as f32;
            }
            sum.ln() + (max - f64::from(z[target]))
        }
        None => {
            let sum: f64 = z.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            sum.ln() + (max - f64::from(z[target]))
        }
    };
    RowLoss {
        loss,
        correct: argmax == target,
        abs_error: 0.0,
    }
}

/// `1 / (1 + exp(-z))` without overflow for large `|z|`.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Binary cross-entropy of one logit in the softplus form
/// `max(z, 0) - z * t + log(1 + exp(-|z|))`, finite for any finite `z`.
fn sigmoid_cross_entropy_row(
    z: f32,
    target: f32,
    grad_scale: f64,
    grad: Option<&mut [f32]>,
) -> RowLoss {
    let (z, t) = (f64::from(z), f64::from(target));
    let loss = z.max(0.0) - z * t + (-z.abs()).exp().ln_1p();
    if let Some(grad) = grad {
        grad[0] = ((sigmoid(z) - t) * grad_scale) as f32;
    }
    RowLoss {
        loss,
        // The predicted class is 1 when the probability is above 0.5 (Keras's threshold).
        correct: (z > 0.0) == (t == 1.0),
        abs_error: 0.0,
    }
}

/// Squared error of one output, `(z - t)^2`, with gradient `grad_scale * 2 * (z - t)`.
fn squared_error_row(z: f32, target: f32, grad_scale: f64, grad: Option<&mut [f32]>) -> RowLoss {
    let diff = f64::from(z) - f64::from(target);
    if let Some(grad) = grad {
        grad[0] = (2.0 * diff * grad_scale) as f32;
    }
    RowLoss {
        loss: diff * diff,
        correct: false,
        abs_error: diff.abs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Optimizer, OptimizerConfig};

    fn thread_name() -> String {
        std::thread::current()
            .name()
            .unwrap_or_default()
            .to_string()
    }

    #[test]
    fn run_uses_pool_threads() {
        let cpu =
            Cpu::new(2.min(std::thread::available_parallelism().map_or(1, |n| n.get()))).unwrap();
        let name = cpu.run(thread_name);
        if cpu.threads() > 1 {
            assert!(name.starts_with("densetrain-cpu-"), "ran on {name:?}");
        } else {
            assert_eq!(name, thread_name());
        }
        // A product started from a pool thread runs there too and is still correct.
        let (a, b) = (values(64 * 300, 1), values(300 * 64, 2));
        let mut inside = vec![0.0; 64 * 64];
        let mut outside = vec![0.0; 64 * 64];
        cpu.run(|| {
            cpu.matmul(
                &mut inside,
                Operand::plain(&a, 64, 300),
                Operand::plain(&b, 300, 64),
            )
        })
        .unwrap();
        cpu.matmul(
            &mut outside,
            Operand::plain(&a, 64, 300),
            Operand::plain(&b, 300, 64),
        )
        .unwrap();
        assert_eq!(inside, outside);
    }

    #[test]
    fn product_threading_ways_agree() {
        let cpu = Cpu::new(0).unwrap();
        // 96 x 200 x 300: a transposed left operand, as in a weight gradient.
        let (a, b) = (values(300 * 96, 3), values(300 * 200, 4));
        let left = Operand::transposed(&a, 300, 96);
        let right = Operand::plain(&b, 300, 200);
        let mut auto = vec![0.0; 96 * 200];
        cpu.matmul(&mut auto, left, right).unwrap();
        for threading in [ProductThreading::ColumnSplit, ProductThreading::GemmCrate] {
            let mut out = vec![f32::NAN; 96 * 200];
            cpu.matmul_threaded(&mut out, left, right, threading)
                .unwrap();
            for (index, (&got, &want)) in out.iter().zip(&auto).enumerate() {
                assert!(
                    (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "{threading:?}: value {index} is {got}, expected {want}"
                );
            }
        }
    }

    #[test]
    fn shared_backend_steps_concurrently() {
        let cpu = std::sync::Arc::new(Cpu::new(0).unwrap());
        if cpu.threads() < 2 {
            eprintln!("skipped: one core, so the pool is never used");
            return;
        }
        // Twenty Adam steps with an L2 penalty on a tensor large enough for
        // the parallel path, which uses the shared partial sums.
        fn steps(cpu: &Cpu, seed: u64) -> (Vec<f32>, f64) {
            let config = OptimizerConfig {
                optimizer: Optimizer::with_defaults("adam").unwrap(),
                lr: 1e-3,
                l2: 1e-4,
                weight_decay: 0.0,
                clipnorm: None,
            };
            let len = 4 * PAR_MIN_VALUES;
            let mut w = values(len, seed);
            let g = values(len, seed + 1);
            let mut slots = vec![vec![0.0; len], vec![0.0; len]];
            let mut stats = CpuStats::default();
            for step in 0..20 {
                let rule = config.rule(step + 1, config.lr, true);
                cpu.optimizer_step(&rule, &mut w, &g, &mut slots, None, &mut stats)
                    .unwrap();
            }
            (w, stats.values.penalty_sum)
        }
        let alone = [steps(&cpu, 10), steps(&cpu, 20)];
        // Three callers at once, two inside the pool and one outside it: a
        // pool worker waiting inside its own step can pick up the other
        // caller's step. The callers are detached, so a deadlock fails the
        // test at the timeout instead of hanging it.
        let (sender, receiver) = std::sync::mpsc::channel();
        for (index, seed, in_pool) in [(0, 10, true), (1, 20, true), (0, 10, false)] {
            let (cpu, sender) = (cpu.clone(), sender.clone());
            std::thread::spawn(move || {
                let result = if in_pool {
                    cpu.run(|| steps(&cpu, seed))
                } else {
                    steps(&cpu, seed)
                };
                let _ = sender.send((index, result));
            });
        }
        for _ in 0..3 {
            let (index, result) = receiver
                .recv_timeout(std::time::Duration::from_secs(60))
                .expect("concurrent optimizer steps did not finish");
            assert_eq!(result, alone[index]);
        }
    }

    #[test]
    fn run_stays_on_caller_single_thread() {
        let cpu = Cpu::new(1).unwrap();
        assert_eq!(cpu.run(thread_name), thread_name());
    }

    /// Values spread over several magnitudes, with zeros and negatives.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let bits = crate::rng::mix64(seed ^ i as u64);
                let unit = (bits >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                unit * 10f32.powi((bits % 7) as i32 - 4)
            })
            .collect()
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx_update_matches_baseline_bits() {
        if !std::arch::is_x86_feature_detected!("avx") {
            eprintln!("avx_update_matches_baseline_bits: skipped, no AVX on this processor");
            return;
        }
        let len = 1003;
        for name in ["sgd", "adam", "adamw", "rmsprop"] {
            for (momentum, l2) in [(0.0, 0.0), (0.9, 1e-3)] {
                let mut optimizer = Optimizer::with_defaults(name).unwrap();
                if let Optimizer::Sgd { momentum: m, .. } | Optimizer::RmsProp { momentum: m, .. } =
                    &mut optimizer
                {
                    *m = momentum;
                }
                let config = OptimizerConfig {
                    optimizer,
                    lr: 0.01,
                    l2,
                    weight_decay: optimizer.default_weight_decay(),
                    clipnorm: None,
                };
                let rule = config.rule(3, 0.01, true);
                let step = StepScalars::new(&rule, 0.75);
                let slots = rule.slot_count();
                let g = values(len, 2);
                let start = [
                    values(len, 1),
                    values(len, 3).iter().map(|v| v.abs()).collect(),
                    values(len, 4),
                ];
                let run = |avx: bool| {
                    let [mut w, mut s0, mut s1] = start.clone();
                    if slots < 1 {
                        s0.clear();
                    }
                    if slots < 2 {
                        s1.clear();
                    }
                    // SAFETY: AVX support was checked at the top of the test.
                    let sum = if avx {
                        unsafe { update_chunk_avx(&step, &mut w, &g, &mut s0, &mut s1) }
                    } else {
                        update_chunk_body(&step, &mut w, &g, &mut s0, &mut s1)
                    };
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    (sum.to_bits(), bits(&w), bits(&s0), bits(&s1))
                };
                assert_eq!(
                    run(true),
                    run(false),
                    "{name}, momentum {momentum}, l2 {l2}"
                );
            }
        }
    }
}
