//! The embedded kernels and how they reach the GPU.
//!
//! `build.rs` embeds the source of every `kernels/*.cu` file and, when it
//! found nvcc, a fatbin per file with machine code for several architectures
//! plus PTX for the newest. At run time the fatbins are tried first. The
//! driver rejects them when no image fits the GPU, or when the PTX comes
//! from a toolkit newer than the driver (`CUDA_ERROR_UNSUPPORTED_PTX_VERSION`).
//! The source is then compiled with the NVRTC library of the user's CUDA
//! installation straight to machine code (CUBIN) for the detected GPU.

use super::probe::{self, CudaLibrary, guarded};
use cudarc::driver::{CudaContext, CudaModule};
use cudarc::nvrtc::{Ptx, sys as nvrtc_sys};
use std::ffi::{CStr, CString, c_char};
use std::fmt;
use std::sync::Arc;

/// One kernel file as embedded by `build.rs`.
#[derive(Clone, Copy, Debug)]
pub struct KernelFile {
    /// File name without `.cu`, e.g. `loss`.
    pub name: &'static str,
    /// The CUDA C source.
    pub source: &'static str,
    /// The fatbin nvcc built, when nvcc was found at build time.
    pub fatbin: Option<&'static [u8]>,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Kernel images to try, in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KernelLoading {
    /// The embedded fatbins, then NVRTC.
    #[default]
    Auto,
    /// Only the embedded fatbins.
    Embedded,
    /// Only NVRTC.
    Nvrtc,
}

/// Origin of the loaded kernels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelOrigin {
    /// The fatbins embedded at build time.
    Embedded,
    /// Compiled at run time by NVRTC for `sm_{arch}`.
    Nvrtc {
        /// Target architecture, e.g. 90.
        arch: u32,
        /// NVRTC's version.
        version: (i32, i32),
    },
}

impl fmt::Display for KernelOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedded => write!(f, "embedded fatbin ({})", embedded_summary()),
            Self::Nvrtc { arch, version } => write!(
                f,
                "compiled at run time by NVRTC {}.{} for sm_{arch}",
                version.0, version.1
            ),
        }
    }
}

/// Describes the embedded images, e.g. `sm_75, sm_80 and PTX compute_80, nvcc 13.0`.
pub fn embedded_summary() -> String {
    if FATBIN_ARCHS.is_empty() {
        return "none: nvcc was not found at build time".to_string();
    }
    let machine: Vec<String> = FATBIN_ARCHS.iter().map(|a| format!("sm_{a}")).collect();
    let newest = FATBIN_ARCHS[FATBIN_ARCHS.len() - 1];
    let nvcc = NVCC_RELEASE.map_or(String::new(), |r| format!(", nvcc {r}"));
    format!("{} and PTX compute_{newest}{nvcc}", machine.join(", "))
}

/// Describes which embedded image fits a GPU of compute capability `cc`, for `info`.
pub fn embedded_fit(cc: (i32, i32)) -> String {
    let arch = (cc.0 * 10 + cc.1) as u32;
    if FATBIN_ARCHS.is_empty() {
        return "no embedded image: NVRTC compiles the kernels on first use".to_string();
    }
    if FATBIN_ARCHS.contains(&arch) {
        return format!("embedded machine code for sm_{arch}");
    }
    // Machine code runs on GPUs of the same major version and an equal or higher minor one.
    if let Some(&fit) = FATBIN_ARCHS
        .iter()
        .filter(|&&a| a / 10 == arch / 10 && a <= arch)
        .max()
    {
        return format!("embedded machine code for sm_{fit} (compatible with sm_{arch})");
    }
    let newest = FATBIN_ARCHS[FATBIN_ARCHS.len() - 1];
    if arch > newest {
        format!(
            "embedded PTX compute_{newest}, compiled by the driver; NVRTC if the driver \
             rejects it"
        )
    } else {
        "no embedded image fits: NVRTC compiles the kernels on first use".to_string()
    }
}

/// Loads every kernel file into `ctx`, for a GPU of compute capability `cc`.
///
/// Returns the modules in [`KERNEL_FILES`] order. The error lists what was
/// tried and why each attempt failed.
pub fn load_modules(
    ctx: &Arc<CudaContext>,
    cc: (i32, i32),
    loading: KernelLoading,
) -> Result<(Vec<Arc<CudaModule>>, KernelOrigin), String> {
    let mut attempts = Vec::new();
    if loading != KernelLoading::Nvrtc {
        match load_embedded(ctx) {
            Ok(modules) => return Ok((modules, KernelOrigin::Embedded)),
            Err(error) => {
                attempts.push(format!("embedded fatbin ({}): {error}", embedded_summary()))
            }
        }
    }
    if loading != KernelLoading::Embedded {
        let arch = (cc.0 * 10 + cc.1) as u32;
        match load_nvrtc(ctx, arch) {
            Ok((modules, origin)) => {
                if !attempts.is_empty() {
                    log::info!(
                        "the embedded kernels did not load ({}); NVRTC compiled them",
                        attempts[0]
                    );
                }
                return Ok((modules, origin));
            }
            Err(error) => attempts.push(format!("NVRTC for sm_{arch}: {error}")),
        }
    }
    let driver = probe::driver_version().map_or("unknown".to_string(), |(major, minor)| {
        format!("{major}.{minor}")
    });
    Err(format!(
        "no kernel image loads on this GPU (compute capability {}.{}, driver for CUDA \
         {driver}). Tried: {}. Install the NVRTC library of a CUDA version your driver \
         supports ({}), or update the NVIDIA driver",
        cc.0,
        cc.1,
        attempts.join("; "),
        CudaLibrary::Nvrtc.package_hint()
    ))
}

fn load_embedded(ctx: &Arc<CudaContext>) -> Result<Vec<Arc<CudaModule>>, String> {
    let mut modules = Vec::with_capacity(KERNEL_FILES.len());
    for file in KERNEL_FILES {
        let Some(fatbin) = file.fatbin else {
            return Err("not built, because nvcc was not found at build time".to_string());
        };
        let module = guarded(|| ctx.load_module(Ptx::from_binary(fatbin.to_vec())))
            .map_err(|panic| format!("{}: {panic}", file.name))?
            .map_err(|err| format!("{}: {}", file.name, probe::error_name(err)))?;
        modules.push(module);
    }
    Ok(modules)
}

fn load_nvrtc(
    ctx: &Arc<CudaContext>,
    arch: u32,
) -> Result<(Vec<Arc<CudaModule>>, KernelOrigin), String> {
    let version = nvrtc_version()?;
    let mut modules = Vec::with_capacity(KERNEL_FILES.len());
    for file in KERNEL_FILES {
        let cubin = compile_cubin(file, arch)?;
        let module = guarded(|| ctx.load_module(Ptx::from_binary(cubin)))
            .map_err(|panic| format!("{}: {panic}", file.name))?
            .map_err(|err| {
                format!(
                    "loading the CUBIN of {} failed: {}",
                    file.name,
                    probe::error_name(err)
                )
            })?;
        modules.push(module);
    }
    Ok((modules, KernelOrigin::Nvrtc { arch, version }))
}

/// Returns the version of the NVRTC library found, or why none loads.
pub fn nvrtc_version() -> Result<(i32, i32), String> {
    let status = probe::load_library(CudaLibrary::Nvrtc);
    if let Some(error) = status.error {
        return Err(error);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both pointers are valid places for one int each.
    let result = guarded(|| unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) })?;
    check(result, "nvrtcVersion")?;
    Ok((major, minor))
}

/// Compiles one kernel file with NVRTC into machine code (CUBIN) for `sm_{arch}`.
///
/// Uses the same flags as nvcc at build time. Needs the NVRTC library but no GPU.
pub fn compile_cubin(file: &KernelFile, arch: u32) -> Result<Vec<u8>, String> {
    guarded(|| compile_cubin_unguarded(file, arch))
        .map_err(|panic| format!("NVRTC failed on {}: {panic}", file.name))?
}

fn compile_cubin_unguarded(file: &KernelFile, arch: u32) -> Result<Vec<u8>, String> {
    let source = CString::new(file.source).map_err(|_| "the kernel source contains a NUL byte")?;
    let name = CString::new(format!("{}.cu", file.name)).map_err(|_| "invalid kernel file name")?;
    let header_sources: Vec<CString> = KERNEL_HEADERS
        .iter()
        .map(|(_, text)| CString::new(*text).expect("headers contain no NUL byte"))
        .collect();
    let header_names: Vec<CString> = KERNEL_HEADERS
        .iter()
        .map(|(name, _)| CString::new(*name).expect("header names contain no NUL byte"))
        .collect();
    let header_source_ptrs: Vec<*const c_char> =
        header_sources.iter().map(|s| s.as_ptr()).collect();
    let header_name_ptrs: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();
    let mut options: Vec<CString> =
        vec![CString::new(format!("--gpu-architecture=sm_{arch}")).expect("no NUL")];
    options.extend(
        COMPILE_FLAGS
            .iter()
            .map(|f| CString::new(*f).expect("no NUL")),
    );
    let option_ptrs: Vec<*const c_char> = options.iter().map(|s| s.as_ptr()).collect();

    let mut program: nvrtc_sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a NUL-terminated string that outlives the
    // call, and the two header arrays have the same length as passed.
    let created = unsafe {
        nvrtc_sys::nvrtcCreateProgram(
            &mut program,
            source.as_ptr(),
            name.as_ptr(),
            header_source_ptrs.len() as i32,
            header_source_ptrs.as_ptr(),
            header_name_ptrs.as_ptr(),
        )
    };
    check(created, "nvrtcCreateProgram")?;
    let result = compile_program(program, &option_ptrs, file.name);
    // SAFETY: `program` was created above and is destroyed exactly once.
    unsafe {
        nvrtc_sys::nvrtcDestroyProgram(&mut program);
    }
    result
}

fn compile_program(
    program: nvrtc_sys::nvrtcProgram,
    options: &[*const c_char],
    name: &str,
) -> Result<Vec<u8>, String> {
    // SAFETY: `program` is a live program and `options` contains valid C strings.
    let compiled =
        unsafe { nvrtc_sys::nvrtcCompileProgram(program, options.len() as i32, options.as_ptr()) };
    if compiled != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!(
            "compiling {name}.cu failed ({compiled:?}):\n{}",
            program_log(program)
        ));
    }
    let mut size = 0usize;
    // SAFETY: `size` is a valid place for one usize.
    check(
        unsafe { nvrtc_sys::nvrtcGetCUBINSize(program, &mut size) },
        "nvrtcGetCUBINSize",
    )?;
    if size == 0 {
        return Err(format!(
            "NVRTC produced no CUBIN for {name}.cu; the option --gpu-architecture must name \
             a real architecture (sm_XX)"
        ));
    }
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has room for the `size` bytes NVRTC reported.
    check(
        unsafe { nvrtc_sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr().cast()) },
        "nvrtcGetCUBIN",
    )?;
    Ok(cubin)
}

fn program_log(program: nvrtc_sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: `size` is a valid place for one usize.
    if unsafe { nvrtc_sys::nvrtcGetProgramLogSize(program, &mut size) }
        != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS
        || size == 0
    {
        return String::new();
    }
    let mut log = vec![0u8; size];
    // SAFETY: `log` has room for the `size` bytes NVRTC reported, NUL included.
    if unsafe { nvrtc_sys::nvrtcGetProgramLog(program, log.as_mut_ptr().cast()) }
        != nvrtc_sys::nvrtcResult::NVRTC_SUCCESS
    {
        return String::new();
    }
    CStr::from_bytes_until_nul(&log)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn check(result: nvrtc_sys::nvrtcResult, call: &str) -> Result<(), String> {
    if result == nvrtc_sys::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(format!("{call} failed: {result:?}"))
    }
}
