//! Compiles every embedded kernel file with NVRTC to machine code for each
//! architecture the fatbins target, as the run-time fallback does on a GPU.
//! Needs the NVRTC library but no GPU.
//!
//! Without NVRTC on the library path the test prints why it skipped, unless
//! `DENSETRAIN_REQUIRE_NVRTC=1` (set by `.ci/run`) makes that a failure.

use densetrain::backend::cuda::kernels::KERNEL_NAMES;
use densetrain::backend::cuda::loader::{self, KERNEL_FILES};

/// Compute capabilities the embedded fatbins target by default.
const ARCHS: [u32; 5] = [75, 80, 86, 89, 90];

#[test]
fn nvrtc_compiles_every_kernel() {
    let version = match loader::nvrtc_version() {
        Ok(version) => version,
        Err(reason) => {
            if std::env::var("DENSETRAIN_REQUIRE_NVRTC").is_ok_and(|v| v == "1") {
                panic!("DENSETRAIN_REQUIRE_NVRTC=1, but NVRTC does not load: {reason}");
            }
            eprintln!("nvrtc_compiles_every_kernel: skipped, NVRTC does not load: {reason}");
            return;
        }
    };
    eprintln!("NVRTC {}.{}", version.0, version.1);
    assert!(!KERNEL_FILES.is_empty());
    for file in KERNEL_FILES {
        for arch in ARCHS {
            let cubin = loader::compile_cubin(file, arch)
                .unwrap_or_else(|e| panic!("{}.cu for sm_{arch}: {e}", file.name));
            assert_eq!(
                &cubin[..4],
                b"\x7fELF",
                "{}.cu for sm_{arch}: not an ELF image",
                file.name
            );
            // Every kernel the backend looks up must be in the image's symbol table.
            let names = KERNEL_NAMES
                .iter()
                .find(|(name, _)| *name == file.name)
                .map_or(&[][..], |(_, kernels)| *kernels);
            for kernel in names {
                let found = cubin
                    .windows(kernel.len() + 1)
                    .any(|w| &w[..kernel.len()] == kernel.as_bytes() && w[kernel.len()] == 0);
                assert!(
                    found,
                    "{}.cu for sm_{arch}: kernel {kernel} is not in the CUBIN",
                    file.name
                );
            }
        }
    }
}

#[test]
fn nvrtc_reports_compile_errors() {
    if loader::nvrtc_version().is_err() {
        eprintln!("nvrtc_reports_compile_errors: skipped, NVRTC does not load");
        return;
    }
    let broken = loader::KernelFile {
        name: "broken",
        source: "extern \"C\" __global__ void k(float* y) { y[0] = undefined_name; }\n",
        fatbin: None,
    };
    let err = loader::compile_cubin(&broken, 90).unwrap_err();
    assert!(err.contains("compiling broken.cu failed"), "{err}");
    assert!(
        err.contains("undefined_name"),
        "the compiler log is missing: {err}"
    );
}
