//! End-to-end runs of `lr-find`, `sweep`, `cv`, `train --lr auto` and the
//! plots and diagnostics of `train`, as a user types them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `densetrain COMMAND --out <tmp>/run ARGS` and returns (output, run dir, tmp).
fn run(command: &str, args: &[&str]) -> (Output, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let output = Command::new(env!("CARGO_BIN_EXE_densetrain"))
        .current_dir(tmp.path())
        .arg(command)
        .arg("--out")
        .arg(&out)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the densetrain binary should start");
    (output, out, tmp)
}

fn assert_ok(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// Asserts a clean error: exit status 2, the message on stderr, no panic.
fn assert_error(output: &Output, needle: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    assert!(stderr.contains(needle), "expected '{needle}' in:\n{stderr}");
}

/// Asserts that `dir` contains a PNG and an SVG named `stem`.
fn assert_plots(dir: &Path, stem: &str) {
    let png = fs::read(dir.join(format!("{stem}.png"))).unwrap();
    assert_eq!(&png[1..4], b"PNG", "{stem}.png is not a PNG");
    let svg = fs::read_to_string(dir.join(format!("{stem}.svg"))).unwrap();
    assert!(svg.contains("<svg"), "{stem}.svg is not an SVG");
}

#[test]
fn lr_find_writes_table_and_plot_only() {
    let (output, dir, _tmp) = run(
        "lr-find",
        &[
            "--seed",
            "1",
            "--layers",
            "32",
            "--steps",
            "60",
            "--start-lr",
            "1e-5",
        ],
    );
    assert_ok(&output);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Learning-rate range test: sgd"), "{stdout}");
    assert!(stdout.contains("valley"), "{stdout}");
    assert!(stdout.contains("steepest"), "{stdout}");
    assert!(stdout.contains("minimum/10"), "{stdout}");
    let csv = fs::read_to_string(dir.join("lr_find.csv")).unwrap();
    assert!(csv.starts_with("step,learning_rate,loss,smoothed_loss\n"));
    assert_plots(&dir, "lr_find");
    assert!(!dir.join("model.safetensors").exists());
    assert!(!dir.join("model.json").exists());
}

#[test]
fn lr_find_rejects_bad_ranges() {
    let (output, _, _tmp) = run("lr-find", &["--start-lr", "0"]);
    assert_error(&output, "invalid --start-lr 0");
    let (output, _, _tmp) = run("lr-find", &["--start-lr", "1", "--end-lr", "0.1"]);
    assert_error(&output, "invalid --end-lr 0.1");
    let (output, _, _tmp) = run("lr-find", &["--steps", "2"]);
    assert_error(&output, "invalid --steps 2");
    let (output, _, _tmp) = run("lr-find", &["--lr", "0.1"]);
    assert_error(&output, "--lr does not apply to lr-find");
}

#[test]
fn option_errors_come_before_data_loading() {
    // The data file has a ragged row, so its load error would be reported
    // if the options were checked after loading.
    let ragged = data("cases/csv-layout/ragged.csv");
    let cases: [(&str, &[&str], &str); 8] = [
        ("lr-find", &["--steps", "2"], "invalid --steps 2"),
        ("lr-find", &["--end-lr", "-1"], "invalid --end-lr -1"),
        (
            "lr-find",
            &["--steps", "10000000000"],
            "invalid --steps 10000000000",
        ),
        ("cv", &["--folds", "1"], "invalid --folds 1"),
        ("cv", &["--epochs", "0"], "at least 1, got '0'"),
        ("sweep", &["--batch-size", "0"], "at least 1, got '0'"),
        ("lr-find", &["--steps", "-1"], "'--steps <STEPS>'"),
        ("cv", &["--folds", "-1"], "'--folds <FOLDS>'"),
    ];
    for (command, args, expected) in cases {
        let mut all = vec!["--data", ragged.as_str()];
        all.extend_from_slice(args);
        let (output, out, _tmp) = run(command, &all);
        assert_error(&output, expected);
        assert!(!out.exists(), "{command} created its run directory");
    }
}

/// Reads the rate `train --lr auto` printed.
fn auto_rate(stdout: &str) -> String {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("--lr auto: training with learning rate "))
        .unwrap_or_else(|| panic!("no --lr auto line in:\n{stdout}"));
    line.trim_start_matches("--lr auto: training with learning rate ")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn lr_auto_equals_explicit_rate() {
    let common = [
        "--data",
        &data("wine.csv"),
        "--split",
        "stratified",
        "--layers",
        "16",
        "--epochs",
        "5",
        "--seed",
        "4",
        "--verbose",
        "0",
    ]
    .map(str::to_string);
    let mut auto_args: Vec<&str> = common.iter().map(String::as_str).collect();
    auto_args.extend(["--lr", "auto"]);
    let (auto, auto_dir, _tmp1) = run("train", &auto_args);
    assert_ok(&auto);
    let rate = auto_rate(&text(&auto.stdout));
    assert!(rate.parse::<f32>().unwrap() > 0.0);
    assert!(auto_dir.join("lr_find.csv").is_file());
    assert_plots(&auto_dir, "lr_find");

    let mut fixed_args: Vec<&str> = common.iter().map(String::as_str).collect();
    fixed_args.extend(["--lr", &rate]);
    let (fixed, fixed_dir, _tmp2) = run("train", &fixed_args);
    assert_ok(&fixed);
    let h_auto = fs::read_to_string(auto_dir.join("history.csv")).unwrap();
    let h_fixed = fs::read_to_string(fixed_dir.join("history.csv")).unwrap();
    assert_eq!(h_auto, h_fixed);
    let w_auto = fs::read(auto_dir.join("model.safetensors")).unwrap();
    let w_fixed = fs::read(fixed_dir.join("model.safetensors")).unwrap();
    assert_eq!(w_auto, w_fixed);
}

#[test]
fn quiet_train_writes_curves_and_diagnostics() {
    let (output, dir, _tmp) = run(
        "train",
        &[
            "--seed",
            "1",
            "--epochs",
            "3",
            "--patience",
            "1",
            "--verbose",
            "0",
        ],
    );
    assert_ok(&output);
    assert_plots(&dir, "curves");
    let history = fs::read_to_string(dir.join("history.csv")).unwrap();
    let header = history.lines().next().unwrap();
    assert_eq!(
        header,
        "epoch,loss,accuracy,val_loss,val_accuracy,learning_rate,dead_share_1,dead_share_2,\
         grad_rms_1,grad_rms_2,grad_rms_3"
    );
    for line in history.lines().skip(1) {
        assert_eq!(line.split(',').count(), 11, "{line}");
    }
    let svg = fs::read_to_string(dir.join("curves.svg")).unwrap();
    assert!(svg.contains("best epoch"), "the best epoch is not marked");
}

#[test]
fn train_summary_lists_diagnostics() {
    let (output, dir, _tmp) = run("train", &["--seed", "1", "--epochs", "2", "--verbose", "2"]);
    assert_ok(&output);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Diagnostics:"), "{stdout}");
    assert!(stdout.contains("dead units"), "{stdout}");
    assert!(stdout.contains("weight-gradient RMS"), "{stdout}");
    assert_plots(&dir, "curves");
}

#[test]
fn no_diagnostics_keeps_keras_columns() {
    let (output, dir, _tmp) = run(
        "train",
        &[
            "--seed",
            "1",
            "--epochs",
            "1",
            "--verbose",
            "0",
            "--no-diagnostics",
        ],
    );
    assert_ok(&output);
    let history = fs::read_to_string(dir.join("history.csv")).unwrap();
    assert!(history.starts_with("epoch,loss,accuracy,val_loss,val_accuracy,learning_rate\n"));
}

#[test]
fn deep_sigmoid_train_warns_vanishing() {
    let (output, _, _tmp) = run(
        "train",
        &[
            "--seed",
            "1",
            "--epochs",
            "2",
            "--layers",
            "32,32,32,32,32,32,32,32",
            "--activation",
            "sigmoid",
            "--optimizer",
            "sgd",
            "--verbose",
            "0",
        ],
    );
    assert_ok(&output);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("vanishing gradients"), "{stderr}");
    assert!(stderr.contains("--activation relu"), "{stderr}");
}

#[test]
fn sweep_compares_layers_and_activations() {
    let (output, dir, _tmp) = run(
        "sweep",
        &[
            "--seed",
            "1",
            "--layers",
            "4",
            "--layers",
            "32,16",
            "--activation",
            "relu,tanh",
            "--epochs",
            "4",
            "--split",
            "stratified",
        ],
    );
    assert_ok(&output);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Sweep: 4 models"), "{stdout}");
    for label in [
        "4 relu adam",
        "4 tanh adam",
        "32,16 relu adam",
        "32,16 tanh adam",
    ] {
        assert!(stdout.contains(label), "missing {label}:\n{stdout}");
    }
    assert!(stdout.contains("verdict"), "{stdout}");
    let csv = fs::read_to_string(dir.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.lines().next().unwrap().contains("best_val_accuracy"));
    assert_plots(&dir, "sweep");
}

#[test]
fn sweep_grid_and_optimizer_list() {
    let (output, dir, _tmp) = run(
        "sweep",
        &[
            "--data",
            &data("iris.csv"),
            "--split",
            "stratified",
            "--seed",
            "2",
            "--widths",
            "4,8",
            "--depths",
            "1,2",
            "--optimizer",
            "adam,sgd",
            "--epochs",
            "2",
            "--verbose",
            "0",
        ],
    );
    assert_ok(&output);
    let csv = fs::read_to_string(dir.join("sweep.csv")).unwrap();
    // 2 widths x 2 depths x 2 optimizers.
    assert_eq!(csv.lines().count(), 9, "{csv}");
    assert!(csv.contains("\"8,8\""), "{csv}");
    assert!(csv.contains(",sgd,0.01,"), "{csv}");
}

#[test]
fn sweep_needs_validation() {
    let (output, _, _tmp) = run("sweep", &["--validation-split", "0", "--layers", "4"]);
    assert_error(&output, "sweep compares validation losses");
}

#[test]
fn cv_on_iris_reports_each_fold() {
    let (output, dir, _tmp) = run(
        "cv",
        &[
            "--data",
            &data("iris.csv"),
            "--folds",
            "3",
            "--layers",
            "16",
            "--epochs",
            "40",
            "--batch-size",
            "16",
            "--patience",
            "5",
            "--lr",
            "0.01",
            "--seed",
            "1",
        ],
    );
    assert_ok(&output);
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("3 stratified folds of 150 rows"),
        "{stdout}"
    );
    assert!(stdout.contains("held-out accuracy: "), "{stdout}");
    assert!(stdout.contains("±"), "{stdout}");
    assert!(stdout.contains("Time: "), "{stdout}");
    let csv = fs::read_to_string(dir.join("cv.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let held_out: usize = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(held_out, 150);
    assert_plots(&dir, "cv");
    assert!(!dir.join("model.safetensors").exists());
}

#[test]
fn cv_regression_uses_plain_folds() {
    let (output, dir, _tmp) = run(
        "cv",
        &[
            "--data",
            &data("diabetes.csv"),
            "--folds",
            "4",
            "--layers",
            "8",
            "--epochs",
            "3",
            "--seed",
            "1",
            "--no-shuffle",
        ],
    );
    assert_ok(&output);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("4 plain folds of 442 rows"), "{stdout}");
    assert!(stdout.contains("held-out mae: "), "{stdout}");
    let csv = fs::read_to_string(dir.join("cv.csv")).unwrap();
    let sizes: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap())
        .collect();
    assert_eq!(sizes, ["111", "111", "110", "110"]);
}

#[test]
fn cv_rejects_bad_fold_counts() {
    let (output, _, _tmp) = run("cv", &["--folds", "1"]);
    assert_error(&output, "invalid --folds 1");
    let (output, _, _tmp) = run("cv", &["--data", &data("iris.csv"), "--folds", "151"]);
    assert_error(&output, "only 150 rows");

    let tmp = tempfile::tempdir().unwrap();
    let small = tmp.path().join("small.csv");
    let mut csv = String::from("x,label\n");
    for i in 0..10 {
        csv.push_str(&format!("{i},common\n"));
    }
    csv.push_str("10,rare\n11,rare\n");
    fs::write(&small, csv).unwrap();
    let (output, dir, _tmp) = run("cv", &["--data", small.to_str().unwrap(), "--folds", "3"]);
    assert_error(&output, "rare (2)");
    assert!(!dir.exists(), "a failed run must not leave a run directory");
}
