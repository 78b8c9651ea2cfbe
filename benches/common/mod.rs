//! Settings and models shared by the CPU benchmarks.

use densetrain::backend::LossKind;
use densetrain::model::{Activation, Init, ModelSpec};
use densetrain::optim::{Optimizer, OptimizerConfig};

/// Returns the thread count from `DENSETRAIN_BENCH_THREADS`, or all cores when
/// it is unset, or an error naming the accepted range.
pub fn bench_threads() -> Result<usize, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match std::env::var("DENSETRAIN_BENCH_THREADS") {
        Err(_) => Ok(cores),
        Ok(text) => match text.parse::<usize>() {
            Ok(threads) if (1..=cores).contains(&threads) => Ok(threads),
            _ => Err(format!(
                "DENSETRAIN_BENCH_THREADS must be between 1 and {cores} (the cores of this machine), got {text}"
            )),
        },
    }
}

/// Prints `message` as an error and exits with status 2.
pub fn exit_with(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

/// Returns Adam with Keras's defaults (lr 1e-3), no penalty and no clipping.
pub fn adam() -> OptimizerConfig {
    OptimizerConfig {
        optimizer: Optimizer::with_defaults("adam").expect("adam is a known optimizer"),
        lr: 1e-3,
        l2: 0.0,
        weight_decay: 0.0,
        clipnorm: None,
    }
}

/// Returns a ReLU network with two hidden layers and a softmax output. `widths`
/// are the inputs, both hidden widths and the classes.
pub fn spec(widths: [usize; 4]) -> ModelSpec {
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
