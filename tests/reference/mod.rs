//! f64 reference math for the backend tests: naive dense layers, activations,
//! losses and a deterministic generator of test values.

#![allow(dead_code)]

use densetrain::model::{Activation, ELU_ALPHA, LEAKY_RELU_SLOPE};
use densetrain::rng::Stream;
use std::path::PathBuf;

/// Path of a file under `tests/data/`.
pub fn data_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(relative)
}

/// Deterministic uniform values for test inputs.
pub struct Values(Stream);

impl Values {
    pub fn new(seed: u64) -> Self {
        Self(Stream::new(seed, 0x7e57))
    }

    /// Draws `len` values uniform in `[-scale, scale)`, rounded to f32.
    pub fn uniform(&mut self, len: usize, scale: f64) -> Vec<f32> {
        (0..len)
            .map(|_| ((2.0 * self.0.next_f64() - 1.0) * scale) as f32)
            .collect()
    }

    /// Draws `len` class indices below `classes`, stored as f32.
    pub fn classes(&mut self, len: usize, classes: usize) -> Vec<f32> {
        (0..len).map(|_| self.0.below(classes) as f32).collect()
    }
}

/// Widens f32 values to f64.
pub fn wide(values: &[f32]) -> Vec<f64> {
    values.iter().map(|&v| f64::from(v)).collect()
}

/// Applies `act` in f64 (the same definitions as `Activation::apply`).
pub fn activate(act: Activation, z: f64) -> f64 {
    match act {
        Activation::Relu => z.max(0.0),
        Activation::LeakyRelu => {
            if z > 0.0 {
                z
            } else {
                f64::from(LEAKY_RELU_SLOPE) * z
            }
        }
        Activation::Elu => {
            if z > 0.0 {
                z
            } else {
                f64::from(ELU_ALPHA) * z.exp_m1()
            }
        }
        Activation::Tanh => z.tanh(),
        Activation::Sigmoid => 1.0 / (1.0 + (-z).exp()),
        Activation::Linear => z,
    }
}

/// Naive dense pre-activation: `z[N, O] = x[N, I] · w[O, I]ᵀ + b[O]`.
pub fn dense_z(x: &[f64], w: &[f64], b: &[f64], n: usize, i: usize, o: usize) -> Vec<f64> {
    let mut z = vec![0.0; n * o];
    for r in 0..n {
        for c in 0..o {
            let mut sum = b[c];
            for k in 0..i {
                sum += x[r * i + k] * w[c * i + k];
            }
            z[r * o + c] = sum;
        }
    }
    z
}

/// Naive dense layer with activation.
pub fn dense(
    x: &[f64],
    w: &[f64],
    b: &[f64],
    n: usize,
    i: usize,
    o: usize,
    act: Activation,
) -> Vec<f64> {
    dense_z(x, w, b, n, i, o)
        .into_iter()
        .map(|z| activate(act, z))
        .collect()
}

/// Softmax cross-entropy of one row, `log(sum(exp(z))) - z[t]`, computed stably.
pub fn softmax_cross_entropy(z: &[f64], target: usize) -> f64 {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = z.iter().map(|&v| (v - max).exp()).sum();
    sum.ln() + max - z[target]
}

/// Binary cross-entropy of one logit, `-t log(sigmoid(z)) - (1 - t) log(1 - sigmoid(z))`.
pub fn sigmoid_cross_entropy(z: f64, target: f64) -> f64 {
    z.max(0.0) - z * target + (-z.abs()).exp().ln_1p()
}

/// Central difference `(f(p + h) - f(p - h)) / 2h` of `f` at each entry of `point`.
pub fn central_differences(point: &[f64], h: f64, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
    let mut p = point.to_vec();
    (0..point.len())
        .map(|j| {
            let saved = p[j];
            p[j] = saved + h;
            let up = f(&p);
            p[j] = saved - h;
            let down = f(&p);
            p[j] = saved;
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// Asserts `|actual - expected| <= tol * max(|expected|, floor)` for each entry.
#[track_caller]
pub fn assert_close(what: &str, actual: &[f32], expected: &[f64], tol: f64, floor: f64) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    for (j, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let err = (f64::from(a) - e).abs();
        let bound = tol * e.abs().max(floor);
        assert!(
            err <= bound,
            "{what}[{j}]: got {a}, expected {e} (error {err:e} above {bound:e})"
        );
    }
}
