//! Row-major matrix products on cuBLAS.
//!
//! cuBLAS reads matrices in column-major order. A row-major `[r, c]` buffer
//! read as column-major is its transpose, `[c, r]` with leading dimension
//! `c`. So the row-major product `C[m, n] = op(A)[m, k] · op(B)[k, n]` is
//! computed as the column-major product `Cᵀ[n, m] = op(B)ᵀ · op(A)ᵀ`: the
//! operands swap places, each keeps its own transpose flag (a stored
//! row-major `B` is already `Bᵀ` to cuBLAS), each leading dimension is the
//! stored row length, and `C`'s is `n`.
//!
//! Precision: `f32` products use `CUBLAS_COMPUTE_32F_PEDANTIC`, which cuBLAS
//! documents as full f32 arithmetic without TF32 tensor cores, unless
//! `--allow-tf32` selects `CUBLAS_COMPUTE_32F_FAST_TF32`. `bf16` and `f16`
//! copy both operands to 16 bits and accumulate in f32 into an f32 result.
//!
//! TODO: cuBLASLt with fused bias and activation epilogues for the half
//! precisions (and f32 with `--allow-tf32`) is not used yet; the bias and
//! activation run as a separate kernel after every product.

use super::kernels::{self, Arg};
use super::{Cuda, CudaBuf, Precision};
use anyhow::{Result, anyhow, ensure};
use cudarc::cublas::{result as blas, sys as blas_sys};
use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};
use std::ffi::c_void;

/// A row-major device matrix used as a product operand, as stored or transposed.
#[derive(Clone, Copy)]
pub struct MatrixOperand<'a> {
    /// The stored values.
    pub buf: &'a CudaBuf,
    /// Stored rows.
    pub rows: usize,
    /// Stored columns (the row stride).
    pub cols: usize,
    /// Whether the product reads the transpose.
    pub transposed: bool,
}

impl<'a> MatrixOperand<'a> {
    /// The matrix as stored.
    pub fn plain(buf: &'a CudaBuf, rows: usize, cols: usize) -> Self {
        Self {
            buf,
            rows,
            cols,
            transposed: false,
        }
    }

    /// The transpose of the stored matrix.
    pub fn transposed(buf: &'a CudaBuf, rows: usize, cols: usize) -> Self {
        Self {
            buf,
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

    fn operation(&self) -> blas_sys::cublasOperation_t {
        if self.transposed {
            blas_sys::cublasOperation_t::CUBLAS_OP_T
        } else {
            blas_sys::cublasOperation_t::CUBLAS_OP_N
        }
    }
}

/// Which operands of a product carry loss gradients, whose f16 copies are
/// checked for overflow under dynamic loss scaling.
#[derive(Clone, Copy, Default)]
pub(super) struct GradientOperands {
    pub a: bool,
    pub b: bool,
}

impl Cuda {
    /// Computes `dst[m, n] = a · b` for row-major operands, overwriting `dst`.
    pub fn matmul(
        &self,
        dst: &mut CudaBuf,
        a: MatrixOperand<'_>,
        b: MatrixOperand<'_>,
    ) -> Result<()> {
        self.matmul_checked(dst, a, b, GradientOperands::default())
    }

    pub(super) fn matmul_checked(
        &self,
        dst: &mut CudaBuf,
        a: MatrixOperand<'_>,
        b: MatrixOperand<'_>,
        gradients: GradientOperands,
    ) -> Result<()> {
        let (m, k) = a.logical_shape();
        let (k2, n) = b.logical_shape();
        ensure!(k == k2, "matmul: inner dimensions differ ({k} and {k2})");
        ensure!(
            a.buf.len >= m * k && b.buf.len >= k * n && dst.len >= m * n,
            "matmul: a buffer is shorter than its [{m}, {k}] x [{k}, {n}] shape"
        );
        if m == 0 || n == 0 {
            return Ok(());
        }
        if k == 0 {
            return self.fill_zero(&mut dst.slice, m * n);
        }
        for (name, value) in [("rows", m), ("columns", n), ("inner dimension", k)] {
            ensure!(
                i32::try_from(value).is_ok(),
                "matmul: {name} {value} exceed cuBLAS's 32-bit sizes"
            );
        }
        match self.options.precision {
            Precision::F32 => {
                let compute = if self.options.allow_tf32 {
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
                } else {
                    blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_PEDANTIC
                };
                let a_ptr = self.ptr(&a.buf.slice);
                let b_ptr = self.ptr(&b.buf.slice);
                let data_type = blas_sys::cudaDataType::CUDA_R_32F;
                self.gemm_ex(dst, (a, a_ptr), (b, b_ptr), (m, n, k), data_type, compute)
            }
            Precision::Bf16 | Precision::F16 => {
                let mut scratch = self.lock_scratch();
                let a_len = a.rows * a.cols;
                let b_len = b.rows * b.cols;
                let a_half =
                    self.half_copy(&mut scratch.half_a, &a.buf.slice, a_len, gradients.a)?;
                let b_half =
                    self.half_copy(&mut scratch.half_b, &b.buf.slice, b_len, gradients.b)?;
                let data_type = if self.options.precision == Precision::Bf16 {
                    blas_sys::cudaDataType::CUDA_R_16BF
                } else {
                    blas_sys::cudaDataType::CUDA_R_16F
                };
                let compute = blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F;
                self.gemm_ex(dst, (a, a_half), (b, b_half), (m, n, k), data_type, compute)
            }
        }
    }

    /// Calls `cublasGemmEx` with the operands swapped (see the module documentation).
    fn gemm_ex(
        &self,
        dst: &mut CudaBuf,
        (a, a_ptr): (MatrixOperand<'_>, u64),
        (b, b_ptr): (MatrixOperand<'_>, u64),
        (m, n, k): (usize, usize, usize),
        data_type: blas_sys::cudaDataType,
        compute: blas_sys::cublasComputeType_t,
    ) -> Result<()> {
        let alpha = 1.0f32;
        let beta = 0.0f32;
        let (c_ptr, _sync) = dst.slice.device_ptr_mut(&self.stream);
        // SAFETY: the lengths were checked against the shapes by the caller, so
        // cuBLAS reads `a` ([a.rows, a.cols], leading dimension a.cols) and `b`
        // within their buffers and writes the m x n values of `dst`. The scalars
        // are host f32 values, matching the default host pointer mode and the
        // f32 compute type, and every buffer stays allocated until the stream
        // has run the product.
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                b.operation(),
                a.operation(),
                n as i32,
                m as i32,
                k as i32,
                (&alpha as *const f32).cast::<c_void>(),
                b_ptr as *const c_void,
                data_type,
                b.cols as i32,
                a_ptr as *const c_void,
                data_type,
                a.cols as i32,
                (&beta as *const f32).cast::<c_void>(),
                c_ptr as *mut c_void,
                blas_sys::cudaDataType::CUDA_R_32F,
                n as i32,
                compute,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| {
            anyhow!(
                "cuda:{}: cuBLAS matrix product [{m}, {k}] x [{k}, {n}] failed: {:?}",
                self.options.ordinal,
                e.0
            )
        })
    }

    /// Converts `len` values of `src` to the precision's 16-bit type in `cache`
    /// (grown as needed) and returns the copy's device pointer.
    fn half_copy(
        &self,
        cache: &mut Option<CudaSlice<u16>>,
        src: &CudaSlice<f32>,
        len: usize,
        is_gradient: bool,
    ) -> Result<u64> {
        if cache.as_ref().is_none_or(|c| c.len() < len) {
            *cache = Some(self.alloc::<u16>(len, "a 16-bit operand copy")?);
        }
        let copy = cache.as_mut().expect("allocated above");
        let out = copy.device_ptr_mut(&self.stream).0;
        let src_ptr = self.ptr(src);
        let config = kernels::grid_for_elements(len as u64);
        match self.options.precision {
            Precision::Bf16 => {
                // SAFETY: convert_bf16(const float*, u16*, u64); `src` holds at
                // least `len` values (checked by the caller) and the copy was
                // grown to at least `len`.
                unsafe {
                    self.launch(
                        &self.kernels.convert_bf16,
                        config,
                        &[Arg::Ptr(src_ptr), Arg::Ptr(out), Arg::U64(len as u64)],
                    )?;
                }
            }
            _ => {
                let scaling = match (&self.scaling, is_gradient) {
                    (Some(state), true) => self.ptr(state),
                    _ => 0,
                };
                // SAFETY: convert_f16(const float*, u16*, u64, u32*); sizes as for
                // bf16 above, and `scaling` is 0 or the 4-word loss-scaling state.
                unsafe {
                    self.launch(
                        &self.kernels.convert_f16,
                        config,
                        &[
                            Arg::Ptr(src_ptr),
                            Arg::Ptr(out),
                            Arg::U64(len as u64),
                            Arg::Ptr(scaling),
                        ],
                    )?;
                }
            }
        }
        Ok(out)
    }
}

/// Returns the raw device pointer of `slice` for a kernel or cuBLAS argument.
pub(super) fn device_ptr<T>(slice: &CudaSlice<T>, stream: &cudarc::driver::CudaStream) -> u64 {
    slice.device_ptr(stream).0
}
