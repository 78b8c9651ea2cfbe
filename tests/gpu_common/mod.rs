//! Helpers of the GPU parity tests: opening a GPU or skipping, and
//! comparisons against the CPU backend.
//!
//! Without a usable GPU every GPU test prints why it skipped and passes,
//! unless `DENSETRAIN_REQUIRE_GPU=1` is set (as `benches/gpu-check.sh` does),
//! in which case it fails with the reason.

#![allow(dead_code)]

use densetrain::backend::Backend;
use densetrain::backend::cpu::Cpu;
use densetrain::backend::cuda::loader::KernelLoading;
use densetrain::backend::cuda::{Cuda, CudaOptions, Precision};

/// f32 unit roundoff, 2^-24.
pub const UNIT_ROUNDOFF: f64 = 1.0 / 16_777_216.0;

/// Opens GPU 0 with `precision`, or prints why the test is skipped and returns `None`.
pub fn gpu_with(test: &str, precision: Precision, loading: KernelLoading) -> Option<Cuda> {
    let options = CudaOptions {
        ordinal: 0,
        precision,
        allow_tf32: false,
        kernel_loading: loading,
    };
    match Cuda::open(options) {
        Ok(cuda) => {
            eprintln!("{test}: running on {}", cuda.description());
            Some(cuda)
        }
        Err(err) => {
            if std::env::var("DENSETRAIN_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("{test}: DENSETRAIN_REQUIRE_GPU=1, but no GPU is usable: {err:#}");
            }
            eprintln!("{test}: skipped, {err:#}");
            None
        }
    }
}

/// Opens GPU 0 in f32 with the default kernel loading, or skips.
pub fn gpu(test: &str) -> Option<Cuda> {
    gpu_with(test, Precision::F32, KernelLoading::Auto)
}

/// Creates a single-threaded CPU backend, the reference.
pub fn cpu() -> Cpu {
    Cpu::new(1).expect("the CPU backend starts")
}

/// Uploads `len` NaNs, so any element a kernel fails to write shows up.
pub fn poisoned(gpu: &Cuda, len: usize) -> <Cuda as Backend>::Buf {
    gpu.upload(&vec![f32::NAN; len]).expect("upload")
}

/// Distance in units in the last place between two finite f32 values.
pub fn ulp_distance(a: f32, b: f32) -> u64 {
    if a == b {
        return 0;
    }
    if !a.is_finite() || !b.is_finite() {
        return u64::MAX;
    }
    let key = |v: f32| {
        let bits = v.to_bits() as i64;
        if bits < 0 { i64::MIN - bits } else { bits }
    };
    key(a).abs_diff(key(b))
}

/// Asserts that each GPU value is within `max_ulp` units in the last place of the CPU's.
#[track_caller]
pub fn assert_ulps(what: &str, gpu: &[f32], cpu: &[f32], max_ulp: u64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    for (j, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let same_nan = g.is_nan() && c.is_nan();
        assert!(
            same_nan || ulp_distance(g, c) <= max_ulp,
            "{what}[{j}]: GPU {g:e}, CPU {c:e} ({} ulp apart, at most {max_ulp} allowed)",
            ulp_distance(g, c)
        );
    }
}

/// Asserts bit-for-bit equality.
#[track_caller]
pub fn assert_same(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_ulps(what, gpu, cpu, 0);
}

/// Asserts `|gpu - cpu| <= 2 * (k + 2) * u * bound + 1e-30` per element, where
/// `bound[j]` is the sum of absolute products behind element `j` and `u` the
/// f32 unit roundoff.
///
/// The standard forward error bound of a k-term f32 dot product, in any
/// summation order and with or without fused multiply-adds, is about
/// `k * u * bound`, so two such results differ by at most about twice that.
/// TF32 or bf16 inputs (10 or 7 fraction bits) exceed it.
#[track_caller]
pub fn assert_within_sum_bound(what: &str, gpu: &[f32], cpu: &[f32], bound: &[f64], k: usize) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    for (j, ((&g, &c), &b)) in gpu.iter().zip(cpu).zip(bound).enumerate() {
        let allowed = 2.0 * (k as f64 + 2.0) * UNIT_ROUNDOFF * b + 1e-30;
        let diff = (f64::from(g) - f64::from(c)).abs();
        assert!(
            diff <= allowed,
            "{what}[{j}]: GPU {g:e}, CPU {c:e}, difference {diff:e} above {allowed:e}"
        );
    }
}

/// Asserts `|gpu - cpu| <= rel * max(|cpu|, floor)` per element.
#[track_caller]
pub fn assert_relative(what: &str, gpu: &[f32], cpu: &[f32], rel: f64, floor: f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    for (j, (&g, &c)) in gpu.iter().zip(cpu).enumerate() {
        let diff = (f64::from(g) - f64::from(c)).abs();
        let allowed = rel * f64::from(c).abs().max(floor);
        assert!(
            diff <= allowed,
            "{what}[{j}]: GPU {g:e}, CPU {c:e}, difference {diff:e} above {allowed:e}"
        );
    }
}

/// Sums of absolute products behind `a[m, k] · b[k, n]` (row-major, as stored after transposes).
pub fn abs_product_bound(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for r in 0..m {
        for c in 0..n {
            out[r * n + c] = (0..k)
                .map(|j| (f64::from(a[r * k + j]) * f64::from(b[j * n + c])).abs())
                .sum();
        }
    }
    out
}

/// Returns the transpose of a row-major `[rows, cols]` matrix.
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// Path of a file under `tests/data/`: below `DENSETRAIN_TEST_DATA` when set
/// (test executables copied to a GPU machine), else in this checkout.
pub fn test_data(relative: &str) -> std::path::PathBuf {
    let root = std::env::var_os("DENSETRAIN_TEST_DATA").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data"),
        std::path::PathBuf::from,
    );
    root.join(relative)
}

/// Returns the densetrain binary: `DENSETRAIN_BIN` when set, else the one cargo built.
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("DENSETRAIN_BIN").map_or_else(
        || env!("CARGO_BIN_EXE_densetrain").into(),
        std::path::PathBuf::from,
    )
}

/// Runs the binary with `args` in `cwd`, with logging at its defaults.
pub fn run_binary(cwd: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(binary())
        .current_dir(cwd)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the densetrain binary should start")
}

/// Asserts that a run succeeded, showing its output otherwise.
#[track_caller]
pub fn assert_success(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads one column of a run's `history.csv`.
pub fn history_column(run_dir: &std::path::Path, column: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(run_dir.join("history.csv")).expect("history.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    let index = header
        .iter()
        .position(|h| *h == column)
        .unwrap_or_else(|| panic!("no column {column} in {header:?}"));
    lines
        .map(|line| {
            line.split(',')
                .nth(index)
                .expect("a cell")
                .parse()
                .expect("a number")
        })
        .collect()
}
