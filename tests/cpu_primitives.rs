//! The CPU backend's primitives against naive f64 references, exact fixtures
//! and central finite differences.

mod reference;

use densetrain::backend::cpu::Cpu;
use densetrain::backend::{Backend, Dims, DropoutMask, LossKind};
use densetrain::model::Activation;
use densetrain::rng;
use reference::{Values, assert_close, central_differences, data_path, wide};
use std::fs;

const ALL_ACTIVATIONS: [Activation; 6] = [
    Activation::Relu,
    Activation::LeakyRelu,
    Activation::Elu,
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Linear,
];

fn cpu(threads: usize) -> Cpu {
    Cpu::new(threads).expect("the CPU backend starts")
}

/// Reads the named sections of a whitespace-separated matrix file into rows of values.
fn read_sections(text: &str) -> Vec<(String, Vec<Vec<f32>>)> {
    let mut sections: Vec<(String, Vec<Vec<f32>>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or_default();
        if first.parse::<f32>().is_err() {
            sections.push((line.to_string(), Vec::new()));
            continue;
        }
        let row = line
            .split_whitespace()
            .map(|v| v.parse::<f32>().expect("a number"))
            .collect();
        sections.last_mut().expect("a section header").1.push(row);
    }
    sections
}

fn section<'a>(sections: &'a [(String, Vec<Vec<f32>>)], name: &str) -> &'a [Vec<f32>] {
    &sections
        .iter()
        .find(|(title, _)| title.starts_with(name))
        .unwrap_or_else(|| panic!("section {name} missing"))
        .1
}

#[test]
fn dense_forward_matches_layout_fixture_exactly() {
    let text = fs::read_to_string(data_path("cases/dense-layout/gemm_case.txt")).unwrap();
    let sections = read_sections(&text);
    let x: Vec<f32> = section(&sections, "X").concat();
    let w_in_out = section(&sections, "W"); // [I, O] as the fixture stores it
    let b: Vec<f32> = section(&sections, "b").concat();
    let (n, i, o) = (2, w_in_out.len(), w_in_out[0].len());
    // The section goes on with the same numbers as one buffer and in column-major order.
    let expected: Vec<f32> = section(&sections, "Y_expected")[..n].concat();
    assert_eq!(expected.len(), n * o);
    assert_eq!((i, o), (3, 4));
    // Our weights are [O, I]: the transpose of the fixture's W.
    let w: Vec<f32> = (0..o)
        .flat_map(|c| w_in_out.iter().map(move |row| row[c]))
        .collect();

    for threads in [1, 2] {
        let cpu = cpu(threads);
        let mut y = cpu.zeros(n * o).unwrap();
        let dims = Dims {
            rows: n,
            inputs: i,
            outputs: o,
        };
        cpu.dense_forward(&x, &w, &b, dims, Activation::Linear, &mut y)
            .unwrap();
        assert_eq!(y, expected, "threads {threads}");
    }
}

/// Checks forward and backward of a linear layer against naive triple loops.
///
/// A float32 dot product of `k` terms is off by at most about `k * 2^-24`
/// times the sum of the absolute terms. For `k` up to 784 that is below
/// `1e-5 * sum(|terms|)`, the bound each entry is held to.
fn check_layout(cpu: &Cpu, n: usize, i: usize, o: usize, seed: u64) {
    let mut values = Values::new(seed);
    let x = values.uniform(n * i, 2.0);
    let w = values.uniform(o * i, 1.0);
    let b = values.uniform(o, 1.0);
    let dy_in = values.uniform(n * o, 1.0);
    let (xd, wd, dyd) = (wide(&x), wide(&w), wide(&dy_in));
    let dims = Dims {
        rows: n,
        inputs: i,
        outputs: o,
    };
    let case = format!("{n}x{i} · {i}x{o}, {} threads", cpu.threads());

    // Outputs start as NaN: every primitive must overwrite them, never accumulate.
    let mut y = vec![f32::NAN; n * o];
    cpu.dense_forward(&x, &w, &b, dims, Activation::Linear, &mut y)
        .unwrap();
    for r in 0..n {
        for c in 0..o {
            let terms = (0..i).map(|k| xd[r * i + k] * wd[c * i + k]);
            let (exact, bound) = terms.fold((f64::from(b[c]), f64::from(b[c]).abs()), |acc, t| {
                (acc.0 + t, acc.1 + t.abs())
            });
            let got = f64::from(y[r * o + c]);
            assert!(
                (got - exact).abs() <= 1e-5 * bound,
                "{case}: y[{r},{c}] = {got}, expected {exact}"
            );
        }
    }

    let mut dy = dy_in.clone();
    let (mut dw, mut db, mut dx) = (
        vec![f32::NAN; o * i],
        vec![f32::NAN; o],
        vec![f32::NAN; n * i],
    );
    cpu.dense_backward(
        &x,
        &w,
        &y,
        dims,
        Activation::Linear,
        &mut dy,
        &mut dw,
        &mut db,
        Some(&mut dx),
    )
    .unwrap();
    for c in 0..o {
        for k in 0..i {
            let terms = (0..n).map(|r| dyd[r * o + c] * xd[r * i + k]);
            let (exact, bound) = terms.fold((0.0, 0.0), |acc, t| (acc.0 + t, acc.1 + t.abs()));
            let got = f64::from(dw[c * i + k]);
            assert!(
                (got - exact).abs() <= 1e-5 * bound,
                "{case}: dw[{c},{k}] = {got}, expected {exact}"
            );
        }
        let terms = (0..n).map(|r| dyd[r * o + c]);
        let (exact, bound) = terms.fold((0.0, 0.0), |acc, t| (acc.0 + t, acc.1 + t.abs()));
        let got = f64::from(db[c]);
        assert!(
            (got - exact).abs() <= 1e-5 * bound,
            "{case}: db[{c}] = {got}, expected {exact}"
        );
    }
    for r in 0..n {
        for k in 0..i {
            let terms = (0..o).map(|c| dyd[r * o + c] * wd[c * i + k]);
            let (exact, bound) = terms.fold((0.0, 0.0), |acc, t| (acc.0 + t, acc.1 + t.abs()));
            let got = f64::from(dx[r * i + k]);
            assert!(
                (got - exact).abs() <= 1e-5 * bound,
                "{case}: dx[{r},{k}] = {got}, expected {exact}"
            );
        }
    }

    // The first layer skips dx; dw and db must not change.
    let mut dy2 = dy_in.clone();
    let (mut dw2, mut db2) = (vec![f32::NAN; o * i], vec![f32::NAN; o]);
    cpu.dense_backward(
        &x,
        &w,
        &y,
        dims,
        Activation::Linear,
        &mut dy2,
        &mut dw2,
        &mut db2,
        None,
    )
    .unwrap();
    assert_eq!(dw2, dw, "{case}: dw without dx");
    assert_eq!(db2, db, "{case}: db without dx");
}

#[test]
fn dense_layout_matches_naive_on_non_square_shapes() {
    // Batch of one, the fixture's shape, inner dimension 1, an MNIST output
    // layer, odd sizes, a product split across threads by output columns
    // (ragged last part), and one past that size, which the gemm crate
    // splits itself.
    let shapes = [
        (1, 3, 4),
        (2, 3, 4),
        (5, 1, 7),
        (3, 784, 10),
        (33, 17, 65),
        (64, 300, 100),
        (260, 520, 260),
    ];
    for threads in [1, 2] {
        let cpu = cpu(threads);
        for (seed, &(n, i, o)) in shapes.iter().enumerate() {
            check_layout(&cpu, n, i, o, seed as u64);
        }
    }
}

#[test]
fn f32_products_stay_exact() {
    let text = fs::read_to_string(data_path("cases/f32-products/tf32_probe.txt")).unwrap();
    let cpu = cpu(1);
    let mut checked = 0;
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let parts: Vec<Vec<f32>> = line
            .split(';')
            .map(|p| p.split_whitespace().map(|v| v.parse().unwrap()).collect())
            .collect();
        let (x, w, expected) = (&parts[0], &parts[1], parts[2][0]);
        let dims = Dims {
            rows: 1,
            inputs: x.len(),
            outputs: 1,
        };
        let mut y = vec![0.0];
        cpu.dense_forward(x, w, &vec![0.0], dims, Activation::Linear, &mut y)
            .unwrap();
        assert_eq!(y[0], expected, "x {x:?} · w {w:?}");
        checked += 1;
    }
    assert_eq!(checked, 4);

    // The same exactness through the packed, multi-threaded kernel: x = [2049, 1, 0, ...]
    // and a first output column [1, 0, ...] in a 64x300x100 product.
    let cpu = self::cpu(2);
    let (n, i, o) = (64, 300, 100);
    let mut x = vec![0.0; n * i];
    for r in 0..n {
        x[r * i] = 2049.0;
        x[r * i + 1] = 1.0;
    }
    let mut w = vec![0.0; o * i];
    w[0] = 1.0;
    let dims = Dims {
        rows: n,
        inputs: i,
        outputs: o,
    };
    let mut y = vec![0.0; n * o];
    cpu.dense_forward(&x, &w, &vec![0.0; o], dims, Activation::Linear, &mut y)
        .unwrap();
    assert!(
        (0..n).all(|r| y[r * o] == 2049.0),
        "first column {:?}",
        &y[..o]
    );
}

/// Gradient of `L = sum(r * act(x · wᵀ + b))` by central differences of the f64 reference.
///
/// The reference runs in f64, so a step of 1e-4 leaves a truncation error near
/// 1e-8 and a rounding error near 1e-12. What remains is the backend's f32
/// rounding, measured near 1e-7 of the gradient's scale, inside the 1e-5 tolerance.
#[test]
fn dense_backward_matches_finite_differences_for_every_activation() {
    let (n, i, o) = (4, 5, 6);
    let h = 1e-4;
    let cpu = cpu(1);
    for (seed, act) in ALL_ACTIVATIONS.into_iter().enumerate() {
        let mut values = Values::new(100 + seed as u64);
        let x = values.uniform(n * i, 1.5);
        let w = values.uniform(o * i, 1.0);
        let b = values.uniform(o, 0.5);
        let r = values.uniform(n * o, 1.0);
        let (xd, wd, bd, rd) = (wide(&x), wide(&w), wide(&b), wide(&r));
        let dims = Dims {
            rows: n,
            inputs: i,
            outputs: o,
        };

        // The differences are only valid away from the kink of the ReLU family: a
        // step h moves a pre-activation by at most 1.5 h (|x| and |w| are below 1.5).
        let z = reference::dense_z(&xd, &wd, &bd, n, i, o);
        let nearest_kink = z.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
        assert!(
            nearest_kink > 10.0 * h,
            "{act}: a pre-activation sits at {nearest_kink}"
        );

        let mut y = vec![0.0; n * o];
        cpu.dense_forward(&x, &w, &b, dims, act, &mut y).unwrap();
        let y_ref = reference::dense(&xd, &wd, &bd, n, i, o, act);
        assert_close(&format!("{act} forward"), &y, &y_ref, 1e-5, 1.0);

        let loss = |x: &[f64], w: &[f64], b: &[f64]| -> f64 {
            let y = reference::dense(x, w, b, n, i, o, act);
            y.iter().zip(&rd).map(|(a, b)| a * b).sum()
        };
        let dx_ref = central_differences(&xd, h, |p| loss(p, &wd, &bd));
        let dw_ref = central_differences(&wd, h, |p| loss(&xd, p, &bd));
        let db_ref = central_differences(&bd, h, |p| loss(&xd, &wd, p));

        let mut dy = r.clone();
        let (mut dw, mut db, mut dx) = (vec![0.0; o * i], vec![0.0; o], vec![0.0; n * i]);
        cpu.dense_backward(
            &x,
            &w,
            &y,
            dims,
            act,
            &mut dy,
            &mut dw,
            &mut db,
            Some(&mut dx),
        )
        .unwrap();
        assert_close(&format!("{act} dx"), &dx, &dx_ref, 1e-5, 1.0);
        assert_close(&format!("{act} dw"), &dw, &dw_ref, 1e-5, 1.0);
        assert_close(&format!("{act} db"), &db, &db_ref, 1e-5, 1.0);
    }
}

/// Runs the backend's loss on one batch and returns `(loss_sum, stats, dlogits)`.
#[allow(clippy::too_many_arguments)]
fn run_loss(
    cpu: &Cpu,
    kind: LossKind,
    logits: &[f32],
    targets: &[f32],
    weights: Option<&[f32]>,
    rows: usize,
    outputs: usize,
) -> (densetrain::backend::StatsValues, Vec<f32>) {
    let mut stats = cpu.new_stats().unwrap();
    let mut dlogits = vec![f32::NAN; rows * outputs];
    let weights = weights.map(<[f32]>::to_vec);
    cpu.loss(
        kind,
        &logits.to_vec(),
        &targets.to_vec(),
        weights.as_ref(),
        rows,
        outputs,
        0,
        Some(&mut dlogits),
        &mut stats,
    )
    .unwrap();
    (cpu.read_stats(&stats).unwrap(), dlogits)
}

/// Computes the mean class-weighted loss of a batch in f64.
fn reference_loss(
    kind: LossKind,
    z: &[f64],
    targets: &[f32],
    weights: Option<&[f32]>,
    rows: usize,
    outputs: usize,
) -> f64 {
    let total: f64 = (0..rows)
        .map(|r| {
            let row = &z[r * outputs..(r + 1) * outputs];
            let t = targets[r];
            let weight = weights.map_or(1.0, |w| f64::from(w[t as usize]));
            let loss = match kind {
                LossKind::SoftmaxCrossEntropy => reference::softmax_cross_entropy(row, t as usize),
                LossKind::SigmoidBinaryCrossEntropy => {
                    reference::sigmoid_cross_entropy(row[0], f64::from(t))
                }
                LossKind::MeanSquaredError => (row[0] - f64::from(t)).powi(2),
            };
            weight * loss
        })
        .sum();
    total / rows as f64
}

/// Loss values and gradients against the f64 reference and its central differences
/// (step 1e-4 on an f64 function: error near 1e-8, against a 1e-5 tolerance).
#[test]
fn losses_match_finite_differences_with_class_weights() {
    let cpu = cpu(1);
    let rows = 6;
    let cases = [
        (
            LossKind::SoftmaxCrossEntropy,
            4,
            Some(vec![0.5, 2.0, 1.0, 3.0]),
        ),
        (LossKind::SoftmaxCrossEntropy, 3, None),
        (
            LossKind::SigmoidBinaryCrossEntropy,
            1,
            Some(vec![0.25, 4.0]),
        ),
        (LossKind::SigmoidBinaryCrossEntropy, 1, None),
        (LossKind::MeanSquaredError, 1, None),
    ];
    for (seed, (kind, outputs, weights)) in cases.into_iter().enumerate() {
        let mut values = Values::new(200 + seed as u64);
        let logits = values.uniform(rows * outputs, 4.0);
        let targets = match kind {
            LossKind::SoftmaxCrossEntropy => values.classes(rows, outputs),
            LossKind::SigmoidBinaryCrossEntropy => values.classes(rows, 2),
            LossKind::MeanSquaredError => values.uniform(rows, 3.0),
        };
        let case = format!("{kind:?} with weights {weights:?}");
        let weights = weights.as_deref();
        let (stats, dlogits) = run_loss(&cpu, kind, &logits, &targets, weights, rows, outputs);

        let z = wide(&logits);
        let expected = reference_loss(kind, &z, &targets, weights, rows, outputs);
        let got = stats.loss_sum / rows as f64;
        assert!(
            (got - expected).abs() <= 1e-6 * expected.abs(),
            "{case}: loss {got}, expected {expected}"
        );
        assert_eq!(stats.rows, rows as f64);
        assert_eq!(stats.nonfinite_batch, None);

        let grad_ref = central_differences(&z, 1e-4, |p| {
            reference_loss(kind, p, &targets, weights, rows, outputs)
        });
        let scale = grad_ref.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        assert_close(&case, &dlogits, &grad_ref, 1e-5, scale);
    }
}

#[test]
fn loss_counts_correct_rows_and_absolute_errors() {
    let cpu = cpu(1);
    // Row 0 predicts class 0 (right), row 1 class 1 (target 2, wrong), row 2 class 2 (right).
    let logits = [2.0, 1.0, 0.0, 0.0, 3.0, 1.0, -1.0, 0.5, 4.0];
    let (stats, _) = run_loss(
        &cpu,
        LossKind::SoftmaxCrossEntropy,
        &logits,
        &[0.0, 2.0, 2.0],
        None,
        3,
        3,
    );
    assert_eq!(stats.correct, 2.0);
    assert_eq!(stats.abs_error_sum, 0.0);

    // Probabilities above 0.5 predict 1; exactly 0.5 (logit 0) predicts 0.
    let (stats, _) = run_loss(
        &cpu,
        LossKind::SigmoidBinaryCrossEntropy,
        &[1.5, -0.5, 0.0, 2.0],
        &[1.0, 0.0, 0.0, 0.0],
        None,
        4,
        1,
    );
    assert_eq!(stats.correct, 3.0);

    let (stats, dlogits) = run_loss(
        &cpu,
        LossKind::MeanSquaredError,
        &[1.5, -2.0],
        &[0.5, 1.0],
        None,
        2,
        1,
    );
    assert_eq!(stats.abs_error_sum, 4.0);
    assert_eq!(stats.loss_sum, 10.0);
    assert_eq!(stats.correct, 0.0);
    // d/dz of mean((z - t)^2) is 2 (z - t) / N.
    assert_eq!(dlogits, vec![1.0, -3.0]);
}

/// Parses `values,target,expected` rows; the values are space-separated.
fn read_loss_vectors(relative: &str) -> Vec<(Vec<f32>, f32, f64)> {
    let text = fs::read_to_string(data_path(relative)).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let logits = fields[0]
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            (
                logits,
                fields[1].parse().unwrap(),
                fields[2].parse().unwrap(),
            )
        })
        .collect()
}

#[track_caller]
fn check_extreme(case: &str, got: f64, expected: f64, dlogits: &[f32]) {
    if expected.abs() < 1e-12 {
        assert!(
            (got - expected).abs() <= 1e-12,
            "{case}: loss {got}, expected {expected}"
        );
    } else {
        let rel = ((got - expected) / expected).abs();
        assert!(rel <= 1e-5, "{case}: loss {got}, expected {expected}");
    }
    for &g in dlogits {
        assert!(
            g.is_finite() && (-1.0..=1.0).contains(&g),
            "{case}: gradient {g}"
        );
    }
}

#[test]
fn softmax_cross_entropy_stays_finite_on_extreme_logits() {
    let cases = read_loss_vectors("cases/loss-extremes/unit_vectors.csv");
    assert_eq!(cases.len(), 6);
    let cpu = cpu(1);
    for (logits, target, expected) in cases {
        let kind = LossKind::SoftmaxCrossEntropy;
        let (stats, dlogits) = run_loss(&cpu, kind, &logits, &[target], None, 1, logits.len());
        let case = format!("logits {logits:?}, target {target}");
        check_extreme(&case, stats.loss_sum, expected, &dlogits);
        assert_eq!(stats.nonfinite_batch, None, "{case}");
        // The target's gradient entry is p - 1 and the others are p: together they sum to 0.
        let sum: f32 = dlogits.iter().sum();
        assert!(sum.abs() < 1e-6, "{case}: gradient sums to {sum}");
    }
}

#[test]
fn sigmoid_cross_entropy_stays_finite_on_extreme_logits() {
    let cases = read_loss_vectors("cases/loss-extremes/unit_vectors_binary.csv");
    assert_eq!(cases.len(), 4);
    let cpu = cpu(1);
    for (logits, target, expected) in cases {
        let kind = LossKind::SigmoidBinaryCrossEntropy;
        let (stats, dlogits) = run_loss(&cpu, kind, &logits, &[target], None, 1, 1);
        let case = format!("logit {}, target {target}", logits[0]);
        check_extreme(&case, stats.loss_sum, expected, &dlogits);
        if expected < 1e-40 {
            assert!(stats.loss_sum <= 1e-40, "{case}: loss {}", stats.loss_sum);
        }
    }
}

#[test]
fn nonfinite_loss_raises_flag_once() {
    let cpu = cpu(1);
    let mut stats = cpu.new_stats().unwrap();
    let good = vec![0.5, -0.5, 1.0];
    let bad = vec![0.5, f32::NAN, 1.0];
    let targets = vec![0.0];
    let kind = LossKind::SoftmaxCrossEntropy;
    cpu.loss(kind, &good, &targets, None, 1, 3, 4, None, &mut stats)
        .unwrap();
    assert_eq!(cpu.read_stats(&stats).unwrap().nonfinite_batch, None);
    cpu.loss(kind, &bad, &targets, None, 1, 3, 5, None, &mut stats)
        .unwrap();
    cpu.loss(kind, &bad, &targets, None, 1, 3, 6, None, &mut stats)
        .unwrap();
    assert_eq!(cpu.read_stats(&stats).unwrap().nonfinite_batch, Some(5));
    cpu.reset_stats(&mut stats).unwrap();
    assert_eq!(cpu.read_stats(&stats).unwrap().nonfinite_batch, None);

    // An infinite logit makes softmax inf - inf: the flag goes up as well.
    let inf = vec![f32::INFINITY, 0.0, 0.0];
    cpu.loss(kind, &inf, &targets, None, 1, 3, 9, None, &mut stats)
        .unwrap();
    assert_eq!(cpu.read_stats(&stats).unwrap().nonfinite_batch, Some(9));
}

#[test]
fn loss_rejects_invalid_targets_and_shapes() {
    let cpu = cpu(1);
    let mut stats = cpu.new_stats().unwrap();
    let logits = vec![0.0; 6];
    let kind = LossKind::SoftmaxCrossEntropy;
    let err = cpu
        .loss(
            kind,
            &logits,
            &vec![0.0, 3.0],
            None,
            2,
            3,
            0,
            None,
            &mut stats,
        )
        .unwrap_err();
    assert!(err.to_string().contains("target 3"), "{err}");
    let err = cpu
        .loss(
            kind,
            &logits,
            &vec![0.0, 1.5],
            None,
            2,
            3,
            0,
            None,
            &mut stats,
        )
        .unwrap_err();
    assert!(err.to_string().contains("not a class index"), "{err}");
    let err = cpu
        .loss(kind, &logits, &vec![0.0], None, 2, 3, 0, None, &mut stats)
        .unwrap_err();
    assert!(err.to_string().contains("targets"), "{err}");
    let short_weights = vec![1.0, 1.0];
    let err = cpu
        .loss(
            kind,
            &logits,
            &vec![0.0, 1.0],
            Some(&short_weights),
            2,
            3,
            0,
            None,
            &mut stats,
        )
        .unwrap_err();
    assert!(err.to_string().contains("class_weights"), "{err}");
    let err = cpu
        .loss(
            LossKind::MeanSquaredError,
            &logits,
            &vec![0.0; 6],
            Some(&short_weights),
            6,
            1,
            0,
            None,
            &mut stats,
        )
        .unwrap_err();
    assert!(err.to_string().contains("classification only"), "{err}");
    let err = cpu
        .loss(
            LossKind::SigmoidBinaryCrossEntropy,
            &logits,
            &vec![0.0, 1.0],
            None,
            2,
            3,
            0,
            None,
            &mut stats,
        )
        .unwrap_err();
    assert!(err.to_string().contains("1 output"), "{err}");
    assert_eq!(cpu.read_stats(&stats).unwrap().rows, 0.0);
}

#[test]
fn predict_returns_probabilities_and_values() {
    let cpu = cpu(1);
    let logits = vec![1000.0, 0.0, -1000.0, 1.0, 2.0, 3.0];
    let mut out = vec![0.0; 6];
    cpu.predict(LossKind::SoftmaxCrossEntropy, &logits, 2, 3, &mut out)
        .unwrap();
    assert_eq!(&out[..3], &[1.0, 0.0, 0.0]);
    let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
    let total: f64 = e.iter().sum();
    let expected: Vec<f64> = e.iter().map(|v| v / total).collect();
    assert_close("softmax", &out[3..], &expected, 1e-6, 0.0);

    let logits = vec![0.0, 100.0, -100.0, -1000.0];
    let mut out = vec![0.0; 4];
    cpu.predict(LossKind::SigmoidBinaryCrossEntropy, &logits, 4, 1, &mut out)
        .unwrap();
    assert_eq!(out[0], 0.5);
    assert_eq!(out[1], 1.0);
    assert!(out[2] > 0.0, "sigmoid(-100) = {}", out[2]);
    assert!(out[2] < 1e-40, "sigmoid(-100) = {}", out[2]);
    assert_eq!(out[3], 0.0);

    let mut out = vec![0.0; 4];
    cpu.predict(LossKind::MeanSquaredError, &logits, 4, 1, &mut out)
        .unwrap();
    assert_eq!(out, logits);
}

fn mask(step: u64, layer: u64, rate: f32) -> DropoutMask {
    DropoutMask {
        seed: 17,
        step,
        layer,
        rate,
    }
}

#[test]
fn dropout_mask_keying_and_backward() {
    let len = 40_000;
    let y = Values::new(300).uniform(len, 2.0);
    let rate = 0.3;
    let scale = 1.0 / (1.0 - rate);
    for threads in [1, 2] {
        let cpu = cpu(threads);
        let m = mask(5, 1, rate);
        let mut out = vec![0.0; len];
        cpu.dropout_forward(&y, len, m, &mut out).unwrap();

        let mut kept = 0;
        for e in 0..len {
            let keep = rng::dropout_keep(m.seed, m.step, m.layer, e as u64, rate);
            if keep {
                kept += 1;
                assert_eq!(out[e], y[e] * scale, "kept element {e}");
            } else {
                assert_eq!(out[e], 0.0, "dropped element {e}");
            }
        }
        let share = kept as f64 / len as f64;
        assert!((share - 0.7).abs() < 0.01, "kept share {share}");

        let mut again = vec![0.0; len];
        cpu.dropout_forward(&y, len, m, &mut again).unwrap();
        assert_eq!(again, out, "same key, same mask");
        for other in [
            mask(6, 1, rate),
            mask(5, 2, rate),
            DropoutMask { seed: 18, ..m },
        ] {
            cpu.dropout_forward(&y, len, other, &mut again).unwrap();
            assert_ne!(again, out, "{other:?} draws the same mask as {m:?}");
        }

        let mut dy = vec![1.0; len];
        cpu.dropout_backward(&mut dy, len, m).unwrap();
        for (e, &g) in dy.iter().enumerate() {
            let keep = rng::dropout_keep(m.seed, m.step, m.layer, e as u64, rate);
            let expected = if keep { scale } else { 0.0 };
            assert_eq!(g, expected, "backward element {e}");
        }
    }
}

#[test]
fn dropout_rate_zero_and_length() {
    let cpu = cpu(1);
    let y = vec![1.5, -2.0, 3.0, 4.0];
    let mut out = vec![9.0; 4];
    cpu.dropout_forward(&y, 3, mask(0, 0, 0.0), &mut out)
        .unwrap();
    assert_eq!(out, vec![1.5, -2.0, 3.0, 9.0]);
    let err = cpu
        .dropout_forward(&y, 3, mask(0, 0, 1.0), &mut out)
        .unwrap_err();
    assert!(err.to_string().contains("dropout rate 1"), "{err}");
}

#[test]
fn gather_rows_copies_indexed_rows() {
    let cpu = cpu(1);
    let src = vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
    let idx = vec![2, 0, 1, 2];
    let mut dst = vec![0.0; 6];
    cpu.gather_rows(&src, 2, &idx, 1, 3, &mut dst).unwrap();
    assert_eq!(dst, vec![0.0, 1.0, 10.0, 11.0, 20.0, 21.0]);
    cpu.gather_rows(&src, 2, &idx, 0, 2, &mut dst).unwrap();
    assert_eq!(&dst[..4], &[20.0, 21.0, 0.0, 1.0]);
    let err = cpu
        .gather_rows(&src, 2, &vec![3], 0, 1, &mut dst)
        .unwrap_err();
    assert!(err.to_string().contains("index 3"), "{err}");
    let err = cpu.gather_rows(&src, 2, &idx, 3, 2, &mut dst).unwrap_err();
    assert!(err.to_string().contains("past the 4 indices"), "{err}");
}

#[test]
fn count_zeros_adds_per_column() {
    let cpu = cpu(1);
    let y = vec![0.0, 1.0, 0.0, 0.0, 2.0, -1.0];
    let mut counts = vec![1.0, 0.0, 0.0];
    cpu.count_zeros(&y, 2, 3, &mut counts).unwrap();
    assert_eq!(counts, vec![3.0, 0.0, 1.0]);
}

#[test]
fn clip_scale_bounds_the_global_norm() {
    let cpu = cpu(1);
    let a = vec![3.0, 0.0];
    let b = vec![0.0, 4.0, 0.0];
    let mut scale = vec![0.0];
    cpu.clip_scale(&[&a, &b], 1.0, &mut scale).unwrap();
    // The global norm is 5.
    assert!(
        (f64::from(scale[0]) - 1.0 / (5.0 + 1e-6)).abs() < 1e-7,
        "{}",
        scale[0]
    );
    cpu.clip_scale(&[&a, &b], 10.0, &mut scale).unwrap();
    assert_eq!(scale[0], 1.0);
}

#[test]
fn primitives_reject_short_buffers() {
    let cpu = cpu(1);
    let dims = Dims {
        rows: 2,
        inputs: 3,
        outputs: 4,
    };
    let mut y = vec![0.0; 8];
    let err = cpu
        .dense_forward(
            &vec![0.0; 5],
            &vec![0.0; 12],
            &vec![0.0; 4],
            dims,
            Activation::Relu,
            &mut y,
        )
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("'x' is too short: it has 5 values"),
        "{err}"
    );
    let err = cpu
        .dense_backward(
            &vec![0.0; 6],
            &vec![0.0; 12],
            &y,
            dims,
            Activation::Relu,
            &mut vec![0.0; 8],
            &mut vec![0.0; 11],
            &mut vec![0.0; 4],
            None,
        )
        .unwrap_err();
    assert!(err.to_string().contains("'dw'"), "{err}");
    let err = cpu.write(&[1.0, 2.0], &mut vec![0.0; 3]).unwrap_err();
    assert!(err.to_string().contains("2 host values"), "{err}");
}

#[test]
fn description_names_threads() {
    assert_eq!(cpu(1).description(), "cpu (1 thread)");
    assert_eq!(cpu(2).description(), "cpu (2 threads)");
    assert!(Cpu::new(0).unwrap().threads() >= 1);
}
