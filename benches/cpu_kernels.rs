//! Kernel timings of the CPU backend on the benchmark task's shapes.
//!
//! Task: 784-256-128-10 with ReLU, softmax cross-entropy, Adam, batch 128.
//! Groups:
//! - `gemm`: each matrix product of one training step, as the backend runs
//!   it with the gemm crate and its own threading. These are the floor for
//!   the layer passes.
//! - `gemm_choice`: the backend's products against the `matrixmultiply`
//!   crate on the same shapes. Set `MATMUL_NUM_THREADS` to the same thread
//!   count, because without it matrixmultiply uses all physical cores (at
//!   most 4).
//! - `layer`: `dense_forward` and `dense_backward` per layer (their matrix
//!   products plus the fused bias, activation and bias-gradient passes);
//! - `pass`: batch gathering, the fused softmax cross-entropy with its
//!   gradient, and one Adam step on the 784x256 weight tensor;
//! - `step`: one whole `Network::train_step`;
//! - `wide`: the products of the 784-2048-2048-10 network at batch 512, as
//!   the backend runs them, and one whole training step of it.
//!
//! Throughput is in floating-point operations (2 per multiply-add), so
//! criterion's `Gelem/s` reads as GFLOP/s; elementwise passes report values.
//!
//! Run: `cargo bench --bench cpu_kernels` (all cores) or
//! `DENSETRAIN_BENCH_THREADS=1 cargo bench --bench cpu_kernels` (one thread).
//! A filter argument selects groups, e.g. `cargo bench --bench cpu_kernels -- wide`.

mod common;

use common::{adam, spec};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use densetrain::backend::cpu::{Cpu, CpuStats, Operand};
use densetrain::backend::{Backend, Dims, LossKind};
use densetrain::model::{Activation, Network, init};
use std::hint::black_box;
use std::time::Duration;

/// Batch rows of the small task.
const BATCH: usize = 128;
/// Training rows per epoch of the small task (the batch source for gathering).
const TRAIN_ROWS: usize = 54_000;
/// Layer widths of the small task.
const SMALL: [usize; 4] = [784, 256, 128, 10];
/// Layer widths and batch of the wide network.
const WIDE: [usize; 4] = [784, 2048, 2048, 10];
const WIDE_BATCH: usize = 512;

/// Returns a backend with the threads `DENSETRAIN_BENCH_THREADS` sets (all cores when unset).
fn backend() -> Cpu {
    let threads = common::bench_threads().unwrap_or_else(|message| common::exit_with(&message));
    Cpu::new(threads).expect("the thread count was checked against the cores")
}

/// Deterministic values in `[0, 1)` (a 64-bit linear congruential generator).
fn uniform(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

/// Class indices `0..classes` as f32, as the loss expects them.
fn labels(rows: usize, classes: usize) -> Vec<f32> {
    (0..rows).map(|r| ((r * 7 + 3) % classes) as f32).collect()
}

/// Times the three products of each layer of a network, as the backend runs
/// them: forward `x[N, I] · wᵀ`, weight gradient `dzᵀ · x`, input gradient
/// `dz · w` (none for the first layer).
fn bench_products(c: &mut Criterion, group_name: &str, widths: [usize; 4], rows: usize) {
    let cpu = backend();
    let mut group = c.benchmark_group(group_name);
    for l in 0..3 {
        let (i, o) = (widths[l], widths[l + 1]);
        let x = uniform(rows * i, 1);
        let w = uniform(o * i, 2);
        let dz = uniform(rows * o, 3);
        let mut y = vec![0.0; rows * o];
        let mut dw = vec![0.0; o * i];
        let mut dx = vec![0.0; rows * i];
        let flops = (2 * rows * i * o) as u64;
        group.throughput(Throughput::Elements(flops));
        let shape = format!("{i}x{o}");
        group.bench_function(BenchmarkId::new("forward", &shape), |bench| {
            let (a, b) = (Operand::plain(&x, rows, i), Operand::transposed(&w, o, i));
            bench.iter(|| cpu.matmul(black_box(&mut y), a, b).unwrap())
        });
        group.bench_function(BenchmarkId::new("weight_grad", &shape), |bench| {
            let (a, b) = (
                Operand::transposed(&dz, rows, o),
                Operand::plain(&x, rows, i),
            );
            bench.iter(|| cpu.matmul(black_box(&mut dw), a, b).unwrap())
        });
        if l > 0 {
            group.bench_function(BenchmarkId::new("input_grad", &shape), |bench| {
                let (a, b) = (Operand::plain(&dz, rows, o), Operand::plain(&w, o, i));
                bench.iter(|| cpu.matmul(black_box(&mut dx), a, b).unwrap())
            });
        }
    }
    group.finish();
}

/// Compares the backend's products (the `gemm` crate) with the
/// `matrixmultiply` crate, ndarray's default, on the benchmark shapes. Each
/// case is `(name, m, n, k, b transposed)`, with `b` stored `[n, k]` when
/// transposed, as the forward pass's weights are.
fn gemm_choice(c: &mut Criterion) {
    let cases = [
        ("small_forward_784x256", BATCH, 256, 784, true),
        ("small_weight_grad_784x256", 256, 784, BATCH, false),
        ("small_forward_256x128", BATCH, 128, 256, true),
        ("wide_forward_2048x2048", WIDE_BATCH, 2048, 2048, true),
    ];
    let cpu = backend();
    let mut group = c.benchmark_group("gemm_choice");
    for (name, m, n, k, b_transposed) in cases {
        let a = uniform(m * k, 1);
        let b = uniform(k * n, 2);
        let mut dst = vec![0.0; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let b_operand = if b_transposed {
            Operand::transposed(&b, n, k)
        } else {
            Operand::plain(&b, k, n)
        };
        let (b_rs, b_cs) = if b_transposed {
            (1, k as isize)
        } else {
            (n as isize, 1)
        };
        let other = |dst: &mut [f32]| {
            // SAFETY: `a` has m * k values read with row stride k, `b` has
            // k * n values read with the strides of its stored layout, and
            // `dst` has m * n values written with row stride n.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    b_rs,
                    b_cs,
                    0.0,
                    dst.as_mut_ptr(),
                    n as isize,
                    1,
                )
            }
        };

        // Both must compute the same product, or the comparison means nothing.
        let mut expected = vec![0.0; m * n];
        other(&mut expected);
        cpu.matmul(&mut dst, Operand::plain(&a, m, k), b_operand)
            .unwrap();
        let worst = dst
            .iter()
            .zip(&expected)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{name}: the two products differ by {worst}");

        group.bench_function(BenchmarkId::new("gemm", name), |bench| {
            let a = Operand::plain(&a, m, k);
            bench.iter(|| cpu.matmul(black_box(&mut dst), a, b_operand).unwrap())
        });
        group.bench_function(BenchmarkId::new("matrixmultiply", name), |bench| {
            bench.iter(|| other(black_box(&mut dst)))
        });
    }
    group.finish();
}

fn gemm_small(c: &mut Criterion) {
    bench_products(c, "gemm", SMALL, BATCH);
}

fn layers(c: &mut Criterion) {
    let cpu = backend();
    let mut group = c.benchmark_group("layer");
    for l in 0..3 {
        let (i, o) = (SMALL[l], SMALL[l + 1]);
        let dims = Dims {
            rows: BATCH,
            inputs: i,
            outputs: o,
        };
        let act = if l < 2 {
            Activation::Relu
        } else {
            Activation::Linear
        };
        let x = cpu.upload(&uniform(BATCH * i, 1)).unwrap();
        let w = cpu.upload(&uniform(o * i, 2)).unwrap();
        let b = cpu.upload(&uniform(o, 3)).unwrap();
        let dy0 = uniform(BATCH * o, 4);
        let mut y = cpu.zeros(BATCH * o).unwrap();
        let mut dy = cpu.upload(&dy0).unwrap();
        let mut dw = cpu.zeros(o * i).unwrap();
        let mut db = cpu.zeros(o).unwrap();
        let mut dx = cpu.zeros(BATCH * i).unwrap();
        let shape = format!("{i}x{o}");
        cpu.dense_forward(&x, &w, &b, dims, act, &mut y).unwrap();
        group.throughput(Throughput::Elements((2 * BATCH * i * o) as u64));
        group.bench_function(BenchmarkId::new("dense_forward", &shape), |bench| {
            bench.iter(|| {
                cpu.dense_forward(&x, &w, &b, dims, act, black_box(&mut y))
                    .unwrap()
            })
        });
        let products = if l > 0 { 2 } else { 1 };
        group.throughput(Throughput::Elements((products * 2 * BATCH * i * o) as u64));
        group.bench_function(BenchmarkId::new("dense_backward", &shape), |bench| {
            bench.iter(|| {
                // dense_backward overwrites dy with dz; restoring it keeps every
                // iteration on the same values (a 128xO copy, small beside the products).
                cpu.write(&dy0, &mut dy).unwrap();
                let dx = if l > 0 { Some(&mut dx) } else { None };
                cpu.dense_backward(&x, &w, &y, dims, act, &mut dy, &mut dw, &mut db, dx)
                    .unwrap()
            })
        });
    }
    group.finish();
}

fn passes(c: &mut Criterion) {
    let cpu = backend();
    let mut group = c.benchmark_group("pass");

    let cols = SMALL[0];
    let source = cpu.upload(&uniform(TRAIN_ROWS * cols, 5)).unwrap();
    let order: Vec<u32> = (0..TRAIN_ROWS as u32)
        .map(|r| (r as u64 * 7_919 % TRAIN_ROWS as u64) as u32)
        .collect();
    let idx = cpu.upload_idx(&order).unwrap();
    let mut batch = cpu.zeros(BATCH * cols).unwrap();
    let mut start = 0;
    group.throughput(Throughput::Elements((BATCH * cols) as u64));
    group.bench_function("gather_rows_128x784", |bench| {
        bench.iter(|| {
            cpu.gather_rows(&source, cols, &idx, start, BATCH, black_box(&mut batch))
                .unwrap();
            start = (start + BATCH) % (TRAIN_ROWS - BATCH);
        })
    });

    let classes = SMALL[3];
    let logits = cpu.upload(&uniform(BATCH * classes, 6)).unwrap();
    let targets = cpu.upload(&labels(BATCH, classes)).unwrap();
    let mut dlogits = cpu.zeros(BATCH * classes).unwrap();
    let mut stats: CpuStats = cpu.new_stats().unwrap();
    group.throughput(Throughput::Elements((BATCH * classes) as u64));
    group.bench_function("softmax_cross_entropy_128x10", |bench| {
        bench.iter(|| {
            cpu.loss(
                LossKind::SoftmaxCrossEntropy,
                &logits,
                &targets,
                None,
                BATCH,
                classes,
                0,
                Some(black_box(&mut dlogits)),
                &mut stats,
            )
            .unwrap()
        })
    });

    let len = SMALL[0] * SMALL[1];
    let config = adam();
    let mut param = cpu.upload(&uniform(len, 7)).unwrap();
    let grad = cpu.upload(&uniform(len, 8)).unwrap();
    let mut slots = vec![cpu.zeros(len).unwrap(), cpu.zeros(len).unwrap()];
    let mut stats: CpuStats = cpu.new_stats().unwrap();
    let mut t = 0;
    group.throughput(Throughput::Elements(len as u64));
    group.bench_function("adam_784x256", |bench| {
        bench.iter(|| {
            t += 1;
            let rule = config.rule(t, config.lr, true);
            cpu.optimizer_step(
                &rule,
                black_box(&mut param),
                &grad,
                &mut slots,
                None,
                &mut stats,
            )
            .unwrap()
        })
    });
    group.finish();
}

/// Times `Network::train_step` on one batch of `rows` rows of random pixels.
fn bench_step(c: &mut Criterion, group_name: &str, widths: [usize; 4], rows: usize) {
    let cpu = backend();
    let spec = spec(widths);
    let config = adam();
    let mut net = Network::new(&cpu, &spec, &init::init_params(&spec, 1), &config, rows).unwrap();
    let x = cpu.upload(&uniform(rows * widths[0], 9)).unwrap();
    let targets = cpu.upload(&labels(rows, widths[3])).unwrap();
    let mut stats: CpuStats = cpu.new_stats().unwrap();
    let mut step = 0;
    let mut group = c.benchmark_group(group_name);
    // 6 flops per parameter and row, less the first layer's input gradient.
    let params = spec.parameter_count();
    let flops = 6 * params * rows - 2 * rows * widths[0] * widths[1];
    group.throughput(Throughput::Elements(flops as u64));
    group.bench_function(format!("train_step_batch_{rows}"), |bench| {
        bench.iter(|| {
            net.train_step(
                &cpu, &x, &targets, rows, None, &config, config.lr, step, 1, step, &mut stats,
            )
            .unwrap();
            step += 1;
        })
    });
    group.finish();
}

fn step_small(c: &mut Criterion) {
    bench_step(c, "step", SMALL, BATCH);
}

fn wide(c: &mut Criterion) {
    bench_products(c, "wide_gemm", WIDE, WIDE_BATCH);
    bench_step(c, "wide_step", WIDE, WIDE_BATCH);
}

fn quick() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(700))
}

criterion_group! {
    name = kernels;
    config = quick();
    targets = gemm_small, gemm_choice, layers, passes, step_small, wide
}
criterion_main!(kernels);
