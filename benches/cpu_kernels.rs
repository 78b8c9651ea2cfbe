//! Kernel timings of the CPU backend on the benchmark task's shapes.
//!
//! Task: 784-256-128-10 with ReLU, softmax cross-entropy, Adam, batch 128.
//! Groups:
//! - `gemm`: the bare `gemm` crate on each matrix product of one training
//!   step, with the backend's threading rule (the floor for the layer passes);
//! - `layer`: `dense_forward` and `dense_backward` per layer (their matrix
//!   products plus the fused bias, activation and bias-gradient passes);
//! - `pass`: batch gathering, the fused softmax cross-entropy with its
//!   gradient, and one Adam step on the 784x256 weight tensor;
//! - `step`: one whole `Network::train_step`;
//! - `wide`: the bare `gemm` crate on the forward products of the
//!   784-2048-2048-10 network at batch 512, and one whole training step of it.
//!
//! Throughput is in floating-point operations (2 per multiply-add), so
//! criterion's `Gelem/s` reads as GFLOP/s; elementwise passes report values.
//!
//! Run: `cargo bench --bench cpu_kernels` (all cores) or
//! `DENSETRAIN_BENCH_THREADS=1 cargo bench --bench cpu_kernels` (one thread).
//! A filter argument selects groups, e.g. `cargo bench --bench cpu_kernels -- wide`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use densetrain::backend::cpu::{Cpu, CpuStats};
use densetrain::backend::{Backend, Dims, LossKind};
use densetrain::model::{Activation, Init, ModelSpec, Network, init};
use densetrain::optim::{Optimizer, OptimizerConfig};
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

/// Threads from `DENSETRAIN_BENCH_THREADS`, or 0 (all cores).
fn threads() -> usize {
    std::env::var("DENSETRAIN_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn backend() -> Cpu {
    Cpu::new(threads()).expect("DENSETRAIN_BENCH_THREADS must not exceed the core count")
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

fn adam() -> OptimizerConfig {
    OptimizerConfig {
        optimizer: Optimizer::with_defaults("adam").expect("adam is a known optimizer"),
        lr: 1e-3,
        l2: 0.0,
        weight_decay: 0.0,
        clipnorm: None,
    }
}

fn spec(widths: [usize; 4]) -> ModelSpec {
    ModelSpec {
        inputs: widths[0],
        hidden: widths[1..3].to_vec(),
        activation: Activation::Relu,
        outputs: widths[3],
        loss: LossKind::SoftmaxCrossEntropy,
        init: Init::He,
        dropout: 0.0,
    }
}

/// The `gemm` crate's product `dst[m, n] = a · b`, threaded as the backend threads it.
struct Gemm {
    threads: usize,
    pool: rayon::ThreadPool,
}

/// One matrix-product operand: data with (row stride, column stride).
struct Mat<'a> {
    data: &'a [f32],
    rs: isize,
    cs: isize,
}

impl Gemm {
    fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("the benchmark's thread pool starts");
        Self { threads, pool }
    }

    fn run(&self, m: usize, n: usize, k: usize, a: &Mat<'_>, b: &Mat<'_>, dst: &mut [f32]) {
        assert!(
            a.data.len() >= m * k,
            "left operand shorter than [{m}, {k}]"
        );
        assert!(
            b.data.len() >= k * n,
            "right operand shorter than [{k}, {n}]"
        );
        assert!(dst.len() >= m * n, "destination shorter than [{m}, {n}]");
        let mut product = |parallelism| {
            // SAFETY: the assertions above bound every operand, the strides
            // address elements of row-major or transposed shapes inside them,
            // and `dst` is borrowed mutably, so it aliases neither input.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.data.as_ptr(),
                    a.cs,
                    a.rs,
                    b.data.as_ptr(),
                    b.cs,
                    b.rs,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        };
        // The backend's rule: threads for products of 2^18 multiply-adds or more.
        if self.threads > 1 && m * n * k >= 1 << 18 {
            self.pool
                .install(|| product(gemm::Parallelism::Rayon(self.threads)));
        } else {
            product(gemm::Parallelism::None);
        }
    }
}

/// Times the three products of each layer of a network: forward
/// `x[N, I] · wᵀ`, weight gradient `dzᵀ · x`, input gradient `dz · w`
/// (none for the first layer).
fn bench_products(c: &mut Criterion, group_name: &str, widths: [usize; 4], rows: usize) {
    let gemm = Gemm::new(threads());
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
            let a = Mat {
                data: &x,
                rs: i as isize,
                cs: 1,
            };
            let b = Mat {
                data: &w,
                rs: 1,
                cs: i as isize,
            };
            bench.iter(|| gemm.run(rows, o, i, &a, &b, black_box(&mut y)))
        });
        group.bench_function(BenchmarkId::new("weight_grad", &shape), |bench| {
            let a = Mat {
                data: &dz,
                rs: 1,
                cs: o as isize,
            };
            let b = Mat {
                data: &x,
                rs: i as isize,
                cs: 1,
            };
            bench.iter(|| gemm.run(o, i, rows, &a, &b, black_box(&mut dw)))
        });
        if l > 0 {
            group.bench_function(BenchmarkId::new("input_grad", &shape), |bench| {
                let a = Mat {
                    data: &dz,
                    rs: o as isize,
                    cs: 1,
                };
                let b = Mat {
                    data: &w,
                    rs: i as isize,
                    cs: 1,
                };
                bench.iter(|| gemm.run(rows, i, o, &a, &b, black_box(&mut dx)))
            });
        }
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
    targets = gemm_small, layers, passes, step_small, wide
}
criterion_main!(kernels);
