//! The benchmark scripts reject bad arguments before building or installing anything.

use std::process::Command;

/// Runs `benches/SCRIPT` with `args` and returns its exit code and standard error.
fn run_script(script: &str, args: &[&str]) -> (Option<i32>, String) {
    let output = Command::new("bash")
        .arg(format!("benches/{script}"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("failed to start bash");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bench_scripts_reject_bad_arguments() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let too_many = (cores + 1).to_string();
    let cases: &[(&str, &[&str], &str)] = &[
        ("epoch_bench.sh", &["x"], "THREADS must be between 1 and"),
        ("epoch_bench.sh", &["0"], "THREADS must be between 1 and"),
        (
            "epoch_bench.sh",
            &[&too_many],
            "THREADS must be between 1 and",
        ),
        (
            "epoch_bench.sh",
            &["1", "0"],
            "EPOCHS must be a whole number of at least 1, got 0",
        ),
        (
            "epoch_bench.sh",
            &["1", "2.5"],
            "EPOCHS must be a whole number of at least 1, got 2.5",
        ),
        (
            "epoch_bench.sh",
            &["1", "2", "x"],
            "expected at most 2 arguments (THREADS EPOCHS), got 3",
        ),
        (
            "cpu_compare.sh",
            &["abc"],
            "EPOCHS must be a whole number of at least 1, got abc",
        ),
        (
            "cpu_compare.sh",
            &["3", "-1"],
            "WIDE_EPOCHS must be a whole number of at least 1, got -1",
        ),
        (
            "cpu_compare.sh",
            &["3", "2", "x"],
            "expected at most 2 arguments (EPOCHS WIDE_EPOCHS)",
        ),
        (
            "interleaved_compare.sh",
            &["1", "bogus"],
            "TASK must be small or wide, got bogus",
        ),
        (
            "interleaved_compare.sh",
            &["1", "small", "0"],
            "ROUNDS must be a whole number of at least 1, got 0",
        ),
        (
            "interleaved_compare.sh",
            &["1", "wide", "2", "1"],
            "EPOCHS must be a whole number of at least 2",
        ),
        (
            "interleaved_compare.sh",
            &["1", "small", "1", "2", "x"],
            "expected at most 4 arguments",
        ),
    ];
    for (script, args, expected) in cases {
        let (code, stderr) = run_script(script, args);
        assert_eq!(code, Some(2), "{script} {args:?}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{script} {args:?}: expected '{expected}' in: {stderr}"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "{script} {args:?}: one error line, got: {stderr}"
        );
    }
}
