//! `densetrain info`: the GPUs, driver, CUDA libraries and kernel images found.

use crate::backend::Backend;
use crate::backend::cuda::loader::{self, KernelLoading};
use crate::backend::cuda::probe::{self, CudaLibrary};
use crate::backend::cuda::{Cuda, CudaOptions};
use crate::cli::Outcome;
use anyhow::Result;
use clap::Args;
use std::fmt::Write as _;

/// Options of `densetrain info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Only list what was found; skip opening each GPU and loading the kernels on it.
    #[arg(long)]
    pub no_load: bool,
}

/// Runs `densetrain info`; it succeeds whether or not a GPU was found.
pub fn run(args: &InfoArgs) -> Result<Outcome> {
    print!("{}", report(!args.no_load));
    Ok(Outcome::Success)
}

/// Builds the report. With `load_kernels`, each GPU is opened and the
/// kernels are loaded on it, so the report shows where they came from.
pub fn report(load_kernels: bool) -> String {
    let mut out = String::new();
    let driver = probe::probe_driver();
    let line = |out: &mut String, text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(
        &mut out,
        format!("densetrain {}", env!("CARGO_PKG_VERSION")),
    );
    let version = driver
        .version
        .map_or("unknown".to_string(), |(major, minor)| {
            format!("{major}.{minor}")
        });
    if driver.library.loaded() {
        line(&mut out, format!("Driver: supports CUDA {version}"));
    } else {
        line(&mut out, "Driver: not found".to_string());
    }

    line(&mut out, "CUDA libraries:".to_string());
    for library in CudaLibrary::ALL {
        let status = if library == CudaLibrary::Driver {
            driver.library.clone()
        } else {
            probe::load_library(library)
        };
        let state = match (&status.error, &status.path) {
            (None, Some(path)) => format!("loaded from {}", path.display()),
            (None, None) => "loaded".to_string(),
            (Some(error), _) => format!("not loaded: {error}"),
        };
        line(&mut out, format!("  {:<18} {state}", library.to_string()));
    }

    line(&mut out, "Kernels:".to_string());
    line(
        &mut out,
        format!("  embedded machine code: {}", loader::embedded_summary()),
    );
    let nvrtc = match loader::nvrtc_version() {
        Ok((major, minor)) => format!("available (NVRTC {major}.{minor})"),
        Err(_) => "not available (NVRTC not found)".to_string(),
    };
    line(
        &mut out,
        format!("  source for run-time compilation: embedded; NVRTC {nvrtc}"),
    );

    if driver.devices.is_empty() {
        let reason = driver
            .problem
            .unwrap_or_else(|| "the driver reports no GPU".to_string());
        line(
            &mut out,
            format!("GPUs: none. No GPU can be used: {reason}."),
        );
        line(
            &mut out,
            "Training runs on the CPU (--device auto picks it; --device cuda fails).".to_string(),
        );
        return out;
    }
    line(&mut out, "GPUs:".to_string());
    for device in &driver.devices {
        let (major, minor) = device.compute_capability;
        line(
            &mut out,
            format!(
                "  cuda:{}  {}  compute capability {major}.{minor}  {:.1} GiB",
                device.ordinal,
                device.name,
                device.total_memory as f64 / (1024.0 * 1024.0 * 1024.0)
            ),
        );
        line(
            &mut out,
            format!(
                "    kernel images: {}",
                loader::embedded_fit(device.compute_capability)
            ),
        );
        if load_kernels {
            let opened = Cuda::open(CudaOptions {
                ordinal: device.ordinal,
                kernel_loading: KernelLoading::Auto,
                ..CudaOptions::default()
            });
            let text = match opened {
                Ok(cuda) => format!(
                    "    loaded: {} ({})",
                    cuda.kernel_origin(),
                    cuda.description()
                ),
                Err(err) => format!("    not usable: {err:#}"),
            };
            let _ = writeln!(out, "{text}");
        }
    }
    if let Some(problem) = driver.problem {
        line(&mut out, format!("Warning: {problem}"));
    }
    out
}
