//! What a user sees without a working GPU: `info`, `--device auto`,
//! `--device cuda`, half precisions on the CPU, and stand-in driver libraries
//! (no GPU, a missing symbol, a GPU without cuBLAS). None of it may panic.
//!
//! The checks that need a machine without a GPU skip, with a printed reason,
//! where a GPU works.

mod gpu_common;

use densetrain::backend::cuda::probe;
use gpu_common::run_binary;
use std::path::Path;
use std::process::{Command, Output};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Returns whether the driver reports a GPU, in which case the no-GPU checks skip.
fn machine_has_gpu(test: &str) -> bool {
    let driver = probe::probe_driver();
    if driver.devices.is_empty() {
        return false;
    }
    eprintln!(
        "{test}: skipped, this machine has a GPU ({})",
        driver.devices[0].name
    );
    true
}

fn assert_no_panic(output: &Output) {
    let stderr = text(&output.stderr);
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
}

/// Asserts exit status 2 with `needle` in the error.
fn assert_error(output: &Output, needle: &str) {
    assert_no_panic(output);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains(needle), "expected '{needle}' in:\n{stderr}");
}

fn train_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "-v", "train", "--data", "digits", "--layers", "8", "--epochs", "1", "--out", out,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn info_without_gpu_exits_zero() {
    if machine_has_gpu("info_without_gpu_exits_zero") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let output = run_binary(tmp.path(), &["info"]);
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    for needle in [
        "CUDA libraries:",
        "cuBLAS",
        "NVRTC",
        "Kernels:",
        "No GPU can be used:",
    ] {
        assert!(stdout.contains(needle), "expected '{needle}' in:\n{stdout}");
    }
}

#[test]
fn auto_device_falls_back_with_reason() {
    if machine_has_gpu("auto_device_falls_back_with_reason") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let output = run_binary(tmp.path(), &train_args(out.to_str().unwrap(), &[]));
    assert_no_panic(&output);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("--device auto"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line about --device auto in:\n{stderr}"
    );
    assert!(lines[0].contains("using the CPU, because"), "{}", lines[0]);
    assert!(
        text(&output.stdout).contains("cpu ("),
        "{}",
        text(&output.stdout)
    );
}

#[test]
fn cuda_device_without_gpu_is_error() {
    if machine_has_gpu("cuda_device_without_gpu_is_error") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for device in ["cuda", "cuda:0", "cuda:3"] {
        let output = run_binary(
            tmp.path(),
            &train_args(out.to_str().unwrap(), &["--device", device]),
        );
        assert_error(
            &output,
            &format!("--device {device}: the GPU cannot be used"),
        );
        assert_error(&output, "no usable GPU");
        assert!(
            !out.exists(),
            "a failed run must not create its run directory"
        );
    }
}

#[test]
fn half_precision_needs_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for precision in ["bf16", "f16"] {
        let output = run_binary(
            tmp.path(),
            &train_args(
                out.to_str().unwrap(),
                &["--device", "cpu", "--precision", precision],
            ),
        );
        assert_error(&output, &format!("--precision {precision} needs a GPU"));
        assert_error(&output, "--device cpu was given");
    }
    if machine_has_gpu("half_precision_needs_gpu (after fallback)") {
        return;
    }
    let output = run_binary(
        tmp.path(),
        &train_args(out.to_str().unwrap(), &["--precision", "bf16"]),
    );
    assert_error(
        &output,
        "--precision bf16 needs a GPU, but this run would use the CPU",
    );
}

#[test]
fn invalid_device_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for device in ["gpu", "cuda:x", "cuda:-1"] {
        let output = run_binary(
            tmp.path(),
            &train_args(out.to_str().unwrap(), &["--device", device]),
        );
        assert_error(&output, &format!("invalid --device '{device}'"));
    }
}

/// Stand-in driver libraries: C sources for `libcuda.so.1`.
const NO_DEVICE: &str = r#"
int cuDriverGetVersion(int *version) { *version = 12080; return 0; }
int cuInit(unsigned flags) { (void)flags; return 100; /* CUDA_ERROR_NO_DEVICE */ }
"#;

const MISSING_INIT: &str = r#"
int cuDriverGetVersion(int *version) { *version = 11020; return 0; }
"#;

const ONE_DEVICE: &str = r#"
#include <string.h>
int cuDriverGetVersion(int *version) { *version = 13000; return 0; }
int cuInit(unsigned flags) { (void)flags; return 0; }
int cuDeviceGetCount(int *count) { *count = 1; return 0; }
int cuDeviceGet(int *device, int ordinal) { *device = ordinal; return ordinal == 0 ? 0 : 101; }
int cuDeviceGetName(char *name, int len, int device) {
    (void)device; strncpy(name, "Stand-in GPU", (size_t)len); return 0;
}
int cuDeviceGetAttribute(int *value, int attribute, int device) {
    (void)device;
    *value = attribute == 75 ? 9 : 0; /* compute capability 9.0 */
    return 0;
}
int cuDeviceTotalMem_v2(unsigned long *bytes, int device) {
    (void)device; *bytes = 1ul << 30; return 0;
}
"#;

/// Builds a stand-in `libcuda.so.1` in `dir`, or returns why it cannot.
fn build_driver(dir: &Path, source: &str) -> Result<(), String> {
    let c_file = dir.join("cuda_stub.c");
    std::fs::write(&c_file, source).map_err(|e| e.to_string())?;
    let library = dir.join("libcuda.so.1");
    let output = Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&library)
        .arg(&c_file)
        .output()
        .map_err(|e| format!("no C compiler (cc) to build a stand-in driver: {e}"))?;
    if !output.status.success() {
        return Err(format!("cc failed: {}", text(&output.stderr)));
    }
    std::fs::copy(&library, dir.join("libcuda.so")).map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs the binary with only the stand-in driver on the library path.
fn run_with_driver(source: &str, args: &[&str], test: &str) -> Option<Output> {
    if machine_has_gpu(test) {
        return None;
    }
    let tmp = tempfile::tempdir().unwrap();
    if let Err(reason) = build_driver(tmp.path(), source) {
        eprintln!("{test}: skipped, {reason}");
        return None;
    }
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{tmp}", tmp.path().to_str().unwrap()))
        .collect();
    let output = Command::new(gpu_common::binary())
        .current_dir(tmp.path())
        .args(&args)
        .env("LD_LIBRARY_PATH", tmp.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("the densetrain binary should start");
    Some(output)
}

#[test]
fn driver_without_gpu_reported() {
    let Some(output) = run_with_driver(NO_DEVICE, &["info"], "driver_without_gpu_reported") else {
        return;
    };
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Driver: supports CUDA 12.8"), "{stdout}");
    assert!(
        stdout.contains("found no GPU (CUDA_ERROR_NO_DEVICE)"),
        "{stdout}"
    );

    let Some(output) = run_with_driver(
        NO_DEVICE,
        &[
            "train",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--device",
            "cuda",
            "--out",
            "{tmp}/run",
        ],
        "driver_without_gpu_reported (train)",
    ) else {
        return;
    };
    assert_error(&output, "found no GPU (CUDA_ERROR_NO_DEVICE)");
}

#[test]
fn driver_missing_symbol_reported() {
    let Some(output) = run_with_driver(MISSING_INIT, &["info"], "driver_missing_symbol_reported")
    else {
        return;
    };
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert!(stdout.contains("could not be initialised"), "{stdout}");
    assert!(stdout.contains("cuInit"), "{stdout}");

    let Some(output) = run_with_driver(
        MISSING_INIT,
        &[
            "-v",
            "train",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--layers",
            "8",
            "--out",
            "{tmp}/run",
        ],
        "driver_missing_symbol_reported (train)",
    ) else {
        return;
    };
    assert_no_panic(&output);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("using the CPU, because"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn gpu_without_cublas_reported() {
    let Some(output) = run_with_driver(ONE_DEVICE, &["info"], "gpu_without_cublas_reported") else {
        return;
    };
    assert_no_panic(&output);
    assert_eq!(output.status.code(), Some(0));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("cuda:0  Stand-in GPU  compute capability 9.0"),
        "{stdout}"
    );
    assert!(stdout.contains("not usable: cuBLAS is missing"), "{stdout}");

    let Some(output) = run_with_driver(
        ONE_DEVICE,
        &[
            "train",
            "--data",
            "digits",
            "--epochs",
            "1",
            "--device",
            "cuda:1",
            "--out",
            "{tmp}/run",
        ],
        "gpu_without_cublas_reported (train)",
    ) else {
        return;
    };
    assert_error(&output, "GPU 1 does not exist: the driver reports 1 GPU(s)");
}
