//! Handles of the kernels in `kernels/*.cu` and the launch helper.

use super::loader::KERNEL_FILES;
use anyhow::{Result, anyhow};
use cudarc::driver::{
    CudaFunction, CudaModule, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg,
};
use std::sync::Arc;

/// Threads per block; the kernels' block reductions are written for this size (`BLOCK`).
pub const BLOCK: u32 = 256;
/// Most blocks a grid-stride kernel starts; enough to fill every SM of current GPUs.
const MAX_GRID_BLOCKS: u64 = 8192;

/// Words of the statistics buffer, as `common.cuh` lays them out.
pub mod stat {
    pub const LOSS: usize = 0;
    pub const ROWS: usize = 1;
    pub const CORRECT: usize = 2;
    pub const ABS_ERROR: usize = 3;
    pub const PENALTY: usize = 4;
    pub const NONFINITE: usize = 5;
    pub const BAD_TARGET_ROW: usize = 6;
    pub const BAD_TARGET_VALUE: usize = 7;
    pub const WORDS: usize = 8;
}

/// Words of the f16 loss-scaling state, as `common.cuh` lays them out.
pub mod scale {
    pub const VALUE: usize = 0;
    pub const WORDS: usize = 4;
}

/// Scalars shared by every optimizer update; the layout of `StepArgs` in `optimizer.cu`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct StepArgs {
    pub lr: f32,
    pub l2_grad: f32,
    pub decay: f32,
    pub l2: f32,
}

// SAFETY: `StepArgs` is `repr(C)` with four f32 fields, the layout of the
// kernels' `StepArgs`, and has no padding or pointers.
unsafe impl DeviceRepr for StepArgs {}

/// One kernel argument, passed by value.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A device pointer, or 0 for none.
    Ptr(u64),
    U32(u32),
    U64(u64),
    I32(i32),
    F32(f32),
    F64(f64),
    Step(StepArgs),
}

/// A loaded kernel and its name for error messages.
pub struct Kernel {
    name: &'static str,
    function: CudaFunction,
}

macro_rules! kernel_set {
    ($($file:literal => [$($name:ident),* $(,)?]),* $(,)?) => {
        /// Every kernel the backend launches.
        pub struct Kernels {
            $($(pub $name: Kernel,)*)*
        }

        /// Names of every kernel the backend loads, by file.
        pub const KERNEL_NAMES: &[(&str, &[&str])] = &[
            $(($file, &[$(stringify!($name)),*]),)*
        ];

        impl Kernels {
            /// Looks up every kernel in `modules` (in [`KERNEL_FILES`] order).
            pub fn new(modules: &[Arc<CudaModule>]) -> Result<Self> {
                Ok(Self {
                    $($($name: lookup(modules, $file, stringify!($name))?,)*)*
                })
            }
        }
    };
}

kernel_set! {
    "elementwise" => [
        bias_activation_forward,
        activation_backward_bias,
        dropout_forward,
        dropout_backward,
        gather_rows,
        count_zeros,
        convert_bf16,
        convert_f16,
    ],
    "loss" => [
        softmax_cross_entropy,
        sigmoid_cross_entropy,
        squared_error,
        predict_softmax,
        predict_sigmoid,
    ],
    "optimizer" => [
        sgd_update,
        sgd_momentum_update,
        adam_update,
        rmsprop_update,
        rmsprop_momentum_update,
        sum_squares,
        clip_finalize,
        loss_scale_update,
    ],
}

fn lookup(modules: &[Arc<CudaModule>], file: &str, name: &'static str) -> Result<Kernel> {
    let index = KERNEL_FILES
        .iter()
        .position(|f| f.name == file)
        .ok_or_else(|| anyhow!("kernel file {file}.cu is not embedded in this build"))?;
    let module = modules
        .get(index)
        .ok_or_else(|| anyhow!("kernel file {file}.cu was not loaded"))?;
    let function = module
        .load_function(name)
        .map_err(|e| anyhow!("kernel {name} is missing from {file}.cu: {:?}", e.0))?;
    Ok(Kernel { name, function })
}

/// A grid for a grid-stride loop over `len` elements.
pub fn grid_for_elements(len: u64) -> LaunchConfig {
    let blocks = len.div_ceil(u64::from(BLOCK)).clamp(1, MAX_GRID_BLOCKS);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid with one thread per item (row or column), `items` at least 1.
pub fn grid_for_items(items: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (items.div_ceil(BLOCK).max(1), 1, 1),
        block_dim: (BLOCK, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// A grid of one thread.
pub fn single_thread() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (1, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Launches `kernel` on `stream` with `args`.
///
/// # Safety
/// `args` must match the kernel's parameters in number, order and type, and
/// every pointer must address device memory that stays allocated until the
/// kernel finishes and is large enough for every access the kernel makes
/// with the sizes passed beside it.
pub unsafe fn launch(
    stream: &Arc<CudaStream>,
    ordinal: usize,
    kernel: &Kernel,
    config: LaunchConfig,
    args: &[Arg],
) -> Result<()> {
    let mut builder = stream.launch_builder(&kernel.function);
    for arg in args {
        match arg {
            Arg::Ptr(v) | Arg::U64(v) => builder.arg(v),
            Arg::U32(v) => builder.arg(v),
            Arg::I32(v) => builder.arg(v),
            Arg::F32(v) => builder.arg(v),
            Arg::F64(v) => builder.arg(v),
            Arg::Step(v) => builder.arg(v),
        };
    }
    // SAFETY: the caller guarantees the arguments match the kernel.
    unsafe { builder.launch(config) }.map_err(|e| {
        anyhow!(
            "cuda:{ordinal}: launching kernel {} failed: {:?}",
            kernel.name,
            e.0
        )
    })?;
    Ok(())
}
