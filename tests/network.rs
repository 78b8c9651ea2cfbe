//! Whole networks on the CPU backend: gradients against finite differences,
//! the non-finite guard, reproducibility and a short training run.

mod reference;

use densetrain::backend::cpu::Cpu;
use densetrain::backend::{Backend, LossKind, StatsValues};
use densetrain::model::init::init_params;
use densetrain::model::{Activation, Init, LayerParams, ModelSpec, Network, Params};
use densetrain::optim::{Optimizer, OptimizerConfig};
use densetrain::rng;
use reference::{Values, assert_close, central_differences, data_path, wide};

fn adam(lr: f32) -> OptimizerConfig {
    OptimizerConfig {
        optimizer: Optimizer::with_defaults("adam").unwrap(),
        lr,
        l2: 0.0,
        weight_decay: 0.0,
        clipnorm: None,
    }
}

fn spec(hidden: &[usize], activation: Activation, loss: LossKind, outputs: usize) -> ModelSpec {
    ModelSpec {
        inputs: 5,
        hidden: hidden.to_vec(),
        activation,
        outputs,
        loss,
        init: Init::default_for(activation),
        dropout: 0.0,
    }
}

/// Gives every layer non-zero biases, so the check covers their path too.
fn with_biases(mut params: Params, seed: u64) -> Params {
    let mut values = Values::new(seed);
    for layer in &mut params.layers {
        layer.b = values.uniform(layer.outputs, 0.3);
    }
    params
}

/// Computes the mean class-weighted loss of a network in f64, with the dropout masks
/// of `(seed, step)` applied after each hidden layer when `rate > 0`.
#[allow(clippy::too_many_arguments)]
fn reference_loss(
    spec: &ModelSpec,
    flat: &[f64],
    x: &[f32],
    targets: &[f32],
    weights: Option<&[f32]>,
    rows: usize,
    dropout: (u64, u64),
) -> f64 {
    let mut input = wide(x);
    let mut offset = 0;
    for (index, (i, o)) in spec.layer_shapes().into_iter().enumerate() {
        let w = &flat[offset..offset + o * i];
        let b = &flat[offset + o * i..offset + o * i + o];
        offset += o * i + o;
        let act = spec.layer_activation(index);
        let mut y = reference::dense(&input, w, b, rows, i, o, act);
        if index < spec.hidden.len() && spec.dropout > 0.0 {
            let scale = 1.0 / (1.0 - f64::from(spec.dropout));
            for (e, v) in y.iter_mut().enumerate() {
                let (seed, step) = dropout;
                let keep = rng::dropout_keep(seed, step, index as u64, e as u64, spec.dropout);
                *v = if keep { *v * scale } else { 0.0 };
            }
        }
        input = y;
    }
    let c = spec.outputs;
    let total: f64 = (0..rows)
        .map(|r| {
            let z = &input[r * c..(r + 1) * c];
            let t = targets[r];
            let loss = match spec.loss {
                LossKind::SoftmaxCrossEntropy => reference::softmax_cross_entropy(z, t as usize),
                LossKind::SigmoidBinaryCrossEntropy => {
                    reference::sigmoid_cross_entropy(z[0], f64::from(t))
                }
                LossKind::MeanSquaredError => (z[0] - f64::from(t)).powi(2),
            };
            weights.map_or(1.0, |w| f64::from(w[t as usize])) * loss
        })
        .sum();
    total / rows as f64
}

fn flatten(params: &Params) -> Vec<f32> {
    params
        .layers
        .iter()
        .flat_map(|l| l.w.iter().chain(&l.b).copied())
        .collect()
}

/// Checks every `dw` and `db` of a network against central differences of the f64 reference.
///
/// The reference runs in f64 with step 1e-4, leaving errors near 1e-8. The
/// backend's f32 passes through three layers were measured within 2e-7 of the
/// largest gradient, so 1e-5 of that scale separates rounding from a wrong
/// formula. A step across the kink of a ReLU-family unit would fail the check,
/// not pass it wrongly.
fn check_network_gradients(spec: &ModelSpec, weights: Option<Vec<f32>>, seed: u64) {
    let cpu = Cpu::new(1).unwrap();
    let rows = 6;
    let params = with_biases(init_params(spec, seed), seed);
    let mut values = Values::new(seed + 1);
    let x = values.uniform(rows * spec.inputs, 1.5);
    let targets = match spec.loss {
        LossKind::SoftmaxCrossEntropy => values.classes(rows, spec.outputs),
        LossKind::SigmoidBinaryCrossEntropy => values.classes(rows, 2),
        LossKind::MeanSquaredError => values.uniform(rows, 2.0),
    };
    let (step, dropout_seed) = (11, 23);

    let mut net = Network::new(&cpu, spec, &params, &adam(1e-3), rows).unwrap();
    let mut stats = cpu.new_stats().unwrap();
    let (x_dev, t_dev) = (cpu.upload(&x).unwrap(), cpu.upload(&targets).unwrap());
    let w_dev = weights.as_ref().map(|w| cpu.upload(w).unwrap());
    net.compute_gradients(
        &cpu,
        &x_dev,
        &t_dev,
        rows,
        w_dev.as_ref(),
        step,
        dropout_seed,
        0,
        &mut stats,
    )
    .unwrap();
    let got = flatten(&net.gradients(&cpu).unwrap());

    let weights = weights.as_deref();
    let flat = wide(&flatten(&params));
    let loss =
        |p: &[f64]| reference_loss(spec, p, &x, &targets, weights, rows, (dropout_seed, step));
    let case = format!(
        "{:?} {} dropout {}",
        spec.loss, spec.activation, spec.dropout
    );
    let stats = cpu.read_stats(&stats).unwrap();
    let expected_loss = loss(&flat);
    let got_loss = stats.loss_sum / rows as f64;
    assert!(
        (got_loss - expected_loss).abs() <= 1e-5 * expected_loss.abs(),
        "{case}: loss {got_loss}, expected {expected_loss}"
    );

    let expected = central_differences(&flat, 1e-4, loss);
    let scale = expected.iter().fold(0.0f64, |m, g| m.max(g.abs()));
    assert!(scale > 1e-3, "{case}: gradients vanish ({scale})");
    assert_close(&case, &got, &expected, 1e-5, scale);
    // The step computed gradients only: the weights have not moved.
    assert_eq!(net.params(&cpu).unwrap(), params);
}

#[test]
fn three_layer_gradients_match_finite_differences() {
    let softmax = spec(&[7, 6], Activation::Tanh, LossKind::SoftmaxCrossEntropy, 4);
    check_network_gradients(&softmax, Some(vec![0.5, 2.0, 1.0, 1.5]), 1);
    let binary = spec(
        &[7, 6],
        Activation::Elu,
        LossKind::SigmoidBinaryCrossEntropy,
        1,
    );
    check_network_gradients(&binary, Some(vec![3.0, 0.5]), 2);
    let regression = spec(&[7, 6], Activation::Sigmoid, LossKind::MeanSquaredError, 1);
    check_network_gradients(&regression, None, 3);
    let leaky = spec(
        &[7, 6],
        Activation::LeakyRelu,
        LossKind::SoftmaxCrossEntropy,
        3,
    );
    check_network_gradients(&leaky, None, 4);
}

#[test]
fn dropout_gradients_use_the_forward_mask() {
    // The reference draws its masks from the dropout definition in `rng`, so this
    // checks that forward and backward both apply exactly that mask.
    let with_dropout = ModelSpec {
        dropout: 0.3,
        ..spec(&[7, 6], Activation::Tanh, LossKind::SoftmaxCrossEntropy, 4)
    };
    check_network_gradients(&with_dropout, None, 5);
}

#[test]
fn single_layer_model_trains_without_hidden_layers() {
    let logistic = spec(
        &[],
        Activation::Relu,
        LossKind::SigmoidBinaryCrossEntropy,
        1,
    );
    check_network_gradients(&logistic, None, 6);
}

/// Two Gaussian-like blobs in 2D, labelled by the sign of `x0 + x1`.
fn separable(rows: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let x = Values::new(seed).uniform(rows * 2, 3.0);
    let y = x
        .chunks_exact(2)
        .map(|p| if p[0] + p[1] > 0.0 { 1.0 } else { 0.0 })
        .collect();
    (x, y)
}

fn evaluate(
    cpu: &Cpu,
    net: &mut Network<Cpu>,
    x: &Vec<f32>,
    y: &Vec<f32>,
    rows: usize,
) -> StatsValues {
    let mut stats = cpu.new_stats().unwrap();
    net.evaluate_batch(cpu, x, y, rows, &mut stats).unwrap();
    cpu.read_stats(&stats).unwrap()
}

#[test]
fn adam_drives_loss_down_on_separable_data() {
    let cpu = Cpu::new(1).unwrap();
    let rows = 200;
    let spec = ModelSpec {
        inputs: 2,
        ..spec(
            &[8],
            Activation::Tanh,
            LossKind::SigmoidBinaryCrossEntropy,
            1,
        )
    };
    let (x, y) = separable(rows, 7);
    let (x, y) = (cpu.upload(&x).unwrap(), cpu.upload(&y).unwrap());
    let optimizer = adam(0.02);
    let mut net = Network::new(&cpu, &spec, &init_params(&spec, 7), &optimizer, rows).unwrap();
    let before = evaluate(&cpu, &mut net, &x, &y, rows);
    let mut stats = cpu.new_stats().unwrap();
    for step in 0..300 {
        net.train_step(
            &cpu,
            &x,
            &y,
            rows,
            None,
            &optimizer,
            optimizer.lr,
            step,
            7,
            0,
            &mut stats,
        )
        .unwrap();
    }
    let after = evaluate(&cpu, &mut net, &x, &y, rows);
    let (loss_before, loss_after) = (before.loss_sum / 200.0, after.loss_sum / 200.0);
    assert!(loss_before > 0.4, "initial loss {loss_before}");
    assert!(
        loss_after < 0.1,
        "loss went from {loss_before} to {loss_after}"
    );
    assert!(after.correct >= 195.0, "{} of 200 correct", after.correct);
    assert_eq!(cpu.read_stats(&stats).unwrap().rows, 300.0 * 200.0);
}

/// Trains a few steps of a network large enough that its products and
/// elementwise passes are split across threads, with dropout, L2 and clipping.
fn train_sequence(threads: usize) -> (Params, Vec<Vec<f32>>, StatsValues) {
    let cpu = Cpu::new(threads).unwrap();
    let rows = 128;
    let spec = ModelSpec {
        inputs: 200,
        hidden: vec![256, 64],
        activation: Activation::Relu,
        outputs: 10,
        loss: LossKind::SoftmaxCrossEntropy,
        init: Init::He,
        dropout: 0.25,
    };
    let optimizer = OptimizerConfig {
        l2: 1e-4,
        clipnorm: Some(1.0),
        ..adam(1e-3)
    };
    let mut net = Network::new(&cpu, &spec, &init_params(&spec, 3), &optimizer, rows).unwrap();
    let mut values = Values::new(8);
    let x = cpu
        .upload(&values.uniform(rows * spec.inputs, 1.0))
        .unwrap();
    let y = cpu.upload(&values.classes(rows, spec.outputs)).unwrap();
    let mut stats = cpu.new_stats().unwrap();
    for step in 0..4 {
        net.train_step(
            &cpu, &x, &y, rows, None, &optimizer, 1e-3, step, 3, step, &mut stats,
        )
        .unwrap();
    }
    let state = net.optimizer_state(&cpu).unwrap();
    (
        net.params(&cpu).unwrap(),
        state,
        cpu.read_stats(&stats).unwrap(),
    )
}

fn bits(params: &Params) -> Vec<u32> {
    flatten(params).iter().map(|v| v.to_bits()).collect()
}

#[test]
fn same_seed_gives_identical_parameters_per_thread_count() {
    for threads in [1, 2] {
        let (first, first_state, first_stats) = train_sequence(threads);
        let (second, second_state, second_stats) = train_sequence(threads);
        assert_eq!(bits(&first), bits(&second), "{threads} threads");
        assert_eq!(first_state, second_state, "{threads} threads");
        assert_eq!(
            first_stats.loss_sum.to_bits(),
            second_stats.loss_sum.to_bits()
        );
        assert_eq!(
            first_stats.penalty_sum.to_bits(),
            second_stats.penalty_sum.to_bits()
        );
        assert_eq!(first_stats.nonfinite_batch, None);
    }
}

fn overflow_params() -> (ModelSpec, Params) {
    let spec = ModelSpec {
        inputs: 3,
        ..spec(&[4], Activation::Relu, LossKind::SoftmaxCrossEntropy, 3)
    };
    let mut params = with_biases(init_params(&spec, 9), 9);
    // All first-layer weights are 1: three inputs of 3e38 sum past f32::MAX.
    params.layers[0].w.fill(1.0);
    (spec, params)
}

#[test]
fn nonfinite_batch_raises_flag_and_freezes_weights() {
    let cpu = Cpu::new(1).unwrap();
    let (spec, params) = overflow_params();
    let optimizer = adam(0.01);
    let rows = 2;
    let mut net = Network::new(&cpu, &spec, &params, &optimizer, rows).unwrap();
    let good = cpu.upload(&[0.5, -1.0, 0.25, 1.0, 0.0, -0.5]).unwrap();
    let huge = cpu.upload(&[3e38, 3e38, 3e38, 1.0, 0.0, -0.5]).unwrap();
    let y = cpu.upload(&[0.0, 2.0]).unwrap();
    let mut stats = cpu.new_stats().unwrap();

    net.train_step(
        &cpu, &good, &y, rows, None, &optimizer, 0.01, 0, 1, 0, &mut stats,
    )
    .unwrap();
    assert_eq!(cpu.read_stats(&stats).unwrap().nonfinite_batch, None);
    let after_good = net.params(&cpu).unwrap();
    assert_ne!(after_good, params, "a finite batch updates the weights");

    net.train_step(
        &cpu, &huge, &y, rows, None, &optimizer, 0.01, 1, 1, 7, &mut stats,
    )
    .unwrap();
    assert_eq!(cpu.read_stats(&stats).unwrap().nonfinite_batch, Some(7));
    assert_eq!(net.params(&cpu).unwrap(), after_good);

    net.train_step(
        &cpu, &good, &y, rows, None, &optimizer, 0.01, 2, 1, 8, &mut stats,
    )
    .unwrap();
    assert_eq!(cpu.read_stats(&stats).unwrap().nonfinite_batch, Some(7));
    assert_eq!(net.params(&cpu).unwrap(), after_good);

    assert_eq!(
        net.first_nonfinite_layer(&cpu, &huge, rows).unwrap(),
        Some(0)
    );
    assert_eq!(net.first_nonfinite_layer(&cpu, &good, rows).unwrap(), None);
}

#[test]
fn nonfinite_layer_is_found_past_the_first() {
    let cpu = Cpu::new(1).unwrap();
    let (spec, mut params) = overflow_params();
    // Inputs of 1e38 stay finite in the first layer (3e38 < f32::MAX) when its
    // weights are 1, and overflow in the output layer whose weights are 10.
    params.layers[0].b.fill(0.0);
    params.layers[1].w.fill(10.0);
    let mut net = Network::new(&cpu, &spec, &params, &adam(0.01), 1).unwrap();
    let x = cpu.upload(&[1e38, 1e38, 1e38]).unwrap();
    assert_eq!(net.first_nonfinite_layer(&cpu, &x, 1).unwrap(), Some(1));
}

#[test]
fn unnormalised_features_keep_the_loss_finite() {
    // Features near ±10,000 and ±20,000 give logits in the thousands from the first step.
    let text = std::fs::read_to_string(data_path("cases/loss-extremes/huge_scale.csv")).unwrap();
    let rows: Vec<Vec<f32>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    let n = rows.len();
    let x: Vec<f32> = rows.iter().flat_map(|r| r[..2].to_vec()).collect();
    let y: Vec<f32> = rows.iter().map(|r| r[2]).collect();
    let cpu = Cpu::new(1).unwrap();
    let spec = ModelSpec {
        inputs: 2,
        ..spec(
            &[16, 8],
            Activation::Relu,
            LossKind::SigmoidBinaryCrossEntropy,
            1,
        )
    };
    let optimizer = OptimizerConfig {
        optimizer: Optimizer::with_defaults("sgd").unwrap(),
        ..adam(0.1)
    };
    let mut net = Network::new(&cpu, &spec, &init_params(&spec, 1), &optimizer, n).unwrap();
    let (x, y) = (cpu.upload(&x).unwrap(), cpu.upload(&y).unwrap());
    let mut stats = cpu.new_stats().unwrap();
    for step in 0..3 {
        cpu.reset_stats(&mut stats).unwrap();
        net.train_step(
            &cpu, &x, &y, n, None, &optimizer, 0.1, step, 1, 0, &mut stats,
        )
        .unwrap();
        let values = cpu.read_stats(&stats).unwrap();
        assert!(
            values.loss_sum.is_finite(),
            "step {step}: loss {}",
            values.loss_sum
        );
        assert_eq!(values.nonfinite_batch, None, "step {step}");
    }
}

#[test]
fn snapshots_save_and_restore_parameters() {
    let cpu = Cpu::new(1).unwrap();
    let spec = spec(&[4], Activation::Tanh, LossKind::SoftmaxCrossEntropy, 3);
    let params = init_params(&spec, 2);
    let optimizer = adam(0.05);
    let mut net = Network::new(&cpu, &spec, &params, &optimizer, 3).unwrap();
    let mut snapshot = net.snapshot(&cpu).unwrap();
    let x = cpu.upload(&Values::new(2).uniform(15, 1.0)).unwrap();
    let y = cpu.upload(&[0.0, 1.0, 2.0]).unwrap();
    let mut stats = cpu.new_stats().unwrap();
    net.train_step(&cpu, &x, &y, 3, None, &optimizer, 0.05, 0, 1, 0, &mut stats)
        .unwrap();
    let trained = net.params(&cpu).unwrap();
    assert_ne!(trained, params);

    net.restore_from(&cpu, &snapshot).unwrap();
    assert_eq!(net.params(&cpu).unwrap(), params);
    net.load_params(&cpu, &trained).unwrap();
    net.save_to(&cpu, &mut snapshot).unwrap();
    net.load_params(&cpu, &params).unwrap();
    net.restore_from(&cpu, &snapshot).unwrap();
    assert_eq!(net.params(&cpu).unwrap(), trained);

    let state = net.optimizer_state(&cpu).unwrap();
    assert_eq!(state.len(), 2 * 2 * 2, "m and v for w and b of two layers");
    assert!(state.iter().any(|s| s.iter().any(|&v| v != 0.0)));
    let mut fresh = Network::new(&cpu, &spec, &params, &optimizer, 3).unwrap();
    fresh.load_optimizer_state(&cpu, &state).unwrap();
    assert_eq!(fresh.optimizer_state(&cpu).unwrap(), state);
    let err = fresh.load_optimizer_state(&cpu, &state[1..]).unwrap_err();
    assert!(err.to_string().contains("it has 7 tensors"), "{err}");
}

#[test]
fn predict_batch_returns_probabilities() {
    let cpu = Cpu::new(1).unwrap();
    let spec = spec(&[6], Activation::Relu, LossKind::SoftmaxCrossEntropy, 3);
    let mut net = Network::new(&cpu, &spec, &init_params(&spec, 4), &adam(1e-3), 4).unwrap();
    let x = cpu.upload(&Values::new(4).uniform(20, 1.0)).unwrap();
    let mut out = cpu.zeros(12).unwrap();
    net.predict_batch(&cpu, &x, 4, &mut out).unwrap();
    for row in out.chunks_exact(3) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6, "row {row:?} sums to {sum}");
        assert!(row.iter().all(|&p| p > 0.0));
    }
}

#[test]
fn network_rejects_mismatched_shapes() {
    let cpu = Cpu::new(1).unwrap();
    let spec = spec(&[4], Activation::Relu, LossKind::SoftmaxCrossEntropy, 3);
    let mut params = init_params(&spec, 1);
    params.layers[1] = LayerParams {
        inputs: 5,
        outputs: 3,
        w: vec![0.0; 15],
        b: vec![0.0; 3],
    };
    let err = Network::new(&cpu, &spec, &params, &adam(1e-3), 4)
        .err()
        .expect("mismatched layer");
    assert!(
        err.to_string().contains("layer 1 has weights [3, 5]"),
        "{err}"
    );

    let params = init_params(&spec, 1);
    let err = Network::new(&cpu, &spec, &params, &adam(1e-3), 0)
        .err()
        .expect("zero rows");
    assert!(err.to_string().contains("at least one row"), "{err}");

    let mut net = Network::new(&cpu, &spec, &params, &adam(1e-3), 4).unwrap();
    let x = cpu.zeros(25).unwrap();
    let err = net
        .predict_batch(&cpu, &x, 5, &mut vec![0.0; 15])
        .unwrap_err();
    assert!(err.to_string().contains("batch of 5 rows"), "{err}");

    let sgd = OptimizerConfig {
        optimizer: Optimizer::Sgd {
            momentum: 0.9,
            nesterov: false,
        },
        ..adam(0.1)
    };
    let y = cpu.zeros(4).unwrap();
    let mut stats = cpu.new_stats().unwrap();
    let err = net
        .train_step(&cpu, &x, &y, 4, None, &sgd, 0.1, 0, 1, 0, &mut stats)
        .unwrap_err();
    assert!(err.to_string().contains("sgd keeps 1 per tensor"), "{err}");
}
