//! Timings for `benches/gpu-check.sh`, not assertions: ignored by `cargo
//! test` and run with `--ignored --nocapture` on a GPU. Each prints
//! `RESULT <name> <value>` lines that the script collects into its table.
//!
//! The wide MLP (layers 8192,8192,8192, batch 8192, bf16) is compared with a
//! plain cuBLAS bf16 product of one layer's shape measured in the same run.

mod gpu_common;
mod reference;

use densetrain::backend::Backend;
use densetrain::backend::LossKind;
use densetrain::backend::cuda::gemm::MatrixOperand;
use densetrain::backend::cuda::loader::KernelLoading;
use densetrain::backend::cuda::{Cuda, Precision};
use densetrain::model::{Activation, Init, ModelSpec, Network, init};
use densetrain::optim::{Optimizer, OptimizerConfig};
use gpu_common::gpu_with;
use reference::Values;
use std::time::Instant;

const WIDTH: usize = 8192;
const BATCH: usize = 8192;
const INPUTS: usize = 1024;
const CLASSES: usize = 10;
const WARMUP: usize = 2;
const TIMED: usize = 10;

/// Times `TIMED` calls of `f` after `WARMUP` calls, waiting for the GPU around them.
fn time_calls(gpu: &Cuda, mut f: impl FnMut()) -> f64 {
    for _ in 0..WARMUP {
        f();
    }
    gpu.synchronize().unwrap();
    let start = Instant::now();
    for _ in 0..TIMED {
        f();
    }
    gpu.synchronize().unwrap();
    start.elapsed().as_secs_f64() / TIMED as f64
}

/// TFLOP/s of one `[BATCH, WIDTH] · [WIDTH, WIDTH]ᵀ` product.
fn gemm_tflops(gpu: &Cuda, values: &mut Values) -> f64 {
    let x = gpu.upload(&values.uniform(BATCH * WIDTH, 1.0)).unwrap();
    let w = gpu.upload(&values.uniform(WIDTH * WIDTH, 0.01)).unwrap();
    let mut y = gpu.zeros(BATCH * WIDTH).unwrap();
    let seconds = time_calls(gpu, || {
        gpu.matmul(
            &mut y,
            MatrixOperand::plain(&x, BATCH, WIDTH),
            MatrixOperand::transposed(&w, WIDTH, WIDTH),
        )
        .unwrap();
    });
    2.0 * (BATCH * WIDTH * WIDTH) as f64 / seconds / 1e12
}

#[test]
#[ignore = "a timing for benches/gpu-check.sh; needs a GPU with about 8 GB free"]
fn wide_mlp_against_plain_gemm() {
    for precision in [Precision::Bf16, Precision::F32] {
        let Some(gpu) = gpu_with(
            "wide_mlp_against_plain_gemm",
            precision,
            KernelLoading::Auto,
        ) else {
            return;
        };
        let mut values = Values::new(1);
        let gemm = gemm_tflops(&gpu, &mut values);
        println!("RESULT gemm_{precision}_tflops {gemm:.1}");
        if precision == Precision::F32 {
            continue;
        }

        let spec = ModelSpec {
            inputs: INPUTS,
            hidden: vec![WIDTH, WIDTH, WIDTH],
            activation: Activation::Relu,
            outputs: CLASSES,
            loss: LossKind::SoftmaxCrossEntropy,
            init: Init::He,
            dropout: 0.0,
        };
        let optimizer = Optimizer::with_defaults("adam").unwrap();
        let config = OptimizerConfig {
            optimizer,
            lr: 1e-4,
            l2: 0.0,
            weight_decay: 0.0,
            clipnorm: None,
        };
        let params = init::init_params(&spec, 1);
        let mut net = Network::new(&gpu, &spec, &params, &config, BATCH).unwrap();
        let x = gpu.upload(&values.uniform(BATCH * INPUTS, 1.0)).unwrap();
        let y = gpu.upload(&values.classes(BATCH, CLASSES)).unwrap();
        let mut stats = gpu.new_stats().unwrap();
        let mut step = 0u64;
        let seconds = time_calls(&gpu, || {
            net.train_step(
                &gpu, &x, &y, BATCH, None, &config, config.lr, step, 1, 0, &mut stats,
            )
            .unwrap();
            step += 1;
        });
        // Forward and weight gradients for every layer, input gradients for all but the first.
        let shapes = spec.layer_shapes();
        let products: f64 = shapes.iter().map(|&(i, o)| (i * o) as f64).sum();
        let first = (shapes[0].0 * shapes[0].1) as f64;
        let flops = 2.0 * BATCH as f64 * (3.0 * products - first);
        let achieved = flops / seconds / 1e12;
        println!("RESULT wide_mlp_bf16_step_ms {:.2}", seconds * 1e3);
        println!("RESULT wide_mlp_bf16_tflops {achieved:.1}");
        println!(
            "RESULT wide_mlp_bf16_fraction_of_gemm {:.2}",
            achieved / gemm
        );
        assert!(gpu.read_stats(&stats).unwrap().nonfinite_batch.is_none());
    }
}
