//! The CUDA backend: cuBLAS for the matrix products, the kernels of
//! `kernels/*.cu` for everything else.
//!
//! The CUDA libraries are loaded at run time (cudarc's dynamic loading), so
//! this module builds and links where CUDA is absent; [`Cuda::open`] returns
//! an error naming what is missing instead of panicking. All work runs on one
//! created stream (not the legacy default stream), with cudarc's per-buffer
//! event tracking turned off: nothing else uses the buffers, so stream order
//! alone keeps reads after writes. The host waits for the device only in
//! [`Backend::read_stats`], [`Backend::download`] and host-to-device copies
//! of pageable memory.
//!
//! Every kernel computes what [`super::cpu::Cpu`] computes, with the same f32
//! operations in the same order where the CPU has a fixed order. Three things
//! can differ. cuBLAS sums matrix products in another order. CUDA's `exp`,
//! `tanh` and similar functions can differ from Rust's by an ulp or two. The
//! loss and penalty sums add blocks with atomics, so their order also varies
//! between runs.

pub mod gemm;
pub mod kernels;
pub mod loader;
pub mod probe;

use crate::backend::{Backend, Dims, DropoutMask, LossKind, StatsValues};
use crate::model::{Activation, ELU_ALPHA, LEAKY_RELU_SLOPE};
use crate::optim::{AdamScalars, Optimizer, UpdateRule};
use crate::rng;
use anyhow::{Result, anyhow, bail, ensure};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtrMut, DeviceRepr, LaunchConfig, ValidAsZeroBits,
};
use gemm::{GradientOperands, MatrixOperand};
use kernels::{Arg, Kernel, Kernels, StepArgs, stat};
use loader::{KernelLoading, KernelOrigin};
use probe::{CudaLibrary, DeviceInfo, guarded};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

/// Loss scale of the first f16 step (PyTorch's `GradScaler` default, 2^16).
const INITIAL_LOSS_SCALE: f32 = 65536.0;
/// Steps without overflow after which the f16 loss scale doubles (PyTorch's default).
const LOSS_SCALE_GROWTH_INTERVAL: u32 = 2000;

/// Number format of the matrix-product operands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Precision {
    /// f32 operands and f32 arithmetic.
    #[default]
    F32,
    /// bfloat16 copies of the operands, f32 accumulation, f32 master weights.
    Bf16,
    /// IEEE half copies of the operands, f32 accumulation, f32 master weights and
    /// dynamic loss scaling.
    F16,
}

impl Precision {
    /// Parses `f32`, `bf16` or `f16`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "f16" => Ok(Self::F16),
            other => bail!("invalid --precision '{other}': expected f32, bf16 or f16"),
        }
    }

    /// Returns the command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Settings of a CUDA backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CudaOptions {
    /// Device ordinal.
    pub ordinal: usize,
    /// Precision of the matrix products.
    pub precision: Precision,
    /// Let f32 products use TF32 tensor cores (about 10 fraction bits per input).
    pub allow_tf32: bool,
    /// Kernel images to try.
    pub kernel_loading: KernelLoading,
}

/// A device buffer of f32 values.
pub struct CudaBuf {
    /// At least one element, because the driver rejects empty allocations.
    slice: CudaSlice<f32>,
    len: usize,
}

impl CudaBuf {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer contains no values.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A device buffer of row indices.
pub struct CudaIdx {
    slice: CudaSlice<u32>,
    len: usize,
    /// Largest index stored, checked against the source rows of each gather.
    max: Option<u32>,
}

/// Device-resident loss and metric accumulators (see `kernels/common.cuh`).
pub struct CudaStats {
    words: CudaSlice<u64>,
}

/// Scratch buffers reused across calls.
struct Scratch {
    half_a: Option<CudaSlice<u16>>,
    half_b: Option<CudaSlice<u16>>,
    /// The f64 sum of squares of gradient clipping.
    norm: CudaSlice<f64>,
}

/// A GPU with its stream, cuBLAS handle and loaded kernels.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: Kernels,
    device: DeviceInfo,
    origin: KernelOrigin,
    options: CudaOptions,
    scratch: Mutex<Scratch>,
    /// The f16 loss-scaling state, `None` for other precisions.
    scaling: Option<CudaSlice<u32>>,
}

impl Cuda {
    /// Opens GPU `options.ordinal`: checks the driver and libraries, creates a
    /// context, a stream and a cuBLAS handle, and loads the kernels.
    ///
    /// Never panics for a missing driver, GPU, library or symbol. The error
    /// names what was missing and what to install.
    pub fn open(options: CudaOptions) -> Result<Self> {
        let driver = probe::probe_driver();
        if let Some(problem) = driver.problem.filter(|_| driver.devices.is_empty()) {
            bail!("no usable GPU: {problem}");
        }
        let device = driver
            .devices
            .iter()
            .find(|d| d.ordinal == options.ordinal)
            .cloned()
            .ok_or_else(|| {
                anyhow!(
                    "GPU {} does not exist: the driver reports {} GPU(s), numbered from 0",
                    options.ordinal,
                    driver.devices.len()
                )
            })?;
        let cc = device.compute_capability;
        if cc.0 < 7 || (cc.0 == 7 && cc.1 < 5) {
            bail!(
                "cuda:{}: {} has compute capability {}.{}; densetrain needs 7.5 or newer",
                options.ordinal,
                device.name,
                cc.0,
                cc.1
            );
        }
        if options.precision == Precision::Bf16 && cc.0 < 8 {
            bail!(
                "--precision bf16 needs compute capability 8.0 or newer, and {} has {}.{}; \
                 use --precision f16 or f32",
                device.name,
                cc.0,
                cc.1
            );
        }
        let cublas = probe::load_library(CudaLibrary::Cublas);
        if let Some(error) = cublas.error {
            bail!("cuBLAS is missing: {error}");
        }

        let ordinal = options.ordinal;
        let ctx = guarded(|| CudaContext::new(ordinal))
            .map_err(|panic| anyhow!("cuda:{ordinal}: creating a context failed: {panic}"))?
            .map_err(|e| anyhow!("cuda:{ordinal}: creating a context failed: {:?}", e.0))?;
        // SAFETY: no buffer of this context exists yet, and every buffer is used
        // on the one stream created below, so stream order replaces the events.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx
            .new_stream()
            .map_err(|e| anyhow!("cuda:{ordinal}: creating a stream failed: {:?}", e.0))?;
        let blas = guarded(|| CudaBlas::new(stream.clone()))
            .map_err(|panic| anyhow!("cuda:{ordinal}: creating a cuBLAS handle failed: {panic}"))?
            .map_err(|e| anyhow!("cuda:{ordinal}: creating a cuBLAS handle failed: {:?}", e.0))?;
        let (modules, origin) = loader::load_modules(&ctx, cc, options.kernel_loading)
            .map_err(|e| anyhow!("cuda:{ordinal}: {e}"))?;
        let kernels = Kernels::new(&modules)?;
        let norm = stream
            .alloc_zeros::<f64>(1)
            .map_err(|e| anyhow!("cuda:{ordinal}: allocating 8 bytes failed: {:?}", e.0))?;
        let mut backend = Self {
            ctx,
            stream,
            blas,
            kernels,
            device,
            origin,
            options,
            scratch: Mutex::new(Scratch {
                half_a: None,
                half_b: None,
                norm,
            }),
            scaling: None,
        };
        if options.precision == Precision::F16 {
            let state = [INITIAL_LOSS_SCALE.to_bits(), 0, 0, 0];
            backend.scaling = Some(backend.upload_words(&state, "the loss-scaling state")?);
        }
        Ok(backend)
    }

    /// Returns the GPU in use.
    pub fn device(&self) -> &DeviceInfo {
        &self.device
    }

    /// Returns where the kernels came from.
    pub fn kernel_origin(&self) -> &KernelOrigin {
        &self.origin
    }

    /// Returns the settings this backend was opened with.
    pub fn options(&self) -> CudaOptions {
        self.options
    }

    /// Waits until the stream has run all queued work.
    pub fn synchronize(&self) -> Result<()> {
        self.stream
            .synchronize()
            .map_err(|e| self.driver_error("synchronising the stream", e))
    }

    /// Returns the current f16 loss scale, or `None` for other precisions.
    pub fn loss_scale(&self) -> Result<Option<f32>> {
        match &self.scaling {
            Some(state) => {
                let words = self
                    .stream
                    .clone_dtoh(state)
                    .map_err(|e| self.driver_error("reading the loss scale", e))?;
                Ok(Some(f32::from_bits(words[kernels::scale::VALUE])))
            }
            None => Ok(None),
        }
    }

    fn ptr<T>(&self, slice: &CudaSlice<T>) -> u64 {
        gemm::device_ptr(slice, &self.stream)
    }

    fn ptr_mut<T>(&self, slice: &mut CudaSlice<T>) -> u64 {
        slice.device_ptr_mut(&self.stream).0
    }

    fn lock_scratch(&self) -> MutexGuard<'_, Scratch> {
        self.scratch
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn driver_error(&self, what: &str, err: cudarc::driver::DriverError) -> anyhow::Error {
        anyhow!("cuda:{}: {what} failed: {:?}", self.options.ordinal, err.0)
    }

    /// Allocates `len` zeroed values (at least one), naming the size and the
    /// free memory when the allocation fails.
    fn alloc<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        len: usize,
        what: &str,
    ) -> Result<CudaSlice<T>> {
        let count = len.max(1);
        self.stream.alloc_zeros::<T>(count).map_err(|e| {
            let bytes = count * std::mem::size_of::<T>();
            let free = match self.ctx.mem_get_info() {
                Ok((free, total)) => format!("{} of {} are free", mib(free), mib(total)),
                Err(_) => "the free memory is unknown".to_string(),
            };
            anyhow!(
                "cuda:{}: allocating {} for {what} failed ({:?}); {free}. Use a smaller \
                 --batch-size or fewer units per layer",
                self.options.ordinal,
                mib(bytes),
                e.0
            )
        })
    }

    fn upload_words<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        host: &[T],
        what: &str,
    ) -> Result<CudaSlice<T>> {
        let mut slice = self.alloc::<T>(host.len(), what)?;
        if !host.is_empty() {
            self.stream
                .memcpy_htod(host, &mut slice)
                .map_err(|e| self.driver_error("copying to the GPU", e))?;
        }
        Ok(slice)
    }

    fn fill_zero<T: DeviceRepr + ValidAsZeroBits>(
        &self,
        slice: &mut CudaSlice<T>,
        len: usize,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let mut view = slice.slice_mut(..len);
        self.stream
            .memset_zeros(&mut view)
            .map_err(|e| self.driver_error("zeroing a buffer", e))
    }

    /// Launches one kernel on the backend's stream.
    ///
    /// # Safety
    /// As for [`kernels::launch`]: `args` must match the kernel's parameters and
    /// every pointer must cover every access the kernel makes.
    unsafe fn launch(&self, kernel: &Kernel, config: LaunchConfig, args: &[Arg]) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { kernels::launch(&self.stream, self.options.ordinal, kernel, config, args) }
    }

    fn scaling_ptr(&self) -> u64 {
        self.scaling.as_ref().map_or(0, |s| self.ptr(s))
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Fails unless `buf` contains at least `need` values.
fn check_len(op: &str, name: &str, buf: &CudaBuf, need: usize) -> Result<()> {
    if buf.len < need {
        bail!(
            "{op}: buffer '{name}' is too short: it has {} values, the shape needs {need}",
            buf.len
        );
    }
    Ok(())
}

/// Fails unless `value` fits the kernels' 32-bit row and column counts.
fn to_u32(op: &str, name: &str, value: usize) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| anyhow!("{op}: {name} {value} exceeds the GPU kernels' 32-bit limit"))
}

fn activation_code(act: Activation) -> i32 {
    match act {
        Activation::Relu => 0,
        Activation::LeakyRelu => 1,
        Activation::Elu => 2,
        Activation::Tanh => 3,
        Activation::Sigmoid => 4,
        Activation::Linear => 5,
    }
}

fn check_rate(rate: f32) -> Result<()> {
    ensure!(
        (0.0..1.0).contains(&rate),
        "dropout rate {rate} is invalid: expected at least 0 and below 1"
    );
    Ok(())
}

impl Backend for Cuda {
    type Buf = CudaBuf;
    type Idx = CudaIdx;
    type Stats = CudaStats;

    fn description(&self) -> String {
        let (major, minor) = self.device.compute_capability;
        let mut text = format!(
            "cuda:{} ({}, compute {major}.{minor}, {}",
            self.options.ordinal, self.device.name, self.options.precision
        );
        if self.options.precision == Precision::F32 && self.options.allow_tf32 {
            text.push_str(" with TF32 products");
        }
        text.push(')');
        text
    }

    fn zeros(&self, len: usize) -> Result<CudaBuf> {
        Ok(CudaBuf {
            slice: self.alloc(len, "a buffer")?,
            len,
        })
    }

    fn upload(&self, host: &[f32]) -> Result<CudaBuf> {
        Ok(CudaBuf {
            slice: self.upload_words(host, "uploaded values")?,
            len: host.len(),
        })
    }

    fn write(&self, host: &[f32], dst: &mut CudaBuf) -> Result<()> {
        ensure!(
            host.len() == dst.len,
            "write: {} host values do not fit a buffer of {}",
            host.len(),
            dst.len
        );
        if host.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_htod(host, &mut dst.slice)
            .map_err(|e| self.driver_error("copying to the GPU", e))
    }

    fn download(&self, buf: &CudaBuf) -> Result<Vec<f32>> {
        if buf.len == 0 {
            return Ok(Vec::new());
        }
        self.stream
            .clone_dtoh(&buf.slice.slice(..buf.len))
            .map_err(|e| self.driver_error("copying from the GPU", e))
    }

    fn copy(&self, src: &CudaBuf, dst: &mut CudaBuf) -> Result<()> {
        ensure!(
            src.len == dst.len,
            "copy: source holds {} values, destination {}",
            src.len,
            dst.len
        );
        if src.len == 0 {
            return Ok(());
        }
        let mut to = dst.slice.slice_mut(..src.len);
        self.stream
            .memcpy_dtod(&src.slice.slice(..src.len), &mut to)
            .map_err(|e| self.driver_error("copying on the GPU", e))
    }

    fn upload_idx(&self, host: &[u32]) -> Result<CudaIdx> {
        Ok(CudaIdx {
            slice: self.upload_words(host, "row indices")?,
            len: host.len(),
            max: host.iter().copied().max(),
        })
    }

    fn write_idx(&self, host: &[u32], dst: &mut CudaIdx) -> Result<()> {
        ensure!(
            host.len() == dst.len,
            "write_idx: {} host indices do not fit a buffer of {}",
            host.len(),
            dst.len
        );
        if !host.is_empty() {
            self.stream
                .memcpy_htod(host, &mut dst.slice)
                .map_err(|e| self.driver_error("copying to the GPU", e))?;
        }
        dst.max = host.iter().copied().max();
        Ok(())
    }

    fn new_stats(&self) -> Result<CudaStats> {
        Ok(CudaStats {
            words: self.alloc(stat::WORDS, "the statistics")?,
        })
    }

    fn reset_stats(&self, stats: &mut CudaStats) -> Result<()> {
        self.fill_zero(&mut stats.words, stat::WORDS)
    }

    fn read_stats(&self, stats: &CudaStats) -> Result<StatsValues> {
        let words = self
            .stream
            .clone_dtoh(&stats.words)
            .map_err(|e| self.driver_error("reading the statistics", e))?;
        values_of_words(&words)
    }

    // NOTE: not yet run on a GPU; the word layout is unit-tested on the host.
    fn write_stats(&self, values: &StatsValues, stats: &mut CudaStats) -> Result<()> {
        self.stream
            .memcpy_htod(&words_of_values(values), &mut stats.words)
            .map_err(|e| self.driver_error("restoring the statistics", e))
    }

    fn gather_rows(
        &self,
        src: &CudaBuf,
        cols: usize,
        idx: &CudaIdx,
        start: usize,
        count: usize,
        dst: &mut CudaBuf,
    ) -> Result<()> {
        ensure!(
            start + count <= idx.len,
            "gather_rows: rows {start}..{} are past the {} indices",
            start + count,
            idx.len
        );
        check_len("gather_rows", "dst", dst, count * cols)?;
        if count == 0 || cols == 0 {
            return Ok(());
        }
        let src_rows = src.len / cols;
        if let Some(max) = idx.max {
            ensure!(
                (max as usize) < src_rows,
                "gather_rows: index {max} is out of range for {src_rows} rows"
            );
        }
        let args = [
            Arg::Ptr(self.ptr(&src.slice)),
            Arg::Ptr(self.ptr_mut(&mut dst.slice)),
            Arg::Ptr(self.ptr(&idx.slice)),
            Arg::U64(start as u64),
            Arg::U32(to_u32("gather_rows", "count", count)?),
            Arg::U32(to_u32("gather_rows", "cols", cols)?),
            Arg::U32(to_u32("gather_rows", "source rows", src_rows)?),
        ];
        // SAFETY: gather_rows(const float*, float*, const u32*, u64, u32, u32, u32).
        // `idx` holds `start + count` indices, each below `src_rows` (checked
        // above), so reads stay within `src`, and `dst` holds `count * cols` values.
        unsafe {
            self.launch(
                &self.kernels.gather_rows,
                kernels::grid_for_elements((count * cols) as u64),
                &args,
            )
        }
    }

    fn dense_forward(
        &self,
        x: &CudaBuf,
        w: &CudaBuf,
        b: &CudaBuf,
        dims: Dims,
        act: Activation,
        y: &mut CudaBuf,
    ) -> Result<()> {
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
        // y[N, O] = x[N, I] · w[O, I]ᵀ
        self.matmul(
            y,
            MatrixOperand::plain(x, n, i),
            MatrixOperand::transposed(w, o, i),
        )?;
        let args = [
            Arg::Ptr(self.ptr_mut(&mut y.slice)),
            Arg::Ptr(self.ptr(&b.slice)),
            Arg::U32(to_u32("dense_forward", "rows", n)?),
            Arg::U32(to_u32("dense_forward", "outputs", o)?),
            Arg::I32(activation_code(act)),
            Arg::F32(LEAKY_RELU_SLOPE),
            Arg::F32(ELU_ALPHA),
        ];
        // SAFETY: bias_activation_forward(float*, const float*, u32, u32, int, float,
        // float); `y` holds n * o values and `b` holds o (checked above).
        unsafe {
            self.launch(
                &self.kernels.bias_activation_forward,
                kernels::grid_for_elements((n * o) as u64),
                &args,
            )
        }
    }

    fn dense_backward(
        &self,
        x: &CudaBuf,
        w: &CudaBuf,
        y: &CudaBuf,
        dims: Dims,
        act: Activation,
        dy: &mut CudaBuf,
        dw: &mut CudaBuf,
        db: &mut CudaBuf,
        dx: Option<&mut CudaBuf>,
    ) -> Result<()> {
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
        if o > 0 {
            let args = [
                Arg::Ptr(self.ptr_mut(&mut dy.slice)),
                Arg::Ptr(self.ptr(&y.slice)),
                Arg::Ptr(self.ptr_mut(&mut db.slice)),
                Arg::U32(to_u32("dense_backward", "rows", n)?),
                Arg::U32(to_u32("dense_backward", "outputs", o)?),
                Arg::I32(activation_code(act)),
                Arg::F32(LEAKY_RELU_SLOPE),
                Arg::F32(ELU_ALPHA),
            ];
            // SAFETY: activation_backward_bias(float*, const float*, float*, u32, u32,
            // int, float, float); `dy` and `y` hold n * o values, `db` holds o,
            // and one thread per column stops at column o.
            unsafe {
                self.launch(
                    &self.kernels.activation_backward_bias,
                    kernels::grid_for_items(to_u32("dense_backward", "outputs", o)?),
                    &args,
                )?;
            }
        }
        let gradient_first = GradientOperands { a: true, b: false };
        // dw[O, I] = dzᵀ[O, N] · x[N, I]
        self.matmul_checked(
            dw,
            MatrixOperand::transposed(dy, n, o),
            MatrixOperand::plain(x, n, i),
            gradient_first,
        )?;
        // dx[N, I] = dz[N, O] · w[O, I]
        if let Some(dx) = dx {
            self.matmul_checked(
                dx,
                MatrixOperand::plain(dy, n, o),
                MatrixOperand::plain(w, o, i),
                gradient_first,
            )?;
        }
        Ok(())
    }

    fn dropout_forward(
        &self,
        y: &CudaBuf,
        len: usize,
        mask: DropoutMask,
        out: &mut CudaBuf,
    ) -> Result<()> {
        check_len("dropout_forward", "y", y, len)?;
        check_len("dropout_forward", "out", out, len)?;
        check_rate(mask.rate)?;
        if len == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(self.ptr(&y.slice)),
            Arg::Ptr(self.ptr_mut(&mut out.slice)),
            Arg::U64(len as u64),
            Arg::U64(mask.seed),
            Arg::U64(rng::dropout_key(mask.step, mask.layer)),
            Arg::F32(mask.rate),
            Arg::F32(1.0 / (1.0 - mask.rate)),
        ];
        // SAFETY: dropout_forward(const float*, float*, u64, u64, u64, float, float);
        // `y` and `out` hold at least `len` values (checked above).
        unsafe {
            self.launch(
                &self.kernels.dropout_forward,
                kernels::grid_for_elements(len as u64),
                &args,
            )
        }
    }

    fn dropout_backward(&self, dy: &mut CudaBuf, len: usize, mask: DropoutMask) -> Result<()> {
        check_len("dropout_backward", "dy", dy, len)?;
        check_rate(mask.rate)?;
        if len == 0 {
            return Ok(());
        }
        let args = [
            Arg::Ptr(self.ptr_mut(&mut dy.slice)),
            Arg::U64(len as u64),
            Arg::U64(mask.seed),
            Arg::U64(rng::dropout_key(mask.step, mask.layer)),
            Arg::F32(mask.rate),
            Arg::F32(1.0 / (1.0 - mask.rate)),
        ];
        // SAFETY: dropout_backward(float*, u64, u64, u64, float, float); `dy`
        // holds at least `len` values (checked above).
        unsafe {
            self.launch(
                &self.kernels.dropout_backward,
                kernels::grid_for_elements(len as u64),
                &args,
            )
        }
    }

    fn loss(
        &self,
        kind: LossKind,
        logits: &CudaBuf,
        targets: &CudaBuf,
        class_weights: Option<&CudaBuf>,
        rows: usize,
        outputs: usize,
        batch: u64,
        dlogits: Option<&mut CudaBuf>,
        stats: &mut CudaStats,
    ) -> Result<()> {
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
        let training = dlogits.is_some();
        let scaling = if training { self.scaling_ptr() } else { 0 };
        if training && scaling != 0 {
            // SAFETY: loss_scale_update(u32*, u32); `scaling` is the 4-word state.
            unsafe {
                self.launch(
                    &self.kernels.loss_scale_update,
                    kernels::single_thread(),
                    &[Arg::Ptr(scaling), Arg::U32(LOSS_SCALE_GROWTH_INTERVAL)],
                )?;
            }
        }
        let rows_u32 = to_u32("loss", "rows", n)?;
        let inv_n = 1.0 / n.max(1) as f64;
        let logits_ptr = self.ptr(&logits.slice);
        let targets_ptr = self.ptr(&targets.slice);
        let weights_ptr = class_weights.map_or(0, |w| self.ptr(&w.slice));
        let grad_ptr = dlogits.map_or(0, |d| self.ptr_mut(&mut d.slice));
        let stats_ptr = self.ptr_mut(&mut stats.words);
        let config = kernels::grid_for_items(rows_u32);
        match kind {
            LossKind::SoftmaxCrossEntropy => {
                let args = [
                    Arg::Ptr(logits_ptr),
                    Arg::Ptr(targets_ptr),
                    Arg::Ptr(weights_ptr),
                    Arg::U32(rows_u32),
                    Arg::U32(to_u32("loss", "outputs", c)?),
                    Arg::F64(inv_n),
                    Arg::U64(batch),
                    Arg::Ptr(grad_ptr),
                    Arg::Ptr(stats_ptr),
                    Arg::Ptr(scaling),
                ];
                // SAFETY: softmax_cross_entropy(const float*, const float*, const
                // float*, u32, u32, double, u64, float*, u64*, const u32*). Logits and
                // gradient hold n * c values, targets n, weights c (checked above);
                // the statistics hold 8 words and `scaling` is 0 or the 4-word state.
                unsafe { self.launch(&self.kernels.softmax_cross_entropy, config, &args) }
            }
            LossKind::SigmoidBinaryCrossEntropy => {
                let args = [
                    Arg::Ptr(logits_ptr),
                    Arg::Ptr(targets_ptr),
                    Arg::Ptr(weights_ptr),
                    Arg::U32(rows_u32),
                    Arg::F64(inv_n),
                    Arg::U64(batch),
                    Arg::Ptr(grad_ptr),
                    Arg::Ptr(stats_ptr),
                    Arg::Ptr(scaling),
                ];
                // SAFETY: sigmoid_cross_entropy(const float*, const float*, const
                // float*, u32, double, u64, float*, u64*, const u32*). Logits,
                // gradient and targets hold n values, weights 2 (checked above).
                unsafe { self.launch(&self.kernels.sigmoid_cross_entropy, config, &args) }
            }
            LossKind::MeanSquaredError => {
                let args = [
                    Arg::Ptr(logits_ptr),
                    Arg::Ptr(targets_ptr),
                    Arg::U32(rows_u32),
                    Arg::F64(inv_n),
                    Arg::U64(batch),
                    Arg::Ptr(grad_ptr),
                    Arg::Ptr(stats_ptr),
                    Arg::Ptr(scaling),
                ];
                // SAFETY: squared_error(const float*, const float*, u32, double, u64,
                // float*, u64*, const u32*). Logits, gradient and targets hold n values.
                unsafe { self.launch(&self.kernels.squared_error, config, &args) }
            }
        }
    }

    fn predict(
        &self,
        kind: LossKind,
        logits: &CudaBuf,
        rows: usize,
        outputs: usize,
        out: &mut CudaBuf,
    ) -> Result<()> {
        let (n, c) = (rows, outputs);
        check_len("predict", "logits", logits, n * c)?;
        check_len("predict", "out", out, n * c)?;
        if n * c == 0 {
            return Ok(());
        }
        match kind {
            LossKind::SoftmaxCrossEntropy => {
                let args = [
                    Arg::Ptr(self.ptr(&logits.slice)),
                    Arg::Ptr(self.ptr_mut(&mut out.slice)),
                    Arg::U32(to_u32("predict", "rows", n)?),
                    Arg::U32(to_u32("predict", "outputs", c)?),
                ];
                // SAFETY: predict_softmax(const float*, float*, u32, u32); both
                // buffers hold n * c values (checked above).
                unsafe {
                    self.launch(
                        &self.kernels.predict_softmax,
                        kernels::grid_for_items(to_u32("predict", "rows", n)?),
                        &args,
                    )
                }
            }
            LossKind::SigmoidBinaryCrossEntropy => {
                let args = [
                    Arg::Ptr(self.ptr(&logits.slice)),
                    Arg::Ptr(self.ptr_mut(&mut out.slice)),
                    Arg::U64((n * c) as u64),
                ];
                // SAFETY: predict_sigmoid(const float*, float*, u64); both buffers
                // hold n * c values (checked above).
                unsafe {
                    self.launch(
                        &self.kernels.predict_sigmoid,
                        kernels::grid_for_elements((n * c) as u64),
                        &args,
                    )
                }
            }
            LossKind::MeanSquaredError => {
                let mut to = out.slice.slice_mut(..n * c);
                self.stream
                    .memcpy_dtod(&logits.slice.slice(..n * c), &mut to)
                    .map_err(|e| self.driver_error("copying on the GPU", e))
            }
        }
    }

    fn clip_scale(&self, grads: &[&CudaBuf], max_norm: f32, scale: &mut CudaBuf) -> Result<()> {
        check_len("clip_scale", "scale", scale, 1)?;
        let mut scratch = self.lock_scratch();
        self.fill_zero(&mut scratch.norm, 1)?;
        let norm_ptr = self.ptr_mut(&mut scratch.norm);
        for grad in grads.iter().filter(|g| g.len > 0) {
            let args = [
                Arg::Ptr(self.ptr(&grad.slice)),
                Arg::U64(grad.len as u64),
                Arg::Ptr(norm_ptr),
            ];
            // SAFETY: sum_squares(const float*, u64, double*); `grad` holds
            // `grad.len` values and the accumulator is one double.
            unsafe {
                self.launch(
                    &self.kernels.sum_squares,
                    kernels::grid_for_elements(grad.len as u64),
                    &args,
                )?;
            }
        }
        let args = [
            Arg::Ptr(norm_ptr),
            Arg::F32(max_norm),
            Arg::Ptr(self.ptr_mut(&mut scale.slice)),
            Arg::Ptr(self.scaling_ptr()),
        ];
        // SAFETY: clip_finalize(const double*, float, float*, const u32*); one
        // double in, one float out, `scaling` 0 or the 4-word state.
        unsafe { self.launch(&self.kernels.clip_finalize, kernels::single_thread(), &args) }
    }

    fn optimizer_step(
        &self,
        rule: &UpdateRule,
        param: &mut CudaBuf,
        grad: &CudaBuf,
        slots: &mut [CudaBuf],
        grad_scale: Option<&CudaBuf>,
        stats: &mut CudaStats,
    ) -> Result<()> {
        let len = param.len;
        ensure!(
            grad.len == len,
            "optimizer_step: gradient holds {} values, parameter {len}",
            grad.len
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
                slot.len == len,
                "optimizer_step: a state buffer holds {} values, parameter {len}",
                slot.len
            );
        }
        if let Some(s) = grad_scale {
            check_len("optimizer_step", "grad_scale", s, 1)?;
        }
        if len == 0 {
            return Ok(());
        }
        let step = StepArgs {
            lr: rule.lr,
            l2_grad: 2.0 * rule.l2,
            decay: rule.lr * rule.weight_decay,
            l2: rule.l2,
        };
        let mut args = vec![
            Arg::Ptr(self.ptr_mut(&mut param.slice)),
            Arg::Ptr(self.ptr(&grad.slice)),
            Arg::U64(len as u64),
            Arg::Step(step),
            Arg::Ptr(grad_scale.map_or(0, |s| self.ptr(&s.slice))),
            Arg::Ptr(self.ptr_mut(&mut stats.words)),
            Arg::Ptr(self.scaling_ptr()),
        ];
        let slot_ptrs: Vec<u64> = slots
            .iter_mut()
            .map(|s| self.ptr_mut(&mut s.slice))
            .collect();
        let kernel = match rule.optimizer {
            Optimizer::Sgd { momentum, nesterov } => {
                if momentum != 0.0 {
                    args.extend([
                        Arg::Ptr(slot_ptrs[0]),
                        Arg::F32(momentum),
                        Arg::I32(i32::from(nesterov)),
                    ]);
                    &self.kernels.sgd_momentum_update
                } else {
                    &self.kernels.sgd_update
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
            } => {
                let scalars = AdamScalars::new(rule.lr, beta1, beta2, rule.t, epsilon_style);
                args.extend([
                    Arg::Ptr(slot_ptrs[0]),
                    Arg::Ptr(slot_ptrs[1]),
                    Arg::F32(beta1),
                    Arg::F32(beta2),
                    Arg::F32(epsilon),
                    Arg::F32(scalars.step_size),
                    Arg::F32(scalars.denom_scale),
                ]);
                &self.kernels.adam_update
            }
            Optimizer::RmsProp {
                rho,
                momentum,
                epsilon,
            } => {
                if momentum != 0.0 {
                    args.extend([
                        Arg::Ptr(slot_ptrs[0]),
                        Arg::Ptr(slot_ptrs[1]),
                        Arg::F32(rho),
                        Arg::F32(epsilon),
                        Arg::F32(momentum),
                    ]);
                    &self.kernels.rmsprop_momentum_update
                } else {
                    args.extend([Arg::Ptr(slot_ptrs[0]), Arg::F32(rho), Arg::F32(epsilon)]);
                    &self.kernels.rmsprop_update
                }
            }
        };
        // SAFETY: every update kernel takes (float* w, const float* g, u64 len,
        // StepArgs, const float* clip, u64* stats, const u32* scaling) followed by
        // its state pointers and scalars, pushed above in its parameter order.
        // The parameter, gradient and each state buffer hold `len` values
        // (checked above), `clip` is 0 or one float, the statistics hold 8 words.
        unsafe { self.launch(kernel, kernels::grid_for_elements(len as u64), &args) }
    }

    fn count_zeros(
        &self,
        y: &CudaBuf,
        rows: usize,
        cols: usize,
        counts: &mut CudaBuf,
    ) -> Result<()> {
        check_len("count_zeros", "y", y, rows * cols)?;
        check_len("count_zeros", "counts", counts, cols)?;
        if cols == 0 {
            return Ok(());
        }
        let cols_u32 = to_u32("count_zeros", "cols", cols)?;
        let args = [
            Arg::Ptr(self.ptr(&y.slice)),
            Arg::Ptr(self.ptr_mut(&mut counts.slice)),
            Arg::U32(to_u32("count_zeros", "rows", rows)?),
            Arg::U32(cols_u32),
        ];
        // SAFETY: count_zeros(const float*, float*, u32, u32); `y` holds rows *
        // cols values and `counts` holds cols (checked above).
        unsafe {
            self.launch(
                &self.kernels.count_zeros,
                kernels::grid_for_items(cols_u32),
                &args,
            )
        }
    }
}

/// Reads the accumulators from their device words, in the layout of `kernels/common.cuh`.
fn values_of_words(words: &[u64]) -> Result<StatsValues> {
    ensure!(
        words.len() == stat::WORDS,
        "statistics: {} words read, expected {}",
        words.len(),
        stat::WORDS
    );
    if words[stat::BAD_TARGET_ROW] != 0 {
        let value = f32::from_bits(words[stat::BAD_TARGET_VALUE] as u32);
        bail!(
            "loss: target {value} of batch row {} is not a class index",
            words[stat::BAD_TARGET_ROW] - 1
        );
    }
    let number = |word: usize| f64::from_bits(words[word]);
    Ok(StatsValues {
        loss_sum: number(stat::LOSS),
        rows: number(stat::ROWS),
        correct: number(stat::CORRECT),
        abs_error_sum: number(stat::ABS_ERROR),
        penalty_sum: number(stat::PENALTY),
        nonfinite_batch: words[stat::NONFINITE].checked_sub(1),
    })
}

/// Lays out `values` as the device words [`values_of_words`] reads back.
fn words_of_values(values: &StatsValues) -> [u64; stat::WORDS] {
    let mut words = [0u64; stat::WORDS];
    words[stat::LOSS] = values.loss_sum.to_bits();
    words[stat::ROWS] = values.rows.to_bits();
    words[stat::CORRECT] = values.correct.to_bits();
    words[stat::ABS_ERROR] = values.abs_error_sum.to_bits();
    words[stat::PENALTY] = values.penalty_sum.to_bits();
    words[stat::NONFINITE] = values.nonfinite_batch.map_or(0, |batch| batch + 1);
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_words_round_trip() {
        let cases = [
            StatsValues::default(),
            StatsValues {
                loss_sum: 123.456,
                rows: 5000.0,
                correct: 4321.0,
                abs_error_sum: 0.125,
                penalty_sum: 1e-3,
                nonfinite_batch: None,
            },
            StatsValues {
                loss_sum: f64::INFINITY,
                rows: 128.0,
                nonfinite_batch: Some(0),
                ..StatsValues::default()
            },
            StatsValues {
                nonfinite_batch: Some(421),
                ..StatsValues::default()
            },
        ];
        for values in cases {
            let words = words_of_values(&values);
            assert_eq!(values_of_words(&words).unwrap(), values);
        }
    }

    #[test]
    fn stats_words_report_bad_target() {
        let mut words = words_of_values(&StatsValues::default());
        words[stat::BAD_TARGET_ROW] = 4;
        words[stat::BAD_TARGET_VALUE] = u64::from(2.5f32.to_bits());
        let error = values_of_words(&words).unwrap_err().to_string();
        assert!(error.contains("target 2.5 of batch row 3"), "{error}");
    }
}
