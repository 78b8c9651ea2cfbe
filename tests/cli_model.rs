//! Model files, `evaluate`, `predict` and `train --initial-model`, through the
//! binary and the library, on the real data in tests/data.

use densetrain::backend::cpu::Cpu;
use densetrain::data::{DataSource, RawData};
use densetrain::model::file;
use densetrain::model::{Network, Params};
use densetrain::optim::{Optimizer, OptimizerConfig};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
        .display()
        .to_string()
}

fn run(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_densetrain"))
        .current_dir(cwd)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("DENSETRAIN_STOP_AFTER_BATCHES")
        .output()
        .expect("the densetrain binary should start")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
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

fn assert_error(output: &Output, needle: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "panic:\n{stderr}");
    assert!(stderr.contains(needle), "expected '{needle}' in:\n{stderr}");
}

/// Trains iris (3 classes, stratified split) into `cwd/iris` for `epochs`
/// epochs with hidden layers `layers` and `extra` options.
fn train_iris(cwd: &Path, epochs: &str, layers: &str, extra: &[&str]) -> PathBuf {
    let iris = data("iris.csv");
    let mut args = vec![
        "train",
        "--data",
        &iris,
        "--split",
        "stratified",
        "--seed",
        "5",
        "--epochs",
        epochs,
        "--layers",
        layers,
        "--verbose",
        "0",
        "--out",
        "iris",
    ];
    args.extend_from_slice(extra);
    assert_ok(&run(cwd, &args));
    cwd.join("iris")
}

/// Returns the `column` values of history.csv.
fn history_column(run: &Path, column: &str) -> Vec<f64> {
    let csv = fs::read_to_string(run.join("history.csv")).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let index = header.iter().position(|h| *h == column).unwrap();
    lines
        .map(|l| l.split(',').nth(index).unwrap().parse().unwrap())
        .collect()
}

/// Runs `evaluate --json` and returns the parsed object.
fn evaluate_json(cwd: &Path, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["evaluate", "--json"];
    full.extend_from_slice(args);
    let output = run(cwd, &full);
    assert_ok(&output);
    serde_json::from_slice(&output.stdout).expect("evaluate --json prints JSON")
}

#[test]
fn evaluate_without_data_matches_saved_epoch_val_loss() {
    let tmp = tempfile::tempdir().unwrap();
    // --patience makes the best epoch differ from the last one, so the saved
    // weights are those of an earlier epoch.
    let run_dir = train_iris(tmp.path(), "40", "16", &["--patience", "3"]);
    let json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(run_dir.join("model.json")).unwrap()).unwrap();
    let saved = json["training"]["saved_epoch"].as_u64().unwrap() as usize;
    let val_loss = history_column(&run_dir, "val_loss");
    let val_accuracy = history_column(&run_dir, "val_accuracy");

    let result = evaluate_json(tmp.path(), &["--model", "iris"]);
    assert_eq!(result["rows"], 30);
    assert_eq!(result["loss"].as_f64().unwrap(), val_loss[saved - 1]);
    let accuracy = result["classification"]["accuracy"].as_f64().unwrap();
    assert_eq!(accuracy, val_accuracy[saved - 1]);
    let confusion = result["classification"]["confusion"].as_array().unwrap();
    let total: u64 = confusion
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total, 30);
    assert!(result["classification"]["roc_auc"].is_null());

    let output = run(tmp.path(), &["evaluate", "--model", "iris"]);
    assert_ok(&output);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("Confusion matrix"), "{stdout}");
    assert!(stdout.contains("versicolor"), "{stdout}");
    assert!(
        stdout.contains(&format!("loss: {:.4}", val_loss[saved - 1])),
        "{stdout}"
    );
}

#[test]
fn evaluate_regression_in_target_units() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(
        tmp.path(),
        &[
            "train",
            "--data",
            &data("diabetes.csv"),
            "--target",
            "progression",
            "--seed",
            "1",
            "--epochs",
            "5",
            "--layers",
            "8",
            "--verbose",
            "0",
            "--out",
            "d",
        ],
    );
    assert_ok(&output);
    let result = evaluate_json(tmp.path(), &["--model", "d/model.json"]);
    let val_loss = history_column(&tmp.path().join("d"), "val_loss");
    assert_eq!(result["loss"].as_f64().unwrap(), val_loss[4]);
    let regression = &result["regression"];
    let rmse = regression["rmse"].as_f64().unwrap();
    // The loss is the mean squared error in squared target units.
    assert!(
        (rmse * rmse - val_loss[4]).abs() / val_loss[4] < 1e-4,
        "{result}"
    );
    assert!(regression["mae"].as_f64().unwrap() > 0.0);
    assert!(regression["r2"].as_f64().unwrap() < 1.0);
}

#[test]
fn evaluate_binary_reports_roc_auc() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(
        tmp.path(),
        &[
            "train",
            "--data",
            &data("breast_cancer.csv"),
            "--split",
            "stratified",
            "--seed",
            "3",
            "--epochs",
            "5",
            "--layers",
            "16",
            "--verbose",
            "0",
            "--out",
            "b",
        ],
    );
    assert_ok(&output);
    let result = evaluate_json(
        tmp.path(),
        &["--model", "b", "--data", &data("breast_cancer.csv")],
    );
    assert_eq!(result["rows"], 569);
    let auc = result["classification"]["roc_auc"].as_f64().unwrap();
    assert!(auc > 0.9, "{auc}");
    assert!(auc <= 1.0, "{auc}");
}

#[test]
fn evaluate_rejects_unknown_label_column_and_missing_target() {
    let tmp = tempfile::tempdir().unwrap();
    train_iris(tmp.path(), "30", "16", &[]);
    let iris = fs::read_to_string(data("iris.csv")).unwrap();
    let unknown_label = iris.replacen(",setosa", ",daisy", 1);
    fs::write(tmp.path().join("label.csv"), unknown_label).unwrap();
    let output = run(
        tmp.path(),
        &["evaluate", "--model", "iris", "--data", "label.csv"],
    );
    assert_error(&output, "label 'daisy' is not one of the classes");

    let extra_column: String = iris
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l},colour\n")
            } else {
                format!("{l},red\n")
            }
        })
        .collect();
    fs::write(tmp.path().join("extra.csv"), extra_column).unwrap();
    let output = run(
        tmp.path(),
        &["evaluate", "--model", "iris", "--data", "extra.csv"],
    );
    assert_error(&output, "'colour' that the model was not trained on");

    let no_target: String = iris
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
        .collect();
    fs::write(tmp.path().join("features.csv"), no_target).unwrap();
    let output = run(
        tmp.path(),
        &["evaluate", "--model", "iris", "--data", "features.csv"],
    );
    assert_error(&output, "no 'species' column");

    let output = run(tmp.path(), &["evaluate", "--model", "nowhere"]);
    assert_error(&output, "nowhere: no such file or directory");
}

#[test]
fn predict_csv_without_target_column() {
    let tmp = tempfile::tempdir().unwrap();
    train_iris(tmp.path(), "30", "16", &[]);
    let iris = fs::read_to_string(data("iris.csv")).unwrap();
    let features: String = iris
        .lines()
        .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
        .collect();
    fs::write(tmp.path().join("new.csv"), &features).unwrap();
    let output = run(
        tmp.path(),
        &["predict", "--model", "iris", "--data", "new.csv"],
    );
    assert_ok(&output);
    let csv = text(&output.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "species,probability_setosa,probability_versicolor,probability_virginica"
    );
    assert_eq!(lines.len(), 151);
    let classes = ["setosa", "versicolor", "virginica"];
    let mut correct = 0;
    for (line, truth) in lines[1..].iter().zip(iris.lines().skip(1)) {
        let cells: Vec<&str> = line.split(',').collect();
        let probabilities: Vec<f64> = cells[1..].iter().map(|p| p.parse().unwrap()).collect();
        let sum: f64 = probabilities.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5, "{line}");
        let largest = (0..3)
            .max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]))
            .unwrap();
        assert_eq!(cells[0], classes[largest], "{line}");
        if truth.ends_with(cells[0]) {
            correct += 1;
        }
    }
    // 30 epochs of a 16-unit network reach about 83% on iris.
    assert!(correct >= 115, "{correct} of 150 correct");

    // The same rows with the target column give the same predictions.
    let with_target = run(
        tmp.path(),
        &["predict", "--model", "iris", "--data", &data("iris.csv")],
    );
    assert_ok(&with_target);
    assert_eq!(text(&with_target.stdout), csv);
}

#[test]
fn predict_output_file_is_never_overwritten_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    train_iris(tmp.path(), "30", "16", &[]);
    let out = tmp.path().join("out.csv");
    fs::write(&out, "keep me\n").unwrap();
    let args = [
        "predict",
        "--model",
        "iris",
        "--data",
        &data("iris.csv"),
        "--output",
        "out.csv",
    ];
    let output = run(tmp.path(), &args);
    assert_error(&output, "the file exists; pass --force");
    assert_eq!(fs::read_to_string(&out).unwrap(), "keep me\n");

    let mut forced = args.to_vec();
    forced.push("--force");
    assert_ok(&run(tmp.path(), &forced));
    let written = fs::read_to_string(&out).unwrap();
    assert_eq!(written.lines().count(), 151);

    fs::remove_file(&out).unwrap();
    assert_ok(&run(tmp.path(), &args));
    assert_eq!(fs::read_to_string(&out).unwrap(), written);
}

#[test]
fn predict_never_overwrites_its_input() {
    let tmp = tempfile::tempdir().unwrap();
    train_iris(tmp.path(), "30", "16", &[]);
    let input = tmp.path().join("input.csv");
    fs::copy(data("iris.csv"), &input).unwrap();
    let before = fs::read(&input).unwrap();
    let output = run(
        tmp.path(),
        &[
            "predict",
            "--model",
            "iris",
            "--data",
            "input.csv",
            "--output",
            "./input.csv",
            "--force",
        ],
    );
    assert_error(&output, "that is the input file");
    assert_eq!(fs::read(&input).unwrap(), before);
}

#[test]
fn predict_regression_writes_values_in_target_units() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(
        tmp.path(),
        &[
            "train",
            "--data",
            &data("diabetes.csv"),
            "--target",
            "progression",
            "--seed",
            "1",
            "--epochs",
            "30",
            "--layers",
            "16",
            "--verbose",
            "0",
            "--out",
            "d",
        ],
    );
    assert_ok(&output);
    let output = run(
        tmp.path(),
        &["predict", "--model", "d", "--data", &data("diabetes.csv")],
    );
    assert_ok(&output);
    let csv = text(&output.stdout);
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("progression"));
    let values: Vec<f64> = lines.map(|l| l.parse().unwrap()).collect();
    assert_eq!(values.len(), 442);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    // The target's mean is about 152; standardised outputs would be near 0.
    assert!((100.0..200.0).contains(&mean), "mean prediction {mean}");
}

/// Reads a safetensors file by hand: an 8-byte little-endian header length,
/// a JSON header, then the data. Returns the header and the data bytes.
fn parse_safetensors(bytes: &[u8]) -> (serde_json::Map<String, serde_json::Value>, &[u8]) {
    let length = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + length]).unwrap();
    (header.as_object().unwrap().clone(), &bytes[8 + length..])
}

#[test]
fn model_file_follows_safetensors_layout_for_torch_linear() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = train_iris(tmp.path(), "15", "16,8", &[]);
    let bytes = fs::read(run_dir.join("model.safetensors")).unwrap();
    let (header, body) = parse_safetensors(&bytes);
    let (_, params) = file::load(&run_dir).unwrap();
    // torch.nn.Linear(in, out) keeps weight [out, in] and bias [out].
    let shapes = [(4usize, 16usize), (16, 8), (8, 3)];
    let mut spans = Vec::new();
    for (i, &(inputs, outputs)) in shapes.iter().enumerate() {
        for (name, shape) in [
            (format!("layers.{i}.weight"), vec![outputs, inputs]),
            (format!("layers.{i}.bias"), vec![outputs]),
        ] {
            let entry = &header[&name];
            assert_eq!(entry["dtype"], "F32", "{name}");
            let got: Vec<usize> = entry["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(got, shape, "{name}");
            let offsets = entry["data_offsets"].as_array().unwrap();
            let (start, end) = (
                offsets[0].as_u64().unwrap() as usize,
                offsets[1].as_u64().unwrap() as usize,
            );
            assert_eq!(end - start, 4 * shape.iter().product::<usize>(), "{name}");
            spans.push((start, end));
            // Little-endian f32 values, row-major: element [o, k] of the weight
            // is input k's weight into output o, as in the loaded parameters.
            let values: Vec<f32> = body[start..end]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let layer = &params.layers[i];
            let expected = if name.ends_with("weight") {
                &layer.w
            } else {
                &layer.b
            };
            assert_eq!(&values, expected, "{name}");
        }
    }
    assert_eq!(header.len(), 6, "only the six tensors: {:?}", header.keys());
    // The tensors tile the data section without gaps or overlaps.
    spans.sort();
    let mut position = 0;
    for (start, end) in spans {
        assert_eq!(start, position);
        position = end;
    }
    assert_eq!(position, body.len());
}

fn no_state_optimizer() -> OptimizerConfig {
    OptimizerConfig {
        optimizer: Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false,
        },
        lr: 0.0,
        l2: 0.0,
        weight_decay: 0.0,
        clipnorm: None,
    }
}

fn predictions(params: &Params, metadata: &file::ModelMetadata) -> Vec<f32> {
    let backend = Cpu::new(1).unwrap();
    let pre = &metadata.preprocessing;
    let raw: RawData = pre
        .read(&DataSource::Csv(PathBuf::from(data("iris.csv"))))
        .unwrap();
    let rows = pre.transform(&raw).unwrap();
    let mut net = Network::new(
        &backend,
        &metadata.architecture,
        params,
        &no_state_optimizer(),
        64,
    )
    .unwrap();
    densetrain::train::predict(&backend, &mut net, &rows).unwrap()
}

#[test]
fn model_round_trip_gives_identical_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = train_iris(tmp.path(), "15", "16", &[]);
    let (metadata, params) = file::load(&run_dir).unwrap();
    let before = predictions(&params, &metadata);

    let copy = tmp.path().join("copy");
    fs::create_dir(&copy).unwrap();
    file::save(&copy, &metadata, &params).unwrap();
    let (metadata_back, params_back) = file::load(&copy.join("model.safetensors")).unwrap();
    assert_eq!(metadata_back, metadata);
    assert_eq!(params_back, params);
    let after = predictions(&params_back, &metadata_back);
    assert!(before == after, "predictions changed after a save and load");
}

#[test]
fn checkpoint_best_holds_the_best_epoch_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run_dir = train_iris(
        tmp.path(),
        "30",
        "16",
        &["--checkpoint-best", "--no-restore-best-weights"],
    );
    let best_dir = run_dir.join("checkpoints/best");
    let (best_meta, _) = file::load(&best_dir).unwrap();
    let best_epoch = best_meta.training.saved_epoch.unwrap();
    let val_loss = history_column(&run_dir, "val_loss");
    let minimum = val_loss.iter().cloned().fold(f64::INFINITY, f64::min);
    assert_eq!(val_loss[best_epoch - 1], minimum);
    let result = evaluate_json(tmp.path(), &["--model", "iris/checkpoints/best"]);
    assert_eq!(result["loss"].as_f64().unwrap(), minimum);
}

#[test]
fn initial_model_fine_tunes_and_checks_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    train_iris(tmp.path(), "30", "16", &[]);
    let iris = data("iris.csv");
    let output = run(
        tmp.path(),
        &[
            "train",
            "--data",
            &iris,
            "--split",
            "stratified",
            "--seed",
            "6",
            "--epochs",
            "2",
            "--initial-model",
            "iris",
            "--verbose",
            "0",
            "--out",
            "tuned",
        ],
    );
    assert_ok(&output);
    // Starting from trained weights, the first epoch's loss is already low.
    let loss = history_column(&tmp.path().join("tuned"), "loss");
    assert!(loss[0] < 0.5, "first-epoch loss {}", loss[0]);
    let (tuned, _) = file::load(&tmp.path().join("tuned")).unwrap();
    let (original, _) = file::load(&tmp.path().join("iris")).unwrap();
    assert_eq!(
        tuned.preprocessing.features,
        original.preprocessing.features
    );
    assert_eq!(tuned.architecture.hidden, vec![16]);

    let wine = data("wine.csv");
    let output = run(
        tmp.path(),
        &[
            "train",
            "--data",
            &wine,
            "--initial-model",
            "iris",
            "--target",
            "cultivar",
            "--out",
            "w",
        ],
    );
    assert_error(
        &output,
        "predicts 'species', but this run's target is 'cultivar'",
    );
    let output = run(
        tmp.path(),
        &[
            "train",
            "--data",
            &iris,
            "--initial-model",
            "iris",
            "--layers",
            "8",
            "--out",
            "x",
        ],
    );
    assert_error(&output, "--layers does not apply with --initial-model");
    let renamed = fs::read_to_string(&iris)
        .unwrap()
        .replacen("virginica", "other", 1);
    fs::write(tmp.path().join("renamed.csv"), renamed).unwrap();
    let output = run(
        tmp.path(),
        &[
            "train",
            "--data",
            "renamed.csv",
            "--initial-model",
            "iris",
            "--out",
            "y",
        ],
    );
    assert_error(&output, "does not know the class other");
}

#[test]
fn predict_evaluate_reject_bad_threads() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["predict", "evaluate"] {
        for value in ["-1", "abc", "1.5"] {
            let output = run(
                dir.path(),
                &[command, "--model", "missing", "--threads", value],
            );
            assert_error(
                &output,
                &format!("invalid value '{value}' for '--threads <THREADS>'"),
            );
            assert!(text(&output.stderr).contains("expected a whole number"));
        }
    }
}
