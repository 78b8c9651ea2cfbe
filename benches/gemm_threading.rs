//! How to spread one large matrix product over the cores: the gemm crate's
//! own threading (what `Cpu::matmul` runs above its split limit) against a
//! split by output columns, one single-threaded gemm call per thread (what
//! it runs below). Both run the wide network's products (784-2048-2048-10,
//! batch 512) through `Cpu::matmul_threaded`, with the backend's operand
//! layouts.
//!
//! The two ways alternate within each round, each going first in turn, so a
//! change in the host's load reaches both alike. The ratio of their times per
//! round is therefore steadier on a shared machine than two separate timings.
//!
//! Run: `cargo bench --bench gemm_threading [-- ROUNDS]` (default 12 rounds),
//! with `DENSETRAIN_BENCH_THREADS=N` to use N threads (default all cores).

use densetrain::backend::cpu::{Cpu, Operand, ProductThreading};
use std::time::Instant;

/// Calls of each way per round.
const CALLS: usize = 5;

/// Runs one product with `threading`.
fn product(
    cpu: &Cpu,
    threading: ProductThreading,
    dst: &mut [f32],
    a: Operand<'_>,
    b: Operand<'_>,
) {
    cpu.matmul_threaded(dst, a, b, threading)
        .expect("the benchmark's shapes match their buffers");
}

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 16_777_216.0
                - 0.5
        })
        .collect()
}

fn main() {
    let rounds = std::env::args()
        .skip(1)
        .find_map(|arg| arg.parse::<usize>().ok())
        .unwrap_or(12)
        .max(1);
    let threads = std::env::var("DENSETRAIN_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let cpu = Cpu::new(threads).expect("DENSETRAIN_BENCH_THREADS must not exceed the core count");
    println!("{threads} thread(s), {rounds} rounds of {CALLS} calls per way");
    println!(
        "| product | split GFLOP/s (best) | gemm-threaded GFLOP/s (best) | threaded time / split time: median (min-max) |"
    );
    println!("|---|---|---|---|");

    const BATCH: usize = 512;
    for (inputs, outputs) in [(784, 2048), (2048, 2048)] {
        let x = values(BATCH * inputs, 1);
        let w = values(outputs * inputs, 2);
        let dy = values(BATCH * outputs, 3);
        // Weights are stored [outputs, inputs], as in the backend. Each entry
        // is the name, the operands a and b, and the product's m, n and k.
        let products = [
            (
                format!("forward {BATCH}x{inputs} · ({outputs}x{inputs})ᵀ"),
                Operand::plain(&x, BATCH, inputs),
                Operand::transposed(&w, outputs, inputs),
                (BATCH, outputs, inputs),
            ),
            (
                format!("weight grad ({BATCH}x{outputs})ᵀ · {BATCH}x{inputs}"),
                Operand::transposed(&dy, BATCH, outputs),
                Operand::plain(&x, BATCH, inputs),
                (outputs, inputs, BATCH),
            ),
            (
                format!("input grad {BATCH}x{outputs} · {outputs}x{inputs}"),
                Operand::plain(&dy, BATCH, outputs),
                Operand::plain(&w, outputs, inputs),
                (BATCH, inputs, outputs),
            ),
        ];
        for (name, a, b, (m, n, k)) in products {
            let flops = 2.0 * (m * n * k) as f64;
            let mut split_out = vec![0.0; m * n];
            let mut threaded_out = vec![0.0; m * n];
            product(&cpu, ProductThreading::ColumnSplit, &mut split_out, a, b);
            product(&cpu, ProductThreading::GemmCrate, &mut threaded_out, a, b);
            let largest = split_out
                .iter()
                .zip(&threaded_out)
                .map(|(s, t)| (s - t).abs() / (1.0 + t.abs()))
                .fold(0.0f32, f32::max);
            assert!(largest < 1e-4, "{name}: the two ways differ by {largest}");

            let mut ratios = Vec::with_capacity(rounds);
            let (mut best_split, mut best_threaded) = (0.0f64, 0.0f64);
            for round in 0..rounds {
                let mut seconds = [0.0; 2];
                // Index 0 is the crate's threading, 1 the split; each goes first in turn.
                let ways = [ProductThreading::GemmCrate, ProductThreading::ColumnSplit];
                for index in [round % 2, 1 - round % 2] {
                    let start = Instant::now();
                    for _ in 0..CALLS {
                        product(&cpu, ways[index], &mut split_out, a, b);
                    }
                    seconds[index] = start.elapsed().as_secs_f64() / CALLS as f64;
                }
                let [threaded, split] = seconds;
                ratios.push(threaded / split);
                best_split = best_split.max(flops / split / 1e9);
                best_threaded = best_threaded.max(flops / threaded / 1e9);
            }
            ratios.sort_by(f64::total_cmp);
            println!(
                "| {name} | {best_split:.0} | {best_threaded:.0} | {:.2} ({:.2}-{:.2}) |",
                ratios[ratios.len() / 2],
                ratios[0],
                ratios[ratios.len() - 1]
            );
        }
    }
}
