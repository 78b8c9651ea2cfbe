//! Ways of using the CPU backend's threads, each pair timed in alternation:
//! - the wide network's matrix products (784-2048-2048-10, batch 512, with
//!   the backend's operand layouts) with the gemm crate's own threading,
//!   which `Cpu::matmul` uses above its split limit. They run against a
//!   split by output columns, one single-threaded gemm call per thread,
//!   which it uses below;
//! - whole training steps of the small task (784-256-128-10, Adam, batch
//!   128) called from the main thread, against the same steps inside
//!   `Backend::run`, as training runs them.
//!
//! The two ways alternate within each round, each going first in turn, so a
//! change in the host's load reaches both alike. The ratio of their times per
//! round is therefore steadier on a shared machine than two separate timings.
//!
//! Run: `cargo bench --bench cpu_threading [-- ROUNDS]` (default 12 rounds),
//! with `DENSETRAIN_BENCH_THREADS=N` to use N threads (default all cores).

mod common;

use common::{adam, spec};
use densetrain::backend::Backend;
use densetrain::backend::cpu::{Cpu, CpuStats, Operand, ProductThreading};
use densetrain::model::{Network, init};
use std::time::Instant;

/// Product calls of each way per round.
const CALLS: usize = 5;
/// Training steps of each way per round.
const STEPS: usize = 200;

/// Returns the seconds per call of each of two ways over `rounds` rounds, the two
/// alternating within a round and each going first in turn.
fn alternate(rounds: usize, calls: usize, mut way: impl FnMut(usize)) -> Vec<[f64; 2]> {
    (0..rounds)
        .map(|round| {
            let mut seconds = [0.0; 2];
            for index in [round % 2, 1 - round % 2] {
                let start = Instant::now();
                for _ in 0..calls {
                    way(index);
                }
                seconds[index] = start.elapsed().as_secs_f64() / calls as f64;
            }
            seconds
        })
        .collect()
}

/// Returns the median (the mean of the middle two for an even count), minimum
/// and maximum of `values`.
fn spread(mut values: Vec<f64>) -> (f64, f64, f64) {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    let median = if values.len() % 2 == 0 {
        (values[middle - 1] + values[middle]) / 2.0
    } else {
        values[middle]
    };
    (median, values[0], values[values.len() - 1])
}

/// Reads the rounds argument and `DENSETRAIN_BENCH_THREADS`, or explains what is wrong.
fn settings() -> Result<(usize, usize), String> {
    // cargo passes `--bench` to every benchmark binary.
    let arguments: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let rounds = match arguments.as_slice() {
        [] => 12,
        [rounds] => match rounds.parse::<usize>() {
            Ok(rounds) if rounds > 0 => rounds,
            _ => {
                return Err(format!(
                    "ROUNDS must be a whole number of at least 1, got {rounds}"
                ));
            }
        },
        _ => {
            return Err(format!(
                "expected at most one argument, ROUNDS; got {}",
                arguments.join(" ")
            ));
        }
    };
    let threads = common::bench_threads()?;
    Ok((rounds, threads))
}

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
    let (rounds, threads) = settings().unwrap_or_else(|message| common::exit_with(&message));
    let cpu = Cpu::new(threads).expect("the thread count was checked against the cores");
    println!("{threads} thread(s), {rounds} round(s) of {CALLS} calls per way");
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

            // Index 0 is the crate's threading, 1 the split.
            let ways = [ProductThreading::GemmCrate, ProductThreading::ColumnSplit];
            let seconds = alternate(rounds, CALLS, |index| {
                product(&cpu, ways[index], &mut split_out, a, b)
            });
            let best = |index: usize| {
                let fastest = seconds
                    .iter()
                    .map(|s| s[index])
                    .fold(f64::INFINITY, f64::min);
                flops / fastest / 1e9
            };
            let (median, low, high) = spread(seconds.iter().map(|[t, s]| t / s).collect());
            println!(
                "| {name} | {:.0} | {:.0} | {median:.2} ({low:.2}-{high:.2}) |",
                best(1),
                best(0)
            );
        }
    }
    training_steps(&cpu, rounds);
}

/// Times training steps of the small task from the main thread and inside
/// `Backend::run`, and prints both and their ratio.
fn training_steps(cpu: &Cpu, rounds: usize) {
    const ROWS: usize = 128;
    let spec = spec([784, 256, 128, 10]);
    let config = adam();
    let mut net = Network::new(cpu, &spec, &init::init_params(&spec, 1), &config, ROWS)
        .expect("the small network fits in memory");
    let x = cpu.upload(&values(ROWS * 784, 4)).expect("upload");
    let classes: Vec<f32> = (0..ROWS).map(|row| (row % 10) as f32).collect();
    let targets = cpu.upload(&classes).expect("upload");
    let mut stats: CpuStats = cpu.new_stats().expect("stats");
    let mut step = 0;
    let train_step = |net: &mut Network<Cpu>, stats: &mut CpuStats, step: u64| {
        net.train_step(
            cpu, &x, &targets, ROWS, None, &config, 1e-3, step, 1, step, stats,
        )
    };

    // Index 0 calls from the main thread, 1 inside `Backend::run`.
    let seconds = alternate(rounds, STEPS, |index| {
        if index == 0 {
            train_step(&mut net, &mut stats, step)
        } else {
            cpu.run(|| train_step(&mut net, &mut stats, step))
        }
        .expect("a training step on valid buffers succeeds");
        step += 1;
    });
    let milliseconds = |index: usize| spread(seconds.iter().map(|s| s[index] * 1e3).collect());
    let (caller, caller_low, _) = milliseconds(0);
    let (pool, pool_low, _) = milliseconds(1);
    let (median, low, high) = spread(seconds.iter().map(|[c, p]| p / c).collect());
    println!();
    println!("small-task training step, batch {ROWS}, {rounds} round(s) of {STEPS} steps per way");
    println!("| way | ms/step median (min) |");
    println!("|---|---|");
    println!("| called from the main thread | {caller:.3} ({caller_low:.3}) |");
    println!("| inside Backend::run | {pool:.3} ({pool_low:.3}) |");
    println!("inside Backend::run / main thread, per round: {median:.3} ({low:.3}-{high:.3})");
}
