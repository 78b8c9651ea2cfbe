//! `--device`, `--precision` and `--allow-tf32`: picking the backend a command runs on.
//!
//! [`SelectedBackend`] is itself a [`Backend`] that forwards every call to the
//! CPU or the CUDA backend, so the commands and the fit loop stay written
//! once against the trait.

use crate::backend::cpu::{Cpu, CpuStats};
use crate::backend::cuda::probe::{self, CudaLibrary};
use crate::backend::cuda::{Cuda, CudaBuf, CudaIdx, CudaOptions, CudaStats, Precision};
use crate::backend::{Backend, Dims, DropoutMask, LossKind, StatsValues};
use crate::cli::args::FitArgs;
use crate::model::Activation;
use crate::optim::UpdateRule;
use anyhow::{Result, bail};

/// A parsed `--device` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    /// A GPU when one works, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// GPU number N (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl DeviceRequest {
    /// Parses `auto`, `cpu`, `cuda` or `cuda:N`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            _ => match text.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(ordinal)) => Ok(Self::Cuda(ordinal)),
                _ => bail!(
                    "invalid --device '{text}': expected auto, cpu, cuda or cuda:N with N a GPU \
                     number such as 0"
                ),
            },
        }
    }
}

/// Opens the backend that `fit` requests (see [`select_backend`]).
pub fn select(fit: &FitArgs) -> Result<SelectedBackend> {
    select_backend(
        &fit.device,
        &fit.precision,
        fit.allow_tf32,
        fit.threads,
        Cuda::open,
    )
}

/// Opens the backend for `--device device --precision precision`.
///
/// `auto` tries `open_cuda` for GPU 0 and falls back to the CPU with one log
/// line saying why. A half precision on the CPU, also after that fallback,
/// is an error. `open_cuda` is a parameter so tests can stand in for a GPU.
pub fn select_backend(
    device: &str,
    precision: &str,
    allow_tf32: bool,
    threads: usize,
    open_cuda: impl FnOnce(CudaOptions) -> Result<Cuda>,
) -> Result<SelectedBackend> {
    let request = DeviceRequest::parse(device)?;
    let precision = Precision::parse(precision)?;
    let options = |ordinal| CudaOptions {
        ordinal,
        precision,
        allow_tf32,
        ..CudaOptions::default()
    };
    let cpu_reason = match request {
        DeviceRequest::Cpu => "--device cpu was given".to_string(),
        DeviceRequest::Cuda(ordinal) => {
            return match open_cuda(options(ordinal)) {
                Ok(cuda) => Ok(SelectedBackend::Cuda(Box::new(cuda))),
                Err(err) => bail!("--device {device}: the GPU cannot be used: {err:#}"),
            };
        }
        DeviceRequest::Auto => match open_cuda(options(0)) {
            Ok(cuda) => {
                log::info!("--device auto: using {} on GPU 0", cuda.device().name);
                return Ok(SelectedBackend::Cuda(Box::new(cuda)));
            }
            Err(err) => {
                let reason = format!("{err:#}");
                if precision == Precision::F32 {
                    // Without a driver the machine has no NVIDIA GPU, so the CPU is
                    // expected; with one, a GPU that does not work deserves a warning.
                    let message = format!("--device auto: using the CPU, because {reason}");
                    if probe::load_library(CudaLibrary::Driver).loaded() {
                        log::warn!("{message}");
                    } else {
                        log::info!("{message}");
                    }
                }
                reason
            }
        },
    };
    if precision != Precision::F32 {
        bail!(
            "--precision {precision} needs a GPU, but this run would use the CPU ({cpu_reason}); \
             use --precision f32 to train on the CPU"
        );
    }
    if allow_tf32 {
        log::warn!("--allow-tf32 has no effect on the CPU, which always multiplies in f32");
    }
    Ok(SelectedBackend::Cpu(Cpu::new(threads)?))
}

/// The backend a command runs on.
pub enum SelectedBackend {
    /// The CPU.
    Cpu(Cpu),
    /// A GPU.
    Cuda(Box<Cuda>),
}

/// A buffer of a [`SelectedBackend`].
pub enum SelectedBuf {
    Cpu(Vec<f32>),
    Cuda(CudaBuf),
}

/// An index buffer of a [`SelectedBackend`].
pub enum SelectedIdx {
    Cpu(Vec<u32>),
    Cuda(CudaIdx),
}

/// Accumulators of a [`SelectedBackend`].
pub enum SelectedStats {
    Cpu(CpuStats),
    Cuda(CudaStats),
}

// Each `*_part` macro unwraps the values of one backend: `buf`, `idx` and
// `stats` take the inner value out of a wrapper (a wrapper of the other
// backend is a caller bug and returns an error), `wrap` puts a buffer back.
macro_rules! cpu_part {
    (buf $e:expr) => {
        match $e {
            SelectedBuf::Cpu(inner) => inner,
            SelectedBuf::Cuda(_) => bail!("a GPU buffer was passed to the CPU backend"),
        }
    };
    (idx $e:expr) => {
        match $e {
            SelectedIdx::Cpu(inner) => inner,
            SelectedIdx::Cuda(_) => bail!("a GPU index buffer was passed to the CPU backend"),
        }
    };
    (stats $e:expr) => {
        match $e {
            SelectedStats::Cpu(inner) => inner,
            SelectedStats::Cuda(_) => bail!("GPU statistics were passed to the CPU backend"),
        }
    };
    (wrap $e:expr) => {
        SelectedBuf::Cpu($e)
    };
}

macro_rules! cuda_part {
    (buf $e:expr) => {
        match $e {
            SelectedBuf::Cuda(inner) => inner,
            SelectedBuf::Cpu(_) => bail!("a CPU buffer was passed to the CUDA backend"),
        }
    };
    (idx $e:expr) => {
        match $e {
            SelectedIdx::Cuda(inner) => inner,
            SelectedIdx::Cpu(_) => bail!("a CPU index buffer was passed to the CUDA backend"),
        }
    };
    (stats $e:expr) => {
        match $e {
            SelectedStats::Cuda(inner) => inner,
            SelectedStats::Cpu(_) => bail!("CPU statistics were passed to the CUDA backend"),
        }
    };
    (wrap $e:expr) => {
        SelectedBuf::Cuda($e)
    };
}

pub(crate) use {cpu_part, cuda_part};

/// Runs `$body` for the selected backend, with `$b` the backend and `$v!`
/// the matching `*_part` macro.
macro_rules! dispatch {
    ($self:expr, $b:ident, $v:ident => $body:expr) => {
        match $self {
            SelectedBackend::Cpu($b) => {
                #[allow(unused_imports)]
                use self::cpu_part as $v;
                $body
            }
            SelectedBackend::Cuda($b) => {
                #[allow(unused_imports)]
                use self::cuda_part as $v;
                let $b: &Cuda = $b;
                $body
            }
        }
    };
}

impl Backend for SelectedBackend {
    type Buf = SelectedBuf;
    type Idx = SelectedIdx;
    type Stats = SelectedStats;

    fn description(&self) -> String {
        dispatch!(self, b, v => b.description())
    }

    fn zeros(&self, len: usize) -> Result<SelectedBuf> {
        dispatch!(self, b, v => Ok(v!(wrap b.zeros(len)?)))
    }

    fn upload(&self, host: &[f32]) -> Result<SelectedBuf> {
        dispatch!(self, b, v => Ok(v!(wrap b.upload(host)?)))
    }

    fn upload_vec(&self, host: Vec<f32>) -> Result<SelectedBuf> {
        dispatch!(self, b, v => Ok(v!(wrap b.upload_vec(host)?)))
    }

    fn write(&self, host: &[f32], dst: &mut SelectedBuf) -> Result<()> {
        dispatch!(self, b, v => b.write(host, v!(buf dst)))
    }

    fn download(&self, buf: &SelectedBuf) -> Result<Vec<f32>> {
        dispatch!(self, b, v => b.download(v!(buf buf)))
    }

    fn copy(&self, src: &SelectedBuf, dst: &mut SelectedBuf) -> Result<()> {
        dispatch!(self, b, v => b.copy(v!(buf src), v!(buf dst)))
    }

    fn upload_idx(&self, host: &[u32]) -> Result<SelectedIdx> {
        match self {
            SelectedBackend::Cpu(b) => Ok(SelectedIdx::Cpu(b.upload_idx(host)?)),
            SelectedBackend::Cuda(b) => Ok(SelectedIdx::Cuda(b.upload_idx(host)?)),
        }
    }

    fn write_idx(&self, host: &[u32], dst: &mut SelectedIdx) -> Result<()> {
        dispatch!(self, b, v => b.write_idx(host, v!(idx dst)))
    }

    fn new_stats(&self) -> Result<SelectedStats> {
        match self {
            SelectedBackend::Cpu(b) => Ok(SelectedStats::Cpu(b.new_stats()?)),
            SelectedBackend::Cuda(b) => Ok(SelectedStats::Cuda(b.new_stats()?)),
        }
    }

    fn reset_stats(&self, stats: &mut SelectedStats) -> Result<()> {
        dispatch!(self, b, v => b.reset_stats(v!(stats stats)))
    }

    fn read_stats(&self, stats: &SelectedStats) -> Result<StatsValues> {
        dispatch!(self, b, v => b.read_stats(v!(stats stats)))
    }

    fn write_stats(&self, values: &StatsValues, stats: &mut SelectedStats) -> Result<()> {
        dispatch!(self, b, v => b.write_stats(values, v!(stats stats)))
    }

    fn gather_rows(
        &self,
        src: &SelectedBuf,
        cols: usize,
        idx: &SelectedIdx,
        start: usize,
        count: usize,
        dst: &mut SelectedBuf,
    ) -> Result<()> {
        dispatch!(self, b, v => b.gather_rows(v!(buf src), cols, v!(idx idx), start, count, v!(buf dst)))
    }

    fn dense_forward(
        &self,
        x: &SelectedBuf,
        w: &SelectedBuf,
        bias: &SelectedBuf,
        dims: Dims,
        act: Activation,
        y: &mut SelectedBuf,
    ) -> Result<()> {
        dispatch!(self, b, v => b.dense_forward(v!(buf x), v!(buf w), v!(buf bias), dims, act, v!(buf y)))
    }

    fn dense_backward(
        &self,
        x: &SelectedBuf,
        w: &SelectedBuf,
        y: &SelectedBuf,
        dims: Dims,
        act: Activation,
        dy: &mut SelectedBuf,
        dw: &mut SelectedBuf,
        db: &mut SelectedBuf,
        dx: Option<&mut SelectedBuf>,
    ) -> Result<()> {
        dispatch!(self, b, v => {
            let dx = match dx {
                Some(d) => Some(v!(buf d)),
                None => None,
            };
            b.dense_backward(v!(buf x), v!(buf w), v!(buf y), dims, act, v!(buf dy), v!(buf dw), v!(buf db), dx)
        })
    }

    fn dropout_forward(
        &self,
        y: &SelectedBuf,
        len: usize,
        mask: DropoutMask,
        out: &mut SelectedBuf,
    ) -> Result<()> {
        dispatch!(self, b, v => b.dropout_forward(v!(buf y), len, mask, v!(buf out)))
    }

    fn dropout_backward(&self, dy: &mut SelectedBuf, len: usize, mask: DropoutMask) -> Result<()> {
        dispatch!(self, b, v => b.dropout_backward(v!(buf dy), len, mask))
    }

    fn loss(
        &self,
        kind: LossKind,
        logits: &SelectedBuf,
        targets: &SelectedBuf,
        class_weights: Option<&SelectedBuf>,
        rows: usize,
        outputs: usize,
        batch: u64,
        dlogits: Option<&mut SelectedBuf>,
        stats: &mut SelectedStats,
    ) -> Result<()> {
        dispatch!(self, b, v => {
            let weights = match class_weights {
                Some(w) => Some(v!(buf w)),
                None => None,
            };
            let grad = match dlogits {
                Some(d) => Some(v!(buf d)),
                None => None,
            };
            b.loss(kind, v!(buf logits), v!(buf targets), weights, rows, outputs, batch, grad, v!(stats stats))
        })
    }

    fn predict(
        &self,
        kind: LossKind,
        logits: &SelectedBuf,
        rows: usize,
        outputs: usize,
        out: &mut SelectedBuf,
    ) -> Result<()> {
        dispatch!(self, b, v => b.predict(kind, v!(buf logits), rows, outputs, v!(buf out)))
    }

    fn clip_scale(
        &self,
        grads: &[&SelectedBuf],
        max_norm: f32,
        scale: &mut SelectedBuf,
    ) -> Result<()> {
        dispatch!(self, b, v => {
            let mut inner = Vec::with_capacity(grads.len());
            for g in grads {
                inner.push(v!(buf *g));
            }
            b.clip_scale(&inner, max_norm, v!(buf scale))
        })
    }

    fn optimizer_step(
        &self,
        rule: &UpdateRule,
        param: &mut SelectedBuf,
        grad: &SelectedBuf,
        slots: &mut [SelectedBuf],
        grad_scale: Option<&SelectedBuf>,
        stats: &mut SelectedStats,
    ) -> Result<()> {
        match self {
            SelectedBackend::Cpu(b) => {
                // The CPU's state buffers are moved out and back, because the
                // trait takes them as one mutable slice of the inner type.
                let mut inner: Vec<Vec<f32>> = Vec::with_capacity(slots.len());
                for slot in slots.iter_mut() {
                    inner.push(std::mem::take(cpu_part!(buf slot)));
                }
                let scale = match grad_scale {
                    Some(s) => Some(cpu_part!(buf s)),
                    None => None,
                };
                let result = b.optimizer_step(
                    rule,
                    cpu_part!(buf param),
                    cpu_part!(buf grad),
                    &mut inner,
                    scale,
                    cpu_part!(stats stats),
                );
                for (slot, values) in slots.iter_mut().zip(inner) {
                    *slot = SelectedBuf::Cpu(values);
                }
                result
            }
            SelectedBackend::Cuda(b) => {
                let mut inner: Vec<CudaBuf> = Vec::with_capacity(slots.len());
                for slot in slots.iter_mut() {
                    let taken = std::mem::replace(slot, SelectedBuf::Cpu(Vec::new()));
                    inner.push(match taken {
                        SelectedBuf::Cuda(buf) => buf,
                        SelectedBuf::Cpu(_) => bail!("a CPU buffer was passed to the CUDA backend"),
                    });
                }
                let scale = match grad_scale {
                    Some(s) => Some(cuda_part!(buf s)),
                    None => None,
                };
                let result = b.optimizer_step(
                    rule,
                    cuda_part!(buf param),
                    cuda_part!(buf grad),
                    &mut inner,
                    scale,
                    cuda_part!(stats stats),
                );
                for (slot, buf) in slots.iter_mut().zip(inner) {
                    *slot = SelectedBuf::Cuda(buf);
                }
                result
            }
        }
    }

    fn count_zeros(
        &self,
        y: &SelectedBuf,
        rows: usize,
        cols: usize,
        counts: &mut SelectedBuf,
    ) -> Result<()> {
        dispatch!(self, b, v => b.count_zeros(v!(buf y), rows, cols, v!(buf counts)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_gpu(_: CudaOptions) -> Result<Cuda> {
        bail!("the test stands in for a machine without a GPU")
    }

    #[test]
    fn device_names_parse() {
        assert_eq!(DeviceRequest::parse("auto").unwrap(), DeviceRequest::Auto);
        assert_eq!(DeviceRequest::parse("cpu").unwrap(), DeviceRequest::Cpu);
        assert_eq!(
            DeviceRequest::parse("cuda").unwrap(),
            DeviceRequest::Cuda(0)
        );
        assert_eq!(
            DeviceRequest::parse("cuda:3").unwrap(),
            DeviceRequest::Cuda(3)
        );
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CPU", ""] {
            let err = DeviceRequest::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("expected auto, cpu, cuda or cuda:N"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn auto_falls_back_to_cpu() {
        let selected = select_backend("auto", "f32", false, 1, no_gpu).unwrap();
        assert!(matches!(selected, SelectedBackend::Cpu(_)));
        assert_eq!(selected.description(), "cpu (1 thread)");
    }

    #[test]
    fn cuda_without_gpu_names_cause() {
        let Err(err) = select_backend("cuda:1", "f32", false, 1, no_gpu) else {
            panic!("--device cuda:1 must fail without a GPU");
        };
        let text = err.to_string();
        assert!(text.contains("--device cuda:1"), "{text}");
        assert!(
            text.contains("stands in for a machine without a GPU"),
            "{text}"
        );
    }

    #[test]
    fn half_precision_on_cpu_rejected() {
        for (device, reason) in [("cpu", "--device cpu was given"), ("auto", "stands in")] {
            for precision in ["bf16", "f16"] {
                let Err(err) = select_backend(device, precision, false, 1, no_gpu) else {
                    panic!("--device {device} --precision {precision} must fail");
                };
                let text = err.to_string();
                assert!(
                    text.contains(&format!("--precision {precision} needs a GPU")),
                    "{text}"
                );
                assert!(text.contains(reason), "{text}");
            }
        }
    }

    #[test]
    fn bad_precision_rejected() {
        let Err(err) = select_backend("cpu", "f64", false, 1, no_gpu) else {
            panic!("--precision f64 must fail");
        };
        assert!(
            err.to_string().contains("expected f32, bf16 or f16"),
            "{err}"
        );
    }

    #[test]
    fn cpu_buffers_round_trip() {
        let backend = select_backend("cpu", "f32", false, 1, no_gpu).unwrap();
        let mut buf = backend.upload(&[1.0, 2.0, 3.0]).unwrap();
        backend.write(&[4.0, 5.0, 6.0], &mut buf).unwrap();
        assert_eq!(backend.download(&buf).unwrap(), vec![4.0, 5.0, 6.0]);
    }
}
