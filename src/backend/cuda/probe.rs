//! Finding the NVIDIA driver, the CUDA libraries and the GPUs without panicking.
//!
//! cudarc loads each library on first use and panics when the library or one
//! of its symbols is missing. Everything here checks first that the library
//! file can be opened (`sys::is_culib_present`) and runs each remaining call
//! inside [`guarded`], which turns such a panic into an error message.

use cudarc::driver::{result as driver, sys as driver_sys};
use std::cell::Cell;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Once;

thread_local! {
    /// Set while [`guarded`] runs, so its expected panics print nothing.
    static QUIET: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, turning a panic into `Err` with the panic message.
///
/// A panic inside `f` is not printed; panics on other threads, or outside
/// `f`, still go to the previous panic hook.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !QUIET.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let was_quiet = QUIET.with(|q| q.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(was_quiet));
    result.map_err(|payload| {
        if let Some(text) = payload.downcast_ref::<String>() {
            text.clone()
        } else if let Some(text) = payload.downcast_ref::<&str>() {
            (*text).to_string()
        } else {
            "unknown panic".to_string()
        }
    })
}

/// A CUDA library densetrain loads at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CudaLibrary {
    /// The driver API (`libcuda.so.1`, installed with the NVIDIA driver).
    Driver,
    /// cuBLAS, for the matrix products.
    Cublas,
    /// cuBLASLt.
    CublasLt,
    /// NVRTC, the run-time compiler used when no embedded kernel image loads.
    Nvrtc,
}

impl CudaLibrary {
    /// Every library, in the order `info` prints them.
    pub const ALL: [CudaLibrary; 4] = [Self::Driver, Self::Cublas, Self::CublasLt, Self::Nvrtc];

    /// The library's name as its file names start, e.g. `libcublas`.
    pub fn file_stem(self) -> &'static str {
        match self {
            Self::Driver => "libcuda",
            Self::Cublas => "libcublas",
            Self::CublasLt => "libcublasLt",
            Self::Nvrtc => "libnvrtc",
        }
    }

    /// What installs the library, for error messages.
    pub fn package_hint(self) -> &'static str {
        match self {
            Self::Driver => "the NVIDIA driver",
            Self::Cublas | Self::CublasLt => {
                "the CUDA cuBLAS library (e.g. the libcublas-12-x or cuda-libraries package, \
                 or the nvidia-cublas-cu12 wheel)"
            }
            Self::Nvrtc => {
                "the CUDA NVRTC library (e.g. the cuda-nvrtc-12-x package, or the \
                 nvidia-cuda-nvrtc-cu12 wheel)"
            }
        }
    }

    fn is_present(self) -> Result<bool, String> {
        // SAFETY: each call only tries to open candidate file names with
        // dlopen and closes them again; it runs no library code beyond the
        // library's initialisers.
        guarded(|| unsafe {
            match self {
                Self::Driver => driver_sys::is_culib_present(),
                Self::Cublas => cudarc::cublas::sys::is_culib_present(),
                Self::CublasLt => cudarc::cublaslt::sys::is_culib_present(),
                Self::Nvrtc => cudarc::nvrtc::sys::is_culib_present(),
            }
        })
    }

    fn load(self) -> Result<(), String> {
        // SAFETY: `culib` opens the library once and keeps it loaded for the
        // rest of the process; it panics (caught here) when no file opens.
        guarded(|| unsafe {
            match self {
                Self::Driver => {
                    driver_sys::culib();
                }
                Self::Cublas => {
                    cudarc::cublas::sys::culib();
                }
                Self::CublasLt => {
                    cudarc::cublaslt::sys::culib();
                }
                Self::Nvrtc => {
                    cudarc::nvrtc::sys::culib();
                }
            }
        })
    }
}

impl fmt::Display for CudaLibrary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Driver => "libcuda (driver)",
            Self::Cublas => "cuBLAS",
            Self::CublasLt => "cuBLASLt",
            Self::Nvrtc => "NVRTC",
        };
        f.write_str(name)
    }
}

/// Whether a library loaded, and from which file.
#[derive(Clone, Debug)]
pub struct LibraryStatus {
    /// The library.
    pub library: CudaLibrary,
    /// The file it was loaded from, when the process's memory map shows it.
    pub path: Option<PathBuf>,
    /// Why it did not load; `None` when it did.
    pub error: Option<String>,
}

impl LibraryStatus {
    /// Whether the library loaded.
    pub fn loaded(&self) -> bool {
        self.error.is_none()
    }
}

/// Opens `library` (once per process) and reports where it came from.
pub fn load_library(library: CudaLibrary) -> LibraryStatus {
    let error = match library.is_present() {
        Ok(true) => library.load().err(),
        Ok(false) => Some(format!(
            "no {}.so file was found on the library path; install {}, or add its \
             directory to LD_LIBRARY_PATH",
            library.file_stem(),
            library.package_hint()
        )),
        Err(panic) => Some(format!("probing {library} failed: {panic}")),
    };
    let path = if error.is_none() {
        mapped_path(library.file_stem())
    } else {
        None
    };
    LibraryStatus {
        library,
        path,
        error,
    }
}

/// Finds the file of a loaded shared library whose name starts with `stem.so`.
fn mapped_path(stem: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let prefix = format!("{stem}.so");
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| {
            path.rsplit('/')
                .next()
                .is_some_and(|file| file.starts_with(&prefix))
        })
        .map(PathBuf::from)
}

/// One GPU as the driver reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    /// Device ordinal (the N of `--device cuda:N`).
    pub ordinal: usize,
    /// Product name, e.g. `NVIDIA H100 80GB HBM3`.
    pub name: String,
    /// Compute capability, e.g. `(9, 0)`.
    pub compute_capability: (i32, i32),
    /// Total device memory in bytes.
    pub total_memory: usize,
}

/// What the driver reports.
#[derive(Clone, Debug)]
pub struct DriverStatus {
    /// The driver library.
    pub library: LibraryStatus,
    /// The CUDA version the driver supports, e.g. `(12, 8)`.
    pub version: Option<(i32, i32)>,
    /// The GPUs found.
    pub devices: Vec<DeviceInfo>,
    /// Why no GPU can be used; `None` when at least one device was found.
    pub problem: Option<String>,
}

/// Loads the driver library, initialises it and lists the GPUs.
pub fn probe_driver() -> DriverStatus {
    let library = load_library(CudaLibrary::Driver);
    let mut status = DriverStatus {
        library: library.clone(),
        version: None,
        devices: Vec::new(),
        problem: None,
    };
    if let Some(error) = &library.error {
        status.problem = Some(format!("the NVIDIA driver library is missing: {error}"));
        return status;
    }
    status.version = driver_version().ok();
    match guarded(driver::init) {
        Err(panic) => {
            status.problem = Some(format!(
                "the NVIDIA driver library could not be initialised ({panic}); the driver \
                 may be too old: install a driver for CUDA 12 or newer"
            ));
            return status;
        }
        Ok(Err(err)) => {
            status.problem = Some(describe_init_error(err));
            return status;
        }
        Ok(Ok(())) => {}
    }
    let count = match guarded(driver::device::get_count) {
        Ok(Ok(count)) => count.max(0) as usize,
        Ok(Err(err)) => {
            status.problem = Some(format!("counting GPUs failed: {}", error_name(err)));
            return status;
        }
        Err(panic) => {
            status.problem = Some(format!("counting GPUs failed: {panic}"));
            return status;
        }
    };
    for ordinal in 0..count {
        match device_info(ordinal) {
            Ok(info) => status.devices.push(info),
            Err(error) => {
                status.problem = Some(format!("querying GPU {ordinal} failed: {error}"));
            }
        }
    }
    if status.devices.is_empty() && status.problem.is_none() {
        status.problem = Some("the NVIDIA driver reports no GPU".to_string());
    }
    status
}

/// Returns the CUDA version the driver supports.
pub fn driver_version() -> Result<(i32, i32), String> {
    let mut version = 0;
    // SAFETY: `version` is a valid place for the driver to write one int.
    let result = guarded(|| unsafe { driver_sys::cuDriverGetVersion(&mut version) })?;
    if result != driver_sys::CUresult::CUDA_SUCCESS {
        return Err(format!("cuDriverGetVersion failed: {result:?}"));
    }
    Ok((version / 1000, (version % 1000) / 10))
}

fn device_info(ordinal: usize) -> Result<DeviceInfo, String> {
    let query = || -> Result<DeviceInfo, driver::DriverError> {
        use driver_sys::CUdevice_attribute::{
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR as MAJOR,
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR as MINOR,
        };
        let device = driver::device::get(ordinal as i32)?;
        let name = driver::device::get_name(device)?;
        // SAFETY: `device` comes from `device::get` above.
        let (major, minor, total_memory) = unsafe {
            (
                driver::device::get_attribute(device, MAJOR)?,
                driver::device::get_attribute(device, MINOR)?,
                driver::device::total_mem(device)?,
            )
        };
        Ok(DeviceInfo {
            ordinal,
            name,
            compute_capability: (major, minor),
            total_memory,
        })
    };
    match guarded(query) {
        Ok(Ok(info)) => Ok(info),
        Ok(Err(err)) => Err(error_name(err)),
        Err(panic) => Err(panic),
    }
}

/// Names a driver error, e.g. `CUDA_ERROR_NO_DEVICE`.
pub fn error_name(err: driver::DriverError) -> String {
    format!("{:?}", err.0)
}

fn describe_init_error(err: driver::DriverError) -> String {
    use driver_sys::CUresult as R;
    let name = error_name(err);
    match err.0 {
        R::CUDA_ERROR_NO_DEVICE => {
            format!("the NVIDIA driver is installed but found no GPU ({name})")
        }
        R::CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE | R::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH => {
            format!(
                "the CUDA driver library does not match the kernel driver ({name}); \
                 reinstall the NVIDIA driver or remove the CUDA compatibility package \
                 from the library path"
            )
        }
        _ => format!("initialising the NVIDIA driver failed ({name})"),
    }
}
