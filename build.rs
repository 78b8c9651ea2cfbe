//! Embeds the CUDA kernels.
//!
//! The source of every `kernels/*.cu` file (and the headers it includes) is
//! always embedded, so the program can compile it at run time with NVRTC.
//! When an `nvcc` is found, each file is also compiled into a fatbin with
//! machine code for every architecture in the list plus PTX for the newest
//! one, and that fatbin is embedded too.
//!
//! Variables read:
//! - `NVCC`: path of the nvcc to use;
//! - `CUDA_HOME`, then `CUDA_PATH`: a toolkit whose `bin/nvcc` is used;
//! - `PATH`: searched for `nvcc` last;
//! - `DENSETRAIN_CUDA_ARCHS`: comma-separated compute capabilities to build
//!   machine code for, e.g. `80,90` (default `75,80,86,89,90`); PTX is
//!   embedded for the largest;
//! - `DENSETRAIN_SKIP_NVCC`: set to 1 to embed only the source.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_ARCHS: &str = "75,80,86,89,90";
const ENV_VARS: &[&str] = &[
    "NVCC",
    "CUDA_HOME",
    "CUDA_PATH",
    "PATH",
    "DENSETRAIN_CUDA_ARCHS",
    "DENSETRAIN_SKIP_NVCC",
];

fn main() {
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernel_dir = root.join("kernels");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", kernel_dir.display());
    for var in ENV_VARS {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let (sources, headers) = kernel_files(&kernel_dir);
    for path in sources.iter().chain(&headers) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    let archs = archs();
    let nvcc = if env::var("DENSETRAIN_SKIP_NVCC").is_ok_and(|v| v == "1") {
        None
    } else {
        find_nvcc()
    };
    let fatbins = match &nvcc {
        Some(nvcc) => Some(compile_all(nvcc, &sources, &archs, &out_dir)),
        None => {
            println!(
                "cargo:warning=nvcc not found (checked NVCC, CUDA_HOME, CUDA_PATH and PATH): \
                 the CUDA kernels are embedded as source only and are compiled with NVRTC \
                 on first use on a GPU"
            );
            None
        }
    };
    let nvcc_version = nvcc.as_deref().and_then(nvcc_release);
    write_manifest(
        &out_dir,
        &sources,
        &headers,
        fatbins.as_deref(),
        &archs,
        nvcc_version,
    );
}

/// Returns the `.cu` files and the `.cuh` headers of `dir`, each sorted by name.
fn kernel_files(dir: &Path) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut sources = Vec::new();
    let mut headers = Vec::new();
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read the kernel directory {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a readable directory entry").path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("cu") => sources.push(path),
            Some("cuh") => headers.push(path),
            _ => {}
        }
    }
    sources.sort();
    headers.sort();
    (sources, headers)
}

/// Parses `DENSETRAIN_CUDA_ARCHS` (or the default) into sorted compute capabilities.
fn archs() -> Vec<u32> {
    let text = env::var("DENSETRAIN_CUDA_ARCHS").unwrap_or_else(|_| DEFAULT_ARCHS.to_string());
    let mut archs: Vec<u32> = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_start_matches("sm_").parse().unwrap_or_else(|_| {
                panic!(
                    "invalid DENSETRAIN_CUDA_ARCHS entry '{s}': expected compute capabilities \
                     such as 75,80,90"
                )
            })
        })
        .collect();
    archs.sort_unstable();
    archs.dedup();
    assert!(
        !archs.is_empty(),
        "DENSETRAIN_CUDA_ARCHS is empty: list at least one compute capability, e.g. 90"
    );
    archs
}

/// Looks for nvcc in `NVCC`, `CUDA_HOME/bin`, `CUDA_PATH/bin`, then `PATH`.
fn find_nvcc() -> Option<PathBuf> {
    if let Some(path) = env::var_os("NVCC").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(path));
    }
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(home) = env::var_os(var).filter(|v| !v.is_empty()) {
            let candidate = PathBuf::from(home).join("bin").join("nvcc");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join("nvcc"))
        .find(|candidate| candidate.is_file())
}

/// Returns the release nvcc reports, e.g. `13.0, V13.0.88`.
fn nvcc_release(nvcc: &Path) -> Option<String> {
    let output = Command::new(nvcc).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.split_once("release "))
        .map(|(_, release)| release.trim().to_string())
}

/// Compiles every source into `out_dir/<name>.fatbin`, two files at a time.
fn compile_all(nvcc: &Path, sources: &[PathBuf], archs: &[u32], out_dir: &Path) -> Vec<PathBuf> {
    let outputs: Vec<PathBuf> = sources
        .iter()
        .map(|src| out_dir.join(format!("{}.fatbin", stem(src))))
        .collect();
    for (chunk_sources, chunk_outputs) in sources.chunks(2).zip(outputs.chunks(2)) {
        std::thread::scope(|scope| {
            for (src, out) in chunk_sources.iter().zip(chunk_outputs) {
                scope.spawn(move || compile(nvcc, src, archs, out));
            }
        });
    }
    outputs
}

/// Runs nvcc on one file; on failure, stops the build with nvcc's full output.
fn compile(nvcc: &Path, src: &Path, archs: &[u32], out: &Path) {
    let newest = archs[archs.len() - 1];
    let mut command = Command::new(nvcc);
    command.arg("--fatbin").args(NVCC_FLAGS).args(SHARED_FLAGS);
    for arch in archs {
        command.arg(format!("-gencode=arch=compute_{arch},code=sm_{arch}"));
    }
    command.arg(format!(
        "-gencode=arch=compute_{newest},code=compute_{newest}"
    ));
    command.arg("-o").arg(out).arg(src);
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", nvcc.display()));
    if !output.status.success() {
        panic!(
            "nvcc failed on {} ({}).\ncommand: {command:?}\n--- stdout ---\n{}\n--- stderr ---\n{}\n\
             Fix the kernel, point NVCC at another nvcc, or set DENSETRAIN_SKIP_NVCC=1 to \
             embed only the source.",
            src.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Flags shared by nvcc here and by NVRTC at run time: no fused multiply-adds,
/// so each f32 operation rounds as on the CPU.
const SHARED_FLAGS: &[&str] = &["--fmad=false"];
/// Flags for nvcc only.
const NVCC_FLAGS: &[&str] = &["-O3", "-Werror=all-warnings"];

fn stem(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .expect("kernel file names are UTF-8")
        .to_string()
}

/// Writes `kernels.rs`, which `src/backend/cuda/loader.rs` includes.
fn write_manifest(
    out_dir: &Path,
    sources: &[PathBuf],
    headers: &[PathBuf],
    fatbins: Option<&[PathBuf]>,
    archs: &[u32],
    nvcc_version: Option<String>,
) {
    let mut text = String::from("// Generated by build.rs.\n\n");
    text.push_str("pub const KERNEL_FILES: &[KernelFile] = &[\n");
    for (i, src) in sources.iter().enumerate() {
        let fatbin = match fatbins {
            Some(paths) => format!("Some(include_bytes!({:?}))", paths[i].display().to_string()),
            None => "None".to_string(),
        };
        writeln!(
            text,
            "    KernelFile {{ name: {:?}, source: include_str!({:?}), fatbin: {fatbin} }},",
            stem(src),
            src.display().to_string()
        )
        .expect("writing to a String");
    }
    text.push_str("];\n\n");
    text.push_str("pub const KERNEL_HEADERS: &[(&str, &str)] = &[\n");
    for header in headers {
        let name = header
            .file_name()
            .and_then(|n| n.to_str())
            .expect("header names are UTF-8");
        writeln!(
            text,
            "    ({name:?}, include_str!({:?})),",
            header.display().to_string()
        )
        .expect("writing to a String");
    }
    text.push_str("];\n\n");
    let built_archs: Vec<String> = match fatbins {
        Some(_) => archs.iter().map(u32::to_string).collect(),
        None => Vec::new(),
    };
    writeln!(
        text,
        "pub const FATBIN_ARCHS: &[u32] = &[{}];",
        built_archs.join(", ")
    )
    .expect("writing to a String");
    writeln!(
        text,
        "pub const NVCC_RELEASE: Option<&str> = {nvcc_version:?};"
    )
    .expect("writing to a String");
    writeln!(
        text,
        "pub const COMPILE_FLAGS: &[&str] = &{SHARED_FLAGS:?};"
    )
    .expect("writing to a String");
    fs::write(out_dir.join("kernels.rs"), text).expect("cannot write kernels.rs into OUT_DIR");
}
