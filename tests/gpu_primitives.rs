//! Every primitive of the CUDA backend against the CPU backend, on fresh
//! random inputs, with outputs poisoned with NaN before each call.
//!
//! Tolerances: kernels that repeat the CPU's f32 operations in the same order
//! (built without fused multiply-adds) must match bit for bit: dropout,
//! gathers, zero counts, the activation gradient and bias sums, and the
//! optimizer updates. Transcendental functions (`exp`, `tanh`) may differ by
//! a few ulp between CUDA's and Rust's math libraries. Matrix products sum
//! in another order, so they are held to the f32 summation error bound of
//! `gpu_common::assert_within_sum_bound`.
//!
//! Each test prints why it skipped when no GPU works.

mod gpu_common;
mod reference;

use densetrain::backend::cuda::gemm::MatrixOperand;
use densetrain::backend::cuda::loader::KernelLoading;
use densetrain::backend::cuda::{Cuda, Precision};
use densetrain::backend::{Backend, Dims, DropoutMask, LossKind, StatsValues};
use densetrain::model::Activation;
use densetrain::optim::{EpsilonStyle, Optimizer, OptimizerConfig, UpdateRule};
use gpu_common::*;
use reference::Values;
use std::fs;

const ALL_ACTIVATIONS: [Activation; 6] = [
    Activation::Relu,
    Activation::LeakyRelu,
    Activation::Elu,
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Linear,
];

/// Shapes `(N, I, O)`: a batch of one, the layout fixture, an inner dimension
/// of one, an MNIST output layer, and sizes that are not multiples of a block.
const SHAPES: [(usize, usize, usize); 6] = [
    (1, 3, 4),
    (2, 3, 4),
    (5, 1, 7),
    (3, 784, 10),
    (33, 17, 65),
    (257, 129, 3),
];

#[test]
fn matmul_every_transpose_nonsquare() {
    let Some(gpu) = gpu("matmul_every_transpose_nonsquare") else {
        return;
    };
    let mut values = Values::new(1);
    for &(m, k, n) in &SHAPES {
        let a = values.uniform(m * k, 2.0);
        let b = values.uniform(k * n, 2.0);
        let bound = abs_product_bound(&a, &b, m, k, n);
        let exact: Vec<f32> = reference_product(&a, &b, m, k, n);
        for (a_t, b_t) in [(false, false), (false, true), (true, false), (true, true)] {
            // Store each operand transposed when the product reads its transpose.
            let a_stored = if a_t { transpose(&a, m, k) } else { a.clone() };
            let b_stored = if b_t { transpose(&b, k, n) } else { b.clone() };
            let a_buf = gpu.upload(&a_stored).unwrap();
            let b_buf = gpu.upload(&b_stored).unwrap();
            let a_op = if a_t {
                MatrixOperand::transposed(&a_buf, k, m)
            } else {
                MatrixOperand::plain(&a_buf, m, k)
            };
            let b_op = if b_t {
                MatrixOperand::transposed(&b_buf, n, k)
            } else {
                MatrixOperand::plain(&b_buf, k, n)
            };
            let mut c = poisoned(&gpu, m * n);
            gpu.matmul(&mut c, a_op, b_op).unwrap();
            let got = gpu.download(&c).unwrap();
            let what = format!("[{m}x{k}]{} · [{k}x{n}]{}", tag(a_t), tag(b_t));
            assert_within_sum_bound(&what, &got, &exact, &bound, k);
        }
    }
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

fn tag(transposed: bool) -> &'static str {
    if transposed { "ᵀ" } else { "" }
}

/// `a[m, k] · b[k, n]` in f64, rounded to f32.
fn reference_product(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for r in 0..m {
        for c in 0..n {
            let sum: f64 = (0..k)
                .map(|j| f64::from(a[r * k + j]) * f64::from(b[j * n + c]))
                .sum();
            out[r * n + c] = sum as f32;
        }
    }
    out
}

#[test]
fn dense_layout_fixture_exact() {
    let Some(gpu) = gpu("dense_layout_fixture_exact") else {
        return;
    };
    let text = fs::read_to_string(test_data("cases/dense-layout/gemm_case.txt")).unwrap();
    let sections = read_sections(&text);
    let x = section(&sections, "X").concat();
    let w_in_out = section(&sections, "W").concat(); // [I, O] as the fixture stores it
    let b = section(&sections, "b").concat();
    // The section's first two rows are Y; the single-buffer copies follow.
    let expected = section(&sections, "Y_expected")[..2].concat();
    assert_eq!(
        (x.len(), w_in_out.len(), b.len(), expected.len()),
        (6, 12, 4, 8)
    );
    let w = transpose(&w_in_out, 3, 4); // [O, I] as densetrain stores it
    let dims = Dims {
        rows: 2,
        inputs: 3,
        outputs: 4,
    };
    let mut y = poisoned(&gpu, 8);
    gpu.dense_forward(
        &gpu.upload(&x).unwrap(),
        &gpu.upload(&w).unwrap(),
        &gpu.upload(&b).unwrap(),
        dims,
        Activation::Linear,
        &mut y,
    )
    .unwrap();
    assert_eq!(gpu.download(&y).unwrap(), expected);
}

#[test]
fn dense_forward_matches_cpu() {
    let Some(gpu) = gpu("dense_forward_matches_cpu") else {
        return;
    };
    let cpu = cpu();
    let mut values = Values::new(2);
    for &(n, i, o) in &SHAPES {
        for act in ALL_ACTIVATIONS {
            let x = values.uniform(n * i, 1.5);
            let w = values.uniform(o * i, 1.0);
            let b = values.uniform(o, 0.5);
            let dims = Dims {
                rows: n,
                inputs: i,
                outputs: o,
            };
            let mut y_cpu = vec![f32::NAN; n * o];
            cpu.dense_forward(&x, &w, &b, dims, act, &mut y_cpu)
                .unwrap();
            let mut y_gpu = poisoned(&gpu, n * o);
            let (xg, wg, bg) = (
                gpu.upload(&x).unwrap(),
                gpu.upload(&w).unwrap(),
                gpu.upload(&b).unwrap(),
            );
            gpu.dense_forward(&xg, &wg, &bg, dims, act, &mut y_gpu)
                .unwrap();
            let got = gpu.download(&y_gpu).unwrap();
            // Every activation's slope is at most 1, so the product's error bound
            // carries over; a few ulp more cover exp and tanh.
            let wt = transpose(&w, o, i);
            let mut bound = abs_product_bound(&x, &wt, n, i, o);
            for (j, v) in bound.iter_mut().enumerate() {
                *v += f64::from(b[j % o]).abs() + 4.0 * f64::from(y_cpu[j]).abs();
            }
            assert_within_sum_bound(&format!("{act:?} {n}x{i}x{o}"), &got, &y_cpu, &bound, i + 1);
        }
    }
}

#[test]
fn activation_alone_within_ulps() {
    // With one input of 1 the product is exact, so this isolates the kernel's activation.
    let Some(gpu) = gpu("activation_alone_within_ulps") else {
        return;
    };
    let cpu = cpu();
    let mut values = Values::new(3);
    let o = 1031;
    let mut w = values.uniform(o, 6.0);
    w.extend([0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 20.0, -20.0]);
    let o = w.len();
    let b = values.uniform(o, 0.25);
    let dims = Dims {
        rows: 1,
        inputs: 1,
        outputs: o,
    };
    for act in ALL_ACTIVATIONS {
        let mut y_cpu = vec![f32::NAN; o];
        cpu.dense_forward(&vec![1.0], &w, &b, dims, act, &mut y_cpu)
            .unwrap();
        let mut y_gpu = poisoned(&gpu, o);
        gpu.dense_forward(
            &gpu.upload(&[1.0]).unwrap(),
            &gpu.upload(&w).unwrap(),
            &gpu.upload(&b).unwrap(),
            dims,
            act,
            &mut y_gpu,
        )
        .unwrap();
        let exact = matches!(
            act,
            Activation::Relu | Activation::LeakyRelu | Activation::Linear
        );
        let max_ulp = if exact { 0 } else { 4 };
        assert_ulps(
            &format!("{act:?}"),
            &gpu.download(&y_gpu).unwrap(),
            &y_cpu,
            max_ulp,
        );
    }
}

#[test]
fn dense_backward_matches_cpu() {
    let Some(gpu) = gpu("dense_backward_matches_cpu") else {
        return;
    };
    let cpu = cpu();
    let mut values = Values::new(4);
    for &(n, i, o) in &SHAPES {
        for act in ALL_ACTIVATIONS {
            let x = values.uniform(n * i, 1.5);
            let w = values.uniform(o * i, 1.0);
            // Outputs in the activation's range, so act'(y) is meaningful; ReLU gets exact zeros.
            let mut y = values.uniform(n * o, 0.9);
            if matches!(act, Activation::Relu) {
                y.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            if matches!(act, Activation::Sigmoid) {
                y.iter_mut().for_each(|v| *v = 0.5 + 0.5 * *v);
            }
            let dy = values.uniform(n * o, 1.0);
            let dims = Dims {
                rows: n,
                inputs: i,
                outputs: o,
            };
            let mut dz_cpu = dy.clone();
            let (mut dw_cpu, mut db_cpu, mut dx_cpu) = (
                vec![f32::NAN; o * i],
                vec![f32::NAN; o],
                vec![f32::NAN; n * i],
            );
            cpu.dense_backward(
                &x,
                &w,
                &y,
                dims,
                act,
                &mut dz_cpu,
                &mut dw_cpu,
                &mut db_cpu,
                Some(&mut dx_cpu),
            )
            .unwrap();
            let mut dz = gpu.upload(&dy).unwrap();
            let (mut dw, mut db, mut dx) = (
                poisoned(&gpu, o * i),
                poisoned(&gpu, o),
                poisoned(&gpu, n * i),
            );
            gpu.dense_backward(
                &gpu.upload(&x).unwrap(),
                &gpu.upload(&w).unwrap(),
                &gpu.upload(&y).unwrap(),
                dims,
                act,
                &mut dz,
                &mut dw,
                &mut db,
                Some(&mut dx),
            )
            .unwrap();
            let case = format!("{act:?} {n}x{i}x{o}");
            // dz and db repeat the CPU's operations in its order.
            assert_same(&format!("{case} dz"), &gpu.download(&dz).unwrap(), &dz_cpu);
            assert_same(&format!("{case} db"), &gpu.download(&db).unwrap(), &db_cpu);
            // dw[O, I] = dzᵀ · x sums over N; dx[N, I] = dz · w sums over O.
            let dz_t = transpose(&dz_cpu, n, o);
            let dw_bound = abs_product_bound(&dz_t, &x, o, n, i);
            assert_within_sum_bound(
                &format!("{case} dw"),
                &gpu.download(&dw).unwrap(),
                &dw_cpu,
                &dw_bound,
                n,
            );
            let dx_bound = abs_product_bound(&dz_cpu, &w, n, o, i);
            assert_within_sum_bound(
                &format!("{case} dx"),
                &gpu.download(&dx).unwrap(),
                &dx_cpu,
                &dx_bound,
                o,
            );
        }
    }
}

#[test]
fn dropout_masks_match_cpu() {
    let Some(gpu) = gpu("dropout_masks_match_cpu") else {
        return;
    };
    let cpu = cpu();
    let mut values = Values::new(5);
    let len = 100_003;
    let y = values.uniform(len, 3.0);
    for (rate, step, layer) in [
        (0.0, 0, 0),
        (0.3, 7, 1),
        (0.5, 123_456, 2),
        (0.9, 1 << 40, 0),
    ] {
        let mask = DropoutMask {
            seed: 42,
            step,
            layer,
            rate,
        };
        let mut out_cpu = vec![f32::NAN; len];
        cpu.dropout_forward(&y, len, mask, &mut out_cpu).unwrap();
        let mut out = poisoned(&gpu, len);
        gpu.dropout_forward(&gpu.upload(&y).unwrap(), len, mask, &mut out)
            .unwrap();
        assert_same(
            &format!("forward rate {rate}"),
            &gpu.download(&out).unwrap(),
            &out_cpu,
        );

        let mut dy_cpu = y.clone();
        cpu.dropout_backward(&mut dy_cpu, len, mask).unwrap();
        let mut dy = gpu.upload(&y).unwrap();
        gpu.dropout_backward(&mut dy, len, mask).unwrap();
        assert_same(
            &format!("backward rate {rate}"),
            &gpu.download(&dy).unwrap(),
            &dy_cpu,
        );
    }
}

#[test]
fn gather_rows_matches_cpu() {
    let Some(gpu) = gpu("gather_rows_matches_cpu") else {
        return;
    };
    let cpu = cpu();
    let mut values = Values::new(6);
    let (rows, cols) = (1001, 37);
    let src = values.uniform(rows * cols, 5.0);
    let order = densetrain::rng::epoch_permutation(9, 0, rows);
    let (start, count) = (250, 333);
    let mut dst_cpu = vec![f32::NAN; count * cols];
    cpu.gather_rows(&src, cols, &order, start, count, &mut dst_cpu)
        .unwrap();
    let mut dst = poisoned(&gpu, count * cols);
    let src_gpu = gpu.upload(&src).unwrap();
    let idx = gpu.upload_idx(&order).unwrap();
    gpu.gather_rows(&src_gpu, cols, &idx, start, count, &mut dst)
        .unwrap();
    assert_same("gathered rows", &gpu.download(&dst).unwrap(), &dst_cpu);

    let bad = gpu.upload_idx(&[0, rows as u32]).unwrap();
    let err = gpu
        .gather_rows(&src_gpu, cols, &bad, 0, 2, &mut dst)
        .unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
}

#[test]
fn count_zeros_matches_cpu() {
    let Some(gpu) = gpu("count_zeros_matches_cpu") else {
        return;
    };
    let cpu = cpu();
    let mut values = Values::new(7);
    let (rows, cols) = (515, 259);
    let y: Vec<f32> = values
        .uniform(rows * cols, 1.0)
        .into_iter()
        .map(|v| v.max(0.0))
        .collect();
    let start = values
        .uniform(cols, 3.0)
        .into_iter()
        .map(|v| v.abs().round())
        .collect::<Vec<_>>();
    let mut counts_cpu = start.clone();
    cpu.count_zeros(&y, rows, cols, &mut counts_cpu).unwrap();
    let mut counts = gpu.upload(&start).unwrap();
    gpu.count_zeros(&gpu.upload(&y).unwrap(), rows, cols, &mut counts)
        .unwrap();
    assert_same("zero counts", &gpu.download(&counts).unwrap(), &counts_cpu);
}

/// Runs `loss` on both backends and compares the statistics and gradients.
fn compare_loss(
    gpu: &Cuda,
    kind: LossKind,
    rows: usize,
    outputs: usize,
    weighted: bool,
    seed: u64,
) {
    let cpu = cpu();
    let mut values = Values::new(seed);
    let logits = values.uniform(rows * outputs, 8.0);
    let targets = match kind {
        LossKind::SoftmaxCrossEntropy => values.classes(rows, outputs),
        LossKind::SigmoidBinaryCrossEntropy => values.classes(rows, 2),
        LossKind::MeanSquaredError => values.uniform(rows, 3.0),
    };
    let classes = if kind == LossKind::SigmoidBinaryCrossEntropy {
        2
    } else {
        outputs
    };
    let weights: Option<Vec<f32>> = weighted.then(|| {
        values
            .uniform(classes, 1.0)
            .into_iter()
            .map(|v| 1.0 + v.abs())
            .collect()
    });

    let mut stats_cpu = cpu.new_stats().unwrap();
    let mut grad_cpu = vec![f32::NAN; rows * outputs];
    cpu.loss(
        kind,
        &logits,
        &targets,
        weights.as_ref(),
        rows,
        outputs,
        3,
        Some(&mut grad_cpu),
        &mut stats_cpu,
    )
    .unwrap();
    let cpu_values = cpu.read_stats(&stats_cpu).unwrap();

    let mut stats = gpu.new_stats().unwrap();
    let mut grad = poisoned(gpu, rows * outputs);
    let weights_gpu = weights.as_ref().map(|w| gpu.upload(w).unwrap());
    gpu.loss(
        kind,
        &gpu.upload(&logits).unwrap(),
        &gpu.upload(&targets).unwrap(),
        weights_gpu.as_ref(),
        rows,
        outputs,
        3,
        Some(&mut grad),
        &mut stats,
    )
    .unwrap();
    let gpu_values = gpu.read_stats(&stats).unwrap();
    let case = format!("{kind:?} {rows}x{outputs} weighted {weighted}");
    // Row losses use the same f64 formulas. Only exp and log may differ in the
    // last f64 bit, and the block sums are added in another order.
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.abs().max(1.0);
    assert!(
        close(gpu_values.loss_sum, cpu_values.loss_sum),
        "{case}: loss {} vs {}",
        gpu_values.loss_sum,
        cpu_values.loss_sum
    );
    assert_eq!(gpu_values.rows, cpu_values.rows, "{case}: rows");
    assert_eq!(gpu_values.correct, cpu_values.correct, "{case}: correct");
    assert!(
        close(gpu_values.abs_error_sum, cpu_values.abs_error_sum),
        "{case}: abs error"
    );
    assert_eq!(gpu_values.nonfinite_batch, None, "{case}: flag");
    // Gradients are f64 values rounded to f32: at most one rounding step apart.
    assert_ulps(
        &format!("{case} gradient"),
        &gpu.download(&grad).unwrap(),
        &grad_cpu,
        1,
    );
}

#[test]
fn losses_match_cpu() {
    let Some(gpu) = gpu("losses_match_cpu") else {
        return;
    };
    for (rows, outputs) in [(1, 3), (257, 10), (1000, 7)] {
        compare_loss(
            &gpu,
            LossKind::SoftmaxCrossEntropy,
            rows,
            outputs,
            false,
            10,
        );
        compare_loss(&gpu, LossKind::SoftmaxCrossEntropy, rows, outputs, true, 11);
    }
    for rows in [1, 300, 1025] {
        compare_loss(
            &gpu,
            LossKind::SigmoidBinaryCrossEntropy,
            rows,
            1,
            false,
            12,
        );
        compare_loss(&gpu, LossKind::SigmoidBinaryCrossEntropy, rows, 1, true, 13);
        compare_loss(&gpu, LossKind::MeanSquaredError, rows, 1, false, 14);
    }
}

#[test]
fn loss_extremes_stay_finite() {
    let Some(gpu) = gpu("loss_extremes_stay_finite") else {
        return;
    };
    for (file, kind) in [
        ("unit_vectors.csv", LossKind::SoftmaxCrossEntropy),
        (
            "unit_vectors_binary.csv",
            LossKind::SigmoidBinaryCrossEntropy,
        ),
    ] {
        let text = fs::read_to_string(test_data(&format!("cases/loss-extremes/{file}"))).unwrap();
        let mut checked = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')).skip(1) {
            let parts: Vec<&str> = line.split(',').collect();
            let logits: Vec<f32> = parts[0]
                .split_whitespace()
                .map(|v| v.parse().unwrap())
                .collect();
            let target: f32 = parts[1].parse().unwrap();
            let expected: f64 = parts[2].parse().unwrap();
            let outputs = logits.len();
            let mut stats = gpu.new_stats().unwrap();
            let mut grad = poisoned(&gpu, outputs);
            gpu.loss(
                kind,
                &gpu.upload(&logits).unwrap(),
                &gpu.upload(&[target]).unwrap(),
                None,
                1,
                outputs,
                0,
                Some(&mut grad),
                &mut stats,
            )
            .unwrap();
            let values = gpu.read_stats(&stats).unwrap();
            let case = format!("{file}: logits {logits:?}, target {target}");
            assert!(
                values.loss_sum.is_finite(),
                "{case}: loss {}",
                values.loss_sum
            );
            let err = (values.loss_sum - expected).abs();
            assert!(
                err <= 1e-6 * expected.abs().max(1e-30),
                "{case}: loss {} expected {expected}",
                values.loss_sum
            );
            for g in gpu.download(&grad).unwrap() {
                assert!(
                    g.is_finite() && (-1.0..=1.0).contains(&g),
                    "{case}: gradient {g}"
                );
            }
            assert_eq!(values.nonfinite_batch, None, "{case}");
            checked += 1;
        }
        assert!(checked >= 4, "{file}: {checked} cases");
    }
}

#[test]
fn nonfinite_flag_keeps_first_batch() {
    let Some(gpu) = gpu("nonfinite_flag_keeps_first_batch") else {
        return;
    };
    let mut stats = gpu.new_stats().unwrap();
    let targets = gpu.upload(&[0.0]).unwrap();
    let good = gpu.upload(&[0.5, -0.5, 1.0]).unwrap();
    let bad = gpu.upload(&[0.5, f32::NAN, 1.0]).unwrap();
    let kind = LossKind::SoftmaxCrossEntropy;
    gpu.loss(kind, &good, &targets, None, 1, 3, 4, None, &mut stats)
        .unwrap();
    assert_eq!(gpu.read_stats(&stats).unwrap().nonfinite_batch, None);
    gpu.loss(kind, &bad, &targets, None, 1, 3, 5, None, &mut stats)
        .unwrap();
    gpu.loss(kind, &bad, &targets, None, 1, 3, 6, None, &mut stats)
        .unwrap();
    assert_eq!(gpu.read_stats(&stats).unwrap().nonfinite_batch, Some(5));

    // A raised flag freezes every optimizer update.
    let mut param = gpu.upload(&[1.0, 2.0]).unwrap();
    let grad = gpu.upload(&[0.5, 0.5]).unwrap();
    let rule = config("sgd").rule(1, 0.1, true);
    gpu.optimizer_step(&rule, &mut param, &grad, &mut [], None, &mut stats)
        .unwrap();
    assert_eq!(gpu.download(&param).unwrap(), vec![1.0, 2.0]);
    gpu.reset_stats(&mut stats).unwrap();
    assert_eq!(gpu.read_stats(&stats).unwrap().nonfinite_batch, None);
    gpu.optimizer_step(&rule, &mut param, &grad, &mut [], None, &mut stats)
        .unwrap();
    let lr_g = 0.1f32 * 0.5f32;
    assert_eq!(gpu.download(&param).unwrap(), vec![1.0 - lr_g, 2.0 - lr_g]);

    // A target that is not a class index is an error when the statistics are read.
    let wrong = gpu.upload(&[3.5]).unwrap();
    gpu.loss(kind, &good, &wrong, None, 1, 3, 0, None, &mut stats)
        .unwrap();
    let err = gpu.read_stats(&stats).unwrap_err().to_string();
    assert!(
        err.contains("target 3.5 of batch row 0 is not a class index"),
        "{err}"
    );
}

#[test]
fn predictions_match_cpu() {
    let Some(gpu) = gpu("predictions_match_cpu") else {
        return;
    };
    let cpu = cpu();
    let mut values = Values::new(15);
    for (kind, rows, outputs) in [
        (LossKind::SoftmaxCrossEntropy, 301, 10),
        (LossKind::SigmoidBinaryCrossEntropy, 513, 1),
        (LossKind::MeanSquaredError, 77, 1),
    ] {
        let logits = values.uniform(rows * outputs, 30.0);
        let mut out_cpu = vec![f32::NAN; rows * outputs];
        cpu.predict(kind, &logits, rows, outputs, &mut out_cpu)
            .unwrap();
        let mut out = poisoned(&gpu, rows * outputs);
        gpu.predict(kind, &gpu.upload(&logits).unwrap(), rows, outputs, &mut out)
            .unwrap();
        assert_ulps(
            &format!("{kind:?}"),
            &gpu.download(&out).unwrap(),
            &out_cpu,
            1,
        );
    }
}

#[test]
fn clip_scale_matches_cpu() {
    let Some(gpu) = gpu("clip_scale_matches_cpu") else {
        return;
    };
    let cpu = cpu();
    let mut values = Values::new(16);
    let tensors: Vec<Vec<f32>> = [1, 1000, 70_001]
        .iter()
        .map(|&n| values.uniform(n, 0.3))
        .collect();
    for max_norm in [0.01, 1.0, 1e6] {
        let refs: Vec<&Vec<f32>> = tensors.iter().collect();
        let mut scale_cpu = vec![f32::NAN];
        cpu.clip_scale(&refs, max_norm, &mut scale_cpu).unwrap();
        let uploaded: Vec<_> = tensors.iter().map(|t| gpu.upload(t).unwrap()).collect();
        let gpu_refs: Vec<_> = uploaded.iter().collect();
        let mut scale = poisoned(&gpu, 1);
        gpu.clip_scale(&gpu_refs, max_norm, &mut scale).unwrap();
        assert_ulps(
            &format!("max norm {max_norm}"),
            &gpu.download(&scale).unwrap(),
            &scale_cpu,
            1,
        );
    }
}

fn config(name: &str) -> OptimizerConfig {
    let optimizer = Optimizer::with_defaults(name).unwrap();
    OptimizerConfig {
        optimizer,
        lr: optimizer.default_lr(),
        l2: 0.0,
        weight_decay: optimizer.default_weight_decay(),
        clipnorm: None,
    }
}

/// Lists every optimizer variant the kernels implement, with L2 and decoupled decay on.
fn optimizer_variants() -> Vec<(String, OptimizerConfig)> {
    let mut out = Vec::new();
    for name in ["sgd", "adam", "adamw", "rmsprop"] {
        out.push((name.to_string(), config(name)));
    }
    let mut momentum = config("sgd");
    momentum.optimizer = Optimizer::Sgd {
        momentum: 0.9,
        nesterov: false,
    };
    out.push(("sgd momentum".to_string(), momentum));
    let mut nesterov = momentum;
    nesterov.optimizer = Optimizer::Sgd {
        momentum: 0.9,
        nesterov: true,
    };
    out.push(("sgd nesterov".to_string(), nesterov));
    let mut torch_adam = config("adam");
    torch_adam.optimizer = Optimizer::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        epsilon_style: EpsilonStyle::Pytorch,
    };
    out.push(("adam pytorch epsilon".to_string(), torch_adam));
    let mut rms_momentum = config("rmsprop");
    rms_momentum.optimizer = Optimizer::RmsProp {
        rho: 0.9,
        momentum: 0.5,
        epsilon: 1e-7,
    };
    out.push(("rmsprop momentum".to_string(), rms_momentum));
    for (_, c) in &mut out {
        c.l2 = 1e-3;
        c.weight_decay = 0.01;
    }
    out
}

#[test]
fn optimizer_steps_match_cpu_bit_for_bit() {
    let Some(gpu) = gpu("optimizer_steps_match_cpu_bit_for_bit") else {
        return;
    };
    let cpu = cpu();
    let mut values = Values::new(17);
    let len = 70_001;
    for (name, config) in optimizer_variants() {
        for clipped in [false, true] {
            let mut w_cpu = values.uniform(len, 1.0);
            let mut w_gpu = gpu.upload(&w_cpu).unwrap();
            let slots = config.optimizer.slot_count();
            let mut s_cpu: Vec<Vec<f32>> = (0..slots).map(|_| vec![0.0; len]).collect();
            let mut s_gpu: Vec<_> = (0..slots).map(|_| gpu.zeros(len).unwrap()).collect();
            let (mut stats_cpu, mut stats_gpu) =
                (cpu.new_stats().unwrap(), gpu.new_stats().unwrap());
            let scale = vec![0.75f32];
            let scale_gpu = gpu.upload(&scale).unwrap();
            for t in 1..=3u64 {
                let g = values.uniform(len, 0.1);
                let rule: UpdateRule = config.rule(t, config.lr, true);
                cpu.optimizer_step(
                    &rule,
                    &mut w_cpu,
                    &g,
                    &mut s_cpu,
                    clipped.then_some(&scale),
                    &mut stats_cpu,
                )
                .unwrap();
                gpu.optimizer_step(
                    &rule,
                    &mut w_gpu,
                    &gpu.upload(&g).unwrap(),
                    &mut s_gpu,
                    clipped.then_some(&scale_gpu),
                    &mut stats_gpu,
                )
                .unwrap();
            }
            let case = format!("{name} clipped {clipped}");
            assert_same(
                &format!("{case} weights"),
                &gpu.download(&w_gpu).unwrap(),
                &w_cpu,
            );
            for (k, (sg, sc)) in s_gpu.iter().zip(&s_cpu).enumerate() {
                assert_same(&format!("{case} state {k}"), &gpu.download(sg).unwrap(), sc);
            }
            let (pc, pg) = (
                cpu.read_stats(&stats_cpu).unwrap().penalty_sum,
                gpu.read_stats(&stats_gpu).unwrap().penalty_sum,
            );
            assert!(pc > 0.0, "{case}: the L2 penalty was not accumulated");
            assert!(
                (pg - pc).abs() <= 1e-12 * pc,
                "{case}: penalty {pg} vs {pc}"
            );
        }
    }
}

#[test]
fn f32_products_stay_exact() {
    let Some(gpu) = gpu("f32_products_stay_exact") else {
        return;
    };
    let text = fs::read_to_string(test_data("cases/f32-products/tf32_probe.txt")).unwrap();
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
        let mut y = poisoned(&gpu, 1);
        gpu.dense_forward(
            &gpu.upload(x).unwrap(),
            &gpu.upload(w).unwrap(),
            &gpu.upload(&[0.0]).unwrap(),
            dims,
            Activation::Linear,
            &mut y,
        )
        .unwrap();
        assert_eq!(gpu.download(&y).unwrap()[0], expected, "x {x:?} · w {w:?}");
        checked += 1;
    }
    assert_eq!(checked, 4);

    // The same exactness in a product large enough for cuBLAS's tensor-core
    // kernels: x = [2049, 1, 0, ...] against a first output column [1, 0, ...].
    let (n, i, o) = (256, 512, 128);
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
    let mut y = poisoned(&gpu, n * o);
    gpu.dense_forward(
        &gpu.upload(&x).unwrap(),
        &gpu.upload(&w).unwrap(),
        &gpu.zeros(o).unwrap(),
        dims,
        Activation::Linear,
        &mut y,
    )
    .unwrap();
    let y = gpu.download(&y).unwrap();
    for r in 0..n {
        assert_eq!(
            y[r * o],
            2049.0,
            "row {r}: TF32 or another reduced precision was used"
        );
    }
}

/// The bf16 column of the f32-products probe: inputs rounded to 7 fraction bits, sums in f32.
const BF16_PROBE: [([f32; 2], [f32; 2], f32); 4] = [
    ([2049.0, 1.0], [1.0, 0.0], 2048.0),
    ([1.0, 1.0], [2049.0, 0.0], 2048.0),
    ([4097.0, 0.5], [1.0, 2.0], 4097.0),
    ([1.0 + 1.0 / 1024.0, 1.0], [1.0, 0.0], 1.0),
];

#[test]
fn bf16_probe_matches_half_rounding() {
    for (x, w, expected) in BF16_PROBE {
        let rounded: f32 = x
            .iter()
            .zip(&w)
            .map(|(a, b)| half::bf16::from_f32(*a).to_f32() * half::bf16::from_f32(*b).to_f32())
            .sum();
        assert_eq!(rounded, expected, "x {x:?} · w {w:?}");
    }
}

#[test]
fn bf16_products_round_inputs() {
    let Some(gpu) = gpu_with(
        "bf16_products_round_inputs",
        Precision::Bf16,
        KernelLoading::Auto,
    ) else {
        return;
    };
    for (x, w, expected) in BF16_PROBE {
        let dims = Dims {
            rows: 1,
            inputs: 2,
            outputs: 1,
        };
        let mut y = poisoned(&gpu, 1);
        gpu.dense_forward(
            &gpu.upload(&x).unwrap(),
            &gpu.upload(&w).unwrap(),
            &gpu.upload(&[0.0]).unwrap(),
            dims,
            Activation::Linear,
            &mut y,
        )
        .unwrap();
        assert_eq!(
            gpu.download(&y).unwrap()[0],
            expected,
            "bf16 x {x:?} · w {w:?}"
        );
    }
}

#[test]
fn nvrtc_kernels_match_embedded() {
    let Some(embedded) = gpu("nvrtc_kernels_match_embedded") else {
        return;
    };
    let Some(compiled) = gpu_with(
        "nvrtc_kernels_match_embedded (NVRTC)",
        Precision::F32,
        KernelLoading::Nvrtc,
    ) else {
        return;
    };
    eprintln!(
        "kernels: {} and {}",
        embedded.kernel_origin(),
        compiled.kernel_origin()
    );
    let mut values = Values::new(18);
    let (n, i, o) = (65, 33, 17);
    let (x, w, b) = (
        values.uniform(n * i, 1.0),
        values.uniform(o * i, 1.0),
        values.uniform(o, 1.0),
    );
    let dims = Dims {
        rows: n,
        inputs: i,
        outputs: o,
    };
    let run = |gpu: &Cuda| {
        let mut y = poisoned(gpu, n * o);
        let (xg, wg, bg) = (
            gpu.upload(&x).unwrap(),
            gpu.upload(&w).unwrap(),
            gpu.upload(&b).unwrap(),
        );
        gpu.dense_forward(&xg, &wg, &bg, dims, Activation::Tanh, &mut y)
            .unwrap();
        gpu.download(&y).unwrap()
    };
    assert_same("tanh layer", &run(&compiled), &run(&embedded));
}

#[test]
fn written_stats_accumulate_like_cpu() {
    let Some(gpu) = gpu("written_stats_accumulate_like_cpu") else {
        return;
    };
    let cpu = cpu();
    let restored = StatsValues {
        loss_sum: 17.25,
        rows: 40.0,
        correct: 31.0,
        abs_error_sum: 0.0,
        penalty_sum: 0.5,
        nonfinite_batch: None,
    };
    let mut gpu_stats = gpu.new_stats().unwrap();
    let mut cpu_stats = cpu.new_stats().unwrap();
    gpu.write_stats(&restored, &mut gpu_stats).unwrap();
    cpu.write_stats(&restored, &mut cpu_stats).unwrap();
    assert_eq!(gpu.read_stats(&gpu_stats).unwrap(), restored);

    // One more batch adds to the restored sums on both devices alike.
    let logits = [0.5, -0.5, 1.0, 2.0, 0.0, -1.0];
    let targets = [2.0, 0.0];
    let kind = LossKind::SoftmaxCrossEntropy;
    let (logits_gpu, targets_gpu) = (gpu.upload(&logits).unwrap(), gpu.upload(&targets).unwrap());
    gpu.loss(
        kind,
        &logits_gpu,
        &targets_gpu,
        None,
        2,
        3,
        9,
        None,
        &mut gpu_stats,
    )
    .unwrap();
    let (logits_cpu, targets_cpu) = (cpu.upload(&logits).unwrap(), cpu.upload(&targets).unwrap());
    cpu.loss(
        kind,
        &logits_cpu,
        &targets_cpu,
        None,
        2,
        3,
        9,
        None,
        &mut cpu_stats,
    )
    .unwrap();
    let (on_gpu, on_cpu) = (
        gpu.read_stats(&gpu_stats).unwrap(),
        cpu.read_stats(&cpu_stats).unwrap(),
    );
    assert_eq!(on_gpu.rows, on_cpu.rows);
    assert_eq!(on_gpu.correct, on_cpu.correct);
    assert!((on_gpu.loss_sum - on_cpu.loss_sum).abs() <= 1e-5 * on_cpu.loss_sum);

    // A restored non-finite flag keeps its batch.
    let flagged = StatsValues {
        nonfinite_batch: Some(7),
        ..restored
    };
    gpu.write_stats(&flagged, &mut gpu_stats).unwrap();
    assert_eq!(gpu.read_stats(&gpu_stats).unwrap().nonfinite_batch, Some(7));
}
