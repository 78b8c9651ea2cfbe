//! Checkpoints, `train --resume`, signals and learning-rate control, run as a
//! user runs them: through the binary, on the real data in tests/data.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

/// Returns the binary as a command in `cwd`, with the stop hook unset.
fn densetrain(cwd: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_densetrain"));
    command
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .env_remove("DENSETRAIN_STOP_AFTER_BATCHES");
    command
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    densetrain(cwd)
        .args(args)
        .output()
        .expect("the densetrain binary should start")
}

/// Runs with `DENSETRAIN_STOP_AFTER_BATCHES=batches`, a stop as if SIGINT arrived then.
fn run_stopping(cwd: &Path, args: &[&str], batches: u64) -> Output {
    densetrain(cwd)
        .args(args)
        .env("DENSETRAIN_STOP_AFTER_BATCHES", batches.to_string())
        .output()
        .expect("the densetrain binary should start")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_status(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

fn assert_error(output: &Output, needle: &str) {
    let stderr = text(&output.stderr);
    assert_status(output, 2);
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    assert!(stderr.contains(needle), "expected '{needle}' in:\n{stderr}");
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("failed to read {}: {e}", path.display()))
}

/// Asserts that two run directories hold the same history and weights, byte for byte.
fn assert_same_run(expected: &Path, got: &Path) {
    assert_eq!(
        text(&read(&expected.join("history.csv"))),
        text(&read(&got.join("history.csv"))),
        "history.csv differs"
    );
    assert!(
        read(&expected.join("model.safetensors")) == read(&got.join("model.safetensors")),
        "model.safetensors differs"
    );
}

/// Returns the arguments of a classification run with dropout (masks keyed
/// by step), Adam (state and step count), diagnostics, plateau reduction and
/// periodic checkpoints.
fn iris_args(out: &str, epochs: &str) -> Vec<String> {
    [
        "train",
        "--data",
        &data("iris.csv"),
        "--split",
        "stratified",
        "--seed",
        "11",
        "--layers",
        "16,8",
        "--dropout",
        "0.2",
        "--batch-size",
        "16",
        "--epochs",
        epochs,
        "--reduce-lr-on-plateau",
        "--reduce-lr-patience",
        "1",
        "--reduce-lr-factor",
        "0.5",
        "--checkpoint-every",
        "5",
        "--verbose",
        "0",
        "--out",
        out,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn interrupted_and_resumed_run_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let full = run(cwd, &strs(&iris_args("full", "6")));
    assert_status(&full, 0);
    // 120 training rows in batches of 16 make 8 batches per epoch: stop inside
    // an epoch, right after a periodic checkpoint, on an epoch's last batch, and
    // twice in one run.
    for (case, stops) in [
        ("mid", vec![3u64]),
        ("periodic", vec![5]),
        ("epoch-end", vec![8]),
        ("twice", vec![11, 17]),
    ] {
        let out = format!("run-{case}");
        let first = run_stopping(cwd, &strs(&iris_args(&out, "6")), stops[0]);
        assert_status(&first, 130);
        let stderr = text(&first.stderr);
        assert!(
            stderr.contains(&format!("densetrain train --resume {out}")),
            "{stderr}"
        );
        for &n in &stops[1..] {
            let again = run_stopping(cwd, &["train", "--resume", &out], n);
            assert_status(&again, 130);
        }
        let resumed = run(cwd, &["train", "--resume", &out]);
        assert_status(&resumed, 0);
        assert_same_run(&cwd.join("full"), &cwd.join(&out));
    }
}

#[test]
fn resumed_regression_with_schedule_is_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let args = |out: &str| -> Vec<String> {
        [
            "train",
            "--data",
            &data("diabetes.csv"),
            "--target",
            "progression",
            "--seed",
            "2",
            "--layers",
            "8",
            "--epochs",
            "4",
            "--lr-schedule",
            "cosine",
            "--optimizer",
            "sgd",
            "--momentum",
            "0.9",
            "--verbose",
            "0",
            "--out",
            out,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    assert_status(&run(cwd, &strs(&args("full"))), 0);
    // 353 training rows make 12 batches per epoch: stop inside epoch 2.
    assert_status(&run_stopping(cwd, &strs(&args("part")), 20), 130);
    assert_status(&run(cwd, &["train", "--resume", "part"]), 0);
    assert_same_run(&cwd.join("full"), &cwd.join("part"));

    // A longer --epochs on resume does not stretch the cosine decay, because
    // the run stored its length (4): epochs 5 and 6 run at the final rate, 0.
    let extended = run(cwd, &["train", "--resume", "part", "--epochs", "6"]);
    assert_status(&extended, 0);
    let rates = history_column(&cwd.join("part"), "learning_rate");
    let full_rates = history_column(&cwd.join("full"), "learning_rate");
    assert_eq!(rates[..4], full_rates[..]);
    assert_eq!(rates[4..], [0.0, 0.0]);
}

#[test]
fn finished_run_extends_with_more_epochs() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    assert_status(&run(cwd, &strs(&iris_args("long", "5"))), 0);
    assert_status(&run(cwd, &strs(&iris_args("short", "3"))), 0);
    let again = run(cwd, &["train", "--resume", "short"]);
    assert_error(&again, "already completed 3 epochs");
    let extended = run(
        cwd,
        &[
            "train",
            "--resume",
            "short",
            "--epochs",
            "5",
            "--verbose",
            "2",
        ],
    );
    assert_status(&extended, 0);
    let stdout = text(&extended.stdout);
    assert!(stdout.contains("--epochs changes from 3 to 5"), "{stdout}");
    // Epochs 4 and 5 continue the state of epoch 3 exactly, and --epochs
    // changes nothing else, so the history equals the 5-epoch run's.
    assert_eq!(
        text(&read(&cwd.join("long/history.csv"))),
        text(&read(&cwd.join("short/history.csv")))
    );
}

#[test]
fn resume_rejects_other_options() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    assert_status(&run(cwd, &strs(&iris_args("r", "2"))), 0);
    let output = run(
        cwd,
        &[
            "train",
            "--resume",
            "r",
            "--epochs",
            "3",
            "--lr",
            "0.1",
            "--batch-size",
            "8",
        ],
    );
    assert_error(&output, "--lr, --batch-size cannot be given");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("only --epochs, --patience"), "{stderr}");
    let missing = run(cwd, &["train", "--resume", "nowhere"]);
    assert_error(&missing, "no such run directory");
}

#[test]
fn resume_detects_changed_data() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let csv = cwd.join("iris.csv");
    fs::copy(data("iris.csv"), &csv).unwrap();
    let args = [
        "train",
        "--data",
        "iris.csv",
        "--seed",
        "1",
        "--epochs",
        "2",
        "--verbose",
        "0",
        "--split",
        "stratified",
        "--out",
        "r",
    ];
    assert_status(&run(cwd, &args), 0);

    // One changed value: same rows, other values.
    let original = fs::read_to_string(&csv).unwrap();
    fs::write(
        &csv,
        original.replacen("5.1,3.5,1.4,0.2", "5.2,3.5,1.4,0.2", 1),
    )
    .unwrap();
    let output = run(cwd, &["train", "--resume", "r", "--epochs", "3"]);
    assert_error(&output, "the values of");
    assert!(text(&output.stderr).contains("differ (fingerprint"));

    // One row fewer.
    let mut lines: Vec<&str> = original.lines().collect();
    lines.pop();
    fs::write(&csv, lines.join("\n")).unwrap();
    let output = run(cwd, &["train", "--resume", "r", "--epochs", "3"]);
    assert_error(&output, "now gives 149 rows, the run had 150");

    // The original file resumes, also from another working directory: paths
    // are resolved against the run's.
    fs::write(&csv, &original).unwrap();
    let sub = cwd.join("elsewhere");
    fs::create_dir(&sub).unwrap();
    let run_dir = cwd.join("r");
    let output = run(
        &sub,
        &[
            "train",
            "--resume",
            run_dir.to_str().unwrap(),
            "--epochs",
            "3",
        ],
    );
    assert_status(&output, 0);
}

/// Starts a long training run that prints one line per epoch.
fn spawn_long_run(cwd: &Path, out: &str) -> std::process::Child {
    densetrain(cwd)
        .args([
            "train",
            "--seed",
            "1",
            "--epochs",
            "100000",
            "--verbose",
            "2",
            "--layers",
            "32",
            "--out",
            out,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the densetrain binary should start")
}

/// Reads the child's stdout until an epoch line, so training is under way.
fn wait_for_epoch_line(child: &mut std::process::Child) -> BufReader<std::process::ChildStdout> {
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "the run ended before printing an epoch line");
        if line.starts_with("Epoch 1/") {
            return reader;
        }
    }
}

fn send(signal: &str, child: &std::process::Child) {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("the kill command should run");
    assert!(status.success(), "kill -{signal} failed");
}

#[test]
fn sigint_and_sigterm_checkpoint_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let out = format!("run-{signal}");
        let mut child = spawn_long_run(cwd, &out);
        let mut reader = wait_for_epoch_line(&mut child);
        send(signal, &child);
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
        let output = child.wait_with_output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(code), "stderr:\n{stderr}");
        assert!(
            stderr.contains(&format!("Interrupted by SIG{signal}")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("densetrain train --resume {out}")),
            "{stderr}"
        );
        let run_dir = cwd.join(&out);
        assert!(run_dir.join("checkpoints/checkpoint.safetensors").is_file());
        assert!(run_dir.join("model.safetensors").is_file());
        let history = fs::read_to_string(run_dir.join("history.csv")).unwrap();
        let completed = history.lines().count() - 1;
        assert!(completed >= 1, "{history}");

        // Resuming to one more epoch gives what a run of that length gives.
        let target = (completed + 1).to_string();
        let resumed = run(
            cwd,
            &[
                "train",
                "--resume",
                &out,
                "--epochs",
                &target,
                "--verbose",
                "0",
            ],
        );
        assert_status(&resumed, 0);
        let reference = format!("ref-{signal}");
        let straight = run(
            cwd,
            &[
                "train",
                "--seed",
                "1",
                "--epochs",
                &target,
                "--verbose",
                "0",
                "--layers",
                "32",
                "--out",
                &reference,
            ],
        );
        assert_status(&straight, 0);
        assert_same_run(&cwd.join(&reference), &run_dir);
    }
}

#[test]
fn second_signal_exits_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let mut child = spawn_long_run(cwd, "run");
    // The first epoch line is printed after that epoch's checkpoint was written.
    let _reader = wait_for_epoch_line(&mut child);
    send("INT", &child);
    send("INT", &child);
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130));
    // Whichever checkpoint was last renamed into place is complete and resumes.
    let checkpoint = cwd.join("run/checkpoints/checkpoint.safetensors");
    assert!(checkpoint.is_file());
    let history = fs::read_to_string(cwd.join("run/history.csv")).unwrap();
    let completed = history.lines().count() - 1;
    let target = (completed + 2).to_string();
    let resumed = run(
        cwd,
        &[
            "train",
            "--resume",
            "run",
            "--epochs",
            &target,
            "--verbose",
            "0",
        ],
    );
    assert_status(&resumed, 0);
}

/// Returns true (and prints why) when permissions do not stop this process
/// from writing, as for root.
fn permissions_ignored(dir: &Path) -> bool {
    let probe = dir.join("probe");
    if fs::write(&probe, b"x").is_ok() {
        let _ = fs::remove_file(&probe);
        println!(
            "skipped: this process can write into a read-only directory (running as root?), \
             so a non-writable run directory cannot be tested here"
        );
        return true;
    }
    false
}

#[cfg(unix)]
#[test]
fn non_writable_run_directory_is_a_clear_error() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    assert_status(&run(cwd, &strs(&iris_args("r", "2"))), 0);
    let run_dir = cwd.join("r");
    let checkpoints = run_dir.join("checkpoints");
    let before_checkpoint = read(&checkpoints.join("checkpoint.safetensors"));
    let before_history = read(&run_dir.join("history.csv"));
    let read_only = fs::Permissions::from_mode(0o555);
    fs::set_permissions(&checkpoints, read_only.clone()).unwrap();
    fs::set_permissions(&run_dir, read_only).unwrap();
    let ignored = permissions_ignored(&checkpoints);
    let output = (!ignored).then(|| run(cwd, &["train", "--resume", "r", "--epochs", "3"]));
    for dir in [&run_dir, &checkpoints] {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let Some(output) = output else {
        return;
    };
    assert_error(
        &output,
        "the run directory is not writable; make it writable",
    );
    assert!(text(&output.stderr).contains("ermission denied"));
    assert!(read(&checkpoints.join("checkpoint.safetensors")) == before_checkpoint);
    assert!(read(&run_dir.join("history.csv")) == before_history);
    // The earlier checkpoint still resumes once the directory is writable.
    assert_status(&run(cwd, &["train", "--resume", "r", "--epochs", "3"]), 0);
}

#[test]
fn unwritable_run_directory_fails_before_loading() {
    // A directory where the write probe's file would go makes the probe fail
    // for every user, root included.
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let copy = cwd.join("iris.csv");
    fs::copy(data("iris.csv"), &copy).unwrap();
    let mut args = iris_args("r", "2");
    args[2] = copy.to_str().unwrap().to_string();
    assert_status(&run(cwd, &strs(&args)), 0);
    let history = read(&cwd.join("r/history.csv"));
    fs::create_dir(cwd.join("r/.densetrain-write-check")).unwrap();
    // Broken data: had it been read first, its error would be the one reported.
    fs::write(&copy, "a,b\n1,2,3\n").unwrap();
    let output = run(cwd, &["train", "--resume", "r", "--epochs", "3"]);
    assert_error(
        &output,
        "the run directory is not writable; make it writable",
    );
    assert!(read(&cwd.join("r/history.csv")) == history);
}

#[test]
fn missing_parent_of_out_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let out: PathBuf = tmp.path().join("a/b/run");
    let output = run(
        tmp.path(),
        &[
            "train",
            "--epochs",
            "1",
            "--verbose",
            "0",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_status(&output, 0);
    assert!(out.join("checkpoints/checkpoint.safetensors").is_file());
}

/// Parses history.csv into its header and the values of `column`.
fn history_column(run: &Path, column: &str) -> Vec<f64> {
    let csv = fs::read_to_string(run.join("history.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let index = header.iter().position(|h| *h == column).unwrap();
    lines
        .map(|l| l.split(',').nth(index).unwrap().parse().unwrap())
        .collect()
}

#[test]
fn step_schedule_rates_in_history() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(
        tmp.path(),
        &[
            "train",
            "--epochs",
            "5",
            "--verbose",
            "0",
            "--lr",
            "0.01",
            "--lr-schedule",
            "step",
            "--lr-step-size",
            "2",
            "--lr-gamma",
            "0.5",
            "--out",
            "r",
        ],
    );
    assert_status(&output, 0);
    let rates = history_column(&tmp.path().join("r"), "learning_rate");
    assert_eq!(rates, [0.01, 0.01, 0.005, 0.005, 0.0025]);
}

#[test]
fn plateau_reduction_follows_monitored_values() {
    let tmp = tempfile::tempdir().unwrap();
    // Training loss of a tiny network with a large rate stalls quickly.
    let output = run(
        tmp.path(),
        &[
            "train",
            "--data",
            &data("iris.csv"),
            "--epochs",
            "12",
            "--verbose",
            "0",
            "--seed",
            "1",
            "--layers",
            "",
            "--optimizer",
            "sgd",
            "--lr",
            "1.0",
            "--validation-split",
            "0",
            "--reduce-lr-on-plateau",
            "--reduce-lr-patience",
            "2",
            "--reduce-lr-factor",
            "0.5",
            "--reduce-lr-min-delta",
            "0.05",
            "--out",
            "r",
        ],
    );
    assert_status(&output, 0);
    let run_dir = tmp.path().join("r");
    let losses = history_column(&run_dir, "loss");
    let rates = history_column(&run_dir, "learning_rate");
    // Keras's rule, applied by hand to the recorded losses.
    let (mut best, mut wait, mut lr) = (f64::INFINITY, 0, 1.0f32);
    for (epoch, (&loss, &rate)) in losses.iter().zip(&rates).enumerate() {
        assert_eq!(rate, f64::from(lr), "epoch {}", epoch + 1);
        if loss < best - 0.05 {
            best = loss;
            wait = 0;
        } else {
            wait += 1;
            if wait >= 2 {
                lr = (f64::from(lr) * 0.5) as f32;
                wait = 0;
            }
        }
    }
    assert!(
        rates.iter().any(|&r| r < 1.0),
        "no reduction happened: {rates:?}"
    );
}
