//! End-to-end runs of `densetrain train` as a user types them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn case(dir: &str, name: &str) -> PathBuf {
    data("cases").join(dir).join(name)
}

/// Runs the binary in `cwd` with `args`.
fn run_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_densetrain"))
        .current_dir(cwd)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the densetrain binary should start")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `train` with `args` into a fresh directory and returns (output, run dir).
fn train(args: &[&str]) -> (Output, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut full = vec!["train", "--out", out.to_str().unwrap()];
    full.extend_from_slice(args);
    let output = run_in(tmp.path(), &full);
    (output, tmp)
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

/// Reads history.csv into (header, rows).
fn history(run: &Path) -> (Vec<String>, Vec<Vec<f64>>) {
    let csv = fs::read_to_string(run.join("history.csv")).unwrap();
    let mut lines = csv.lines();
    let header = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_string)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(|v| v.parse::<f64>().unwrap()).collect())
        .collect();
    (header, rows)
}

fn column(header: &[String], rows: &[Vec<f64>], name: &str) -> Vec<f64> {
    let i = header.iter().position(|h| h == name).unwrap();
    rows.iter().map(|r| r[i]).collect()
}

#[test]
fn digits_shuffled_split_reaches_95_percent() {
    let (output, tmp) = train(&["--seed", "1", "--split", "shuffled", "--verbose", "0"]);
    assert_ok(&output);
    let (header, rows) = history(&tmp.path().join("run"));
    let best = column(&header, &rows, "val_accuracy")
        .into_iter()
        .fold(0.0, f64::max);
    assert!(best >= 0.95, "best val_accuracy {best}");
}

/// The default tail split validates on the file's last 360 digits, written by
/// other people than most training rows, so its floor is lower.
#[test]
fn digits_default_run_writes_everything() {
    let (output, tmp) = train(&["--seed", "1", "--verbose", "2"]);
    assert_ok(&output);
    let run = tmp.path().join("run");
    let (header, rows) = history(&run);
    // The Keras columns come first, and the diagnostics columns follow them.
    assert_eq!(
        header[..6],
        [
            "epoch",
            "loss",
            "accuracy",
            "val_loss",
            "val_accuracy",
            "learning_rate"
        ]
    );
    assert_eq!(
        header[6..],
        [
            "dead_share_1",
            "dead_share_2",
            "grad_rms_1",
            "grad_rms_2",
            "grad_rms_3"
        ]
    );
    assert_eq!(rows.len(), 10);
    let best = column(&header, &rows, "val_accuracy")
        .into_iter()
        .fold(0.0, f64::max);
    assert!(best >= 0.85, "best val_accuracy {best}");
    assert!(run.join("model.safetensors").is_file());
    assert!(run.join("model.json").is_file());
    let stdout = text(&output.stdout);
    assert!(stdout.contains("total parameters: 17,226"), "{stdout}");
    assert!(stdout.contains("Saved weights: epoch"), "{stdout}");
}

#[test]
fn same_seed_gives_identical_history() {
    let args = [
        "--data",
        data("wine.csv").to_str().unwrap().to_owned().leak(),
        "--split",
        "shuffled",
        "--dropout",
        "0.2",
        "--epochs",
        "4",
        "--seed",
        "7",
        "--verbose",
        "0",
    ];
    let (first, tmp1) = train(&args);
    let (second, tmp2) = train(&args);
    assert_ok(&first);
    assert_ok(&second);
    let h1 = fs::read(tmp1.path().join("run/history.csv")).unwrap();
    let h2 = fs::read(tmp2.path().join("run/history.csv")).unwrap();
    assert_eq!(h1, h2);
    let w1 = fs::read(tmp1.path().join("run/model.safetensors")).unwrap();
    let w2 = fs::read(tmp2.path().join("run/model.safetensors")).unwrap();
    assert_eq!(w1, w2);
}

#[test]
fn iris_stratified_reaches_90_percent() {
    let iris = data("iris.csv");
    let (output, tmp) = train(&[
        "--data",
        iris.to_str().unwrap(),
        "--split",
        "stratified",
        "--epochs",
        "60",
        "--batch-size",
        "16",
        "--seed",
        "3",
        "--verbose",
        "0",
    ]);
    assert_ok(&output);
    let (header, rows) = history(&tmp.path().join("run"));
    let last = *column(&header, &rows, "val_accuracy").last().unwrap();
    assert!(last >= 0.9, "final val_accuracy {last}");
}

/// Mean squared error of predicting the training part's mean on the validation
/// part, with the default tail split of 20%.
fn diabetes_mean_baseline() -> f64 {
    let csv = fs::read_to_string(data("diabetes.csv")).unwrap();
    let y: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.rsplit(',').next().unwrap().parse().unwrap())
        .collect();
    let n_train = (y.len() as f64 * 0.8).floor() as usize;
    let mean = y[..n_train].iter().sum::<f64>() / n_train as f64;
    let val = &y[n_train..];
    val.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / val.len() as f64
}

#[test]
fn diabetes_regression_beats_the_mean() {
    let diabetes = data("diabetes.csv");
    let (output, tmp) = train(&[
        "--data",
        diabetes.to_str().unwrap(),
        "--target",
        "progression",
        "--layers",
        "32,16",
        "--epochs",
        "40",
        "--seed",
        "2",
        "--verbose",
        "2",
    ]);
    assert_ok(&output);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("regression"), "{stdout}");
    let (header, rows) = history(&tmp.path().join("run"));
    assert_eq!(
        header[..6],
        [
            "epoch",
            "loss",
            "mae",
            "val_loss",
            "val_mae",
            "learning_rate"
        ]
    );
    let best = column(&header, &rows, "val_loss")
        .into_iter()
        .fold(f64::INFINITY, f64::min);
    let baseline = diabetes_mean_baseline();
    assert!(
        best < 0.8 * baseline,
        "best val_loss {best} against the mean's {baseline}"
    );
    // Reported in the target's units: an MAE far below 1 would mean standardised units.
    let mae = column(&header, &rows, "val_mae");
    assert!(mae.iter().all(|&m| m > 10.0), "val_mae {mae:?}");
}

#[test]
fn constant_loss_stops_by_patience() {
    let csv = case("patience", "data.csv");
    for (patience, expected) in [("1", 2), ("2", 3), ("5", 6), ("25", 20), ("0", 2)] {
        let (output, tmp) = train(&[
            "--data",
            csv.to_str().unwrap(),
            "--target",
            "label",
            "--validation-split",
            "0.2",
            "--epochs",
            "20",
            "--patience",
            patience,
            "--lr",
            "0",
            "--seed",
            "1",
            "--verbose",
            "2",
        ]);
        assert_ok(&output);
        let (_, rows) = history(&tmp.path().join("run"));
        assert_eq!(rows.len(), expected, "patience {patience}");
        let stdout = text(&output.stdout);
        assert!(stdout.contains("Best epoch: epoch 1"), "{stdout}");
    }
}

#[test]
fn huge_unscaled_features_keep_the_loss_finite() {
    let csv = case("loss-extremes", "huge_scale.csv");
    let (output, tmp) = train(&[
        "--data",
        csv.to_str().unwrap(),
        "--target",
        "label",
        "--scale",
        "none",
        "--lr",
        "0.1",
        "--epochs",
        "3",
        "--seed",
        "1",
        "--validation-split",
        "0",
        "--verbose",
        "2",
    ]);
    assert_ok(&output);
    let (header, rows) = history(&tmp.path().join("run"));
    assert_eq!(rows.len(), 3);
    for loss in column(&header, &rows, "loss") {
        assert!(loss.is_finite(), "loss {loss}");
    }
}

#[test]
fn invalid_options_are_clear_errors() {
    let wine = data("wine.csv");
    let wine = wine.to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--lr", "-0.1"], "invalid --lr -0.1"),
        (&["--validation-split", "1"], "--validation-split 1"),
        (&["--validation-split", "-0.1"], "at least 0 and below 1"),
        (
            &["--batch-size", "0"],
            "'--batch-size <BATCH_SIZE>': expected a whole number of at least 1, got '0'",
        ),
        (
            &["--epochs", "0"],
            "'--epochs <EPOCHS>': expected a whole number of at least 1, got '0'",
        ),
        (&["--data", wine, "--target", "colour"], "colour"),
        (
            &["--validation-split", "0", "--monitor", "val_loss"],
            "validation is off",
        ),
        (&["--monitor", "mae"], "regression"),
        (&["--min-delta", "-1"], "--min-delta"),
        (&["--dropout", "1"], "--dropout 1"),
        (&["--layers", "64,0"], "at least 1 unit"),
        (&["--optimizer", "adam", "--momentum", "0.9"], "--momentum"),
        (&["--optimizer", "sgd", "--nesterov"], "--nesterov"),
        (&["--threads", "100000"], "invalid --threads 100000"),
        (
            &["--patience", "-1"],
            "expected a whole number of at least 0, got '-1'",
        ),
        (&["--epochs", "-3"], "'--epochs <EPOCHS>'"),
        (&["--batch-size", "x"], "got 'x'"),
        (&["--seed", "-1"], "--seed"),
        (&["--dropout", "-0.1"], "--dropout -0.1"),
        (&["--verbose", "-1"], "--verbose"),
        (&["--data", "no/such/file.csv"], "no/such/file.csv"),
    ];
    for (args, needle) in cases {
        let (output, _tmp) = train(args);
        assert_error(&output, needle);
    }
}

#[test]
fn single_class_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("one_class.csv");
    fs::write(&csv, "x1,x2,label\n1,2,a\n3,4,a\n5,6,a\n7,8,a\n9,10,a\n").unwrap();
    let (output, _tmp) = train(&["--data", csv.to_str().unwrap(), "--target", "label"]);
    assert_error(&output, "class");
}

#[test]
fn existing_run_directory_is_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("busy");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("notes.txt"), "keep me").unwrap();
    let output = run_in(
        tmp.path(),
        &["train", "--out", out.to_str().unwrap(), "--epochs", "1"],
    );
    assert_error(&output, "not empty");
    assert_eq!(
        fs::read_to_string(out.join("notes.txt")).unwrap(),
        "keep me"
    );
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1);
}

#[test]
fn numbered_run_directories_do_not_collide() {
    let tmp = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let output = run_in(
            tmp.path(),
            &["train", "--epochs", "1", "--verbose", "0", "--seed", "1"],
        );
        assert_ok(&output);
    }
    assert!(tmp.path().join("runs/run-001/model.json").is_file());
    assert!(tmp.path().join("runs/run-002/model.json").is_file());
}

#[test]
fn quiet_run_prints_nothing_to_stdout() {
    let (output, _tmp) = train(&["--epochs", "1", "--verbose", "0", "--seed", "1"]);
    assert_ok(&output);
    assert_eq!(text(&output.stdout), "");
}

#[test]
fn sorted_file_warns_about_tail_split() {
    let csv = case("sorted-labels", "sorted.csv");
    let (output, _tmp) = train(&[
        "--data",
        csv.to_str().unwrap(),
        "--target",
        "label",
        "--validation-split",
        "0.2",
        "--epochs",
        "1",
        "--seed",
        "1",
    ]);
    assert_ok(&output);
    let stderr = text(&output.stderr);
    assert!(stderr.contains("warn"), "{stderr}");
    assert!(stderr.contains("--split stratified"), "{stderr}");
}

#[test]
fn split_counts_are_printed_as_used() {
    let csv = case("tiny-splits", "hundred.csv");
    let (output, tmp) = train(&[
        "--data",
        csv.to_str().unwrap(),
        "--target",
        "label",
        "--validation-split",
        "0.29",
        "--epochs",
        "1",
        "--seed",
        "1",
        "--batch-size",
        "71",
        "--verbose",
        "2",
    ]);
    assert_ok(&output);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("training rows: 71"), "{stdout}");
    assert!(stdout.contains("validation rows: 29"), "{stdout}");
    assert!(stdout.contains("1 batch -"), "{stdout}");
    assert!(tmp.path().join("run/history.csv").is_file());
}

#[test]
fn evaluate_test_writes_test_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let idx = tmp.path().join("idx");
    fs::create_dir(&idx).unwrap();
    let tiny = data("cases").join("idx-compression");
    for (from, to) in [
        ("tiny-images-idx3-ubyte", "train-images-idx3-ubyte"),
        ("tiny-labels-idx1-ubyte", "train-labels-idx1-ubyte"),
        ("tiny-images-idx3-ubyte", "t10k-images-idx3-ubyte"),
        ("tiny-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"),
    ] {
        fs::copy(tiny.join(from), idx.join(to)).unwrap();
    }
    let out = tmp.path().join("run");
    let output = run_in(
        tmp.path(),
        &[
            "train",
            "--data",
            idx.to_str().unwrap(),
            "--validation-split",
            "0",
            "--epochs",
            "2",
            "--seed",
            "1",
            "--evaluate-test",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_ok(&output);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Test (3 rows)"), "{stdout}");
    let scores = fs::read_to_string(out.join("test.csv")).unwrap();
    let mut lines = scores.lines();
    assert_eq!(lines.next(), Some("rows,loss,accuracy"));
    let values: Vec<f64> = lines
        .next()
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert_eq!(values[0], 3.0);
    assert!(values[1].is_finite(), "{scores}");
    assert!(values[1] > 0.0, "{scores}");
    assert!((0.0..=1.0).contains(&values[2]), "{scores}");
}
