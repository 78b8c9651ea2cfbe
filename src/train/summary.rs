//! The model summary printed at the start of a run and the summary at its end.

use crate::backend::LossKind;
use crate::model::ModelSpec;
use crate::optim::OptimizerConfig;
use crate::train::{FitResult, Monitor, StopReason};
use std::fmt::Write as _;

/// Formats `n` with thousands separators.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Describes the layers, parameter counts, optimizer, device and seed.
pub fn model_summary(
    spec: &ModelSpec,
    optimizer: &OptimizerConfig,
    device: &str,
    seed: u64,
) -> String {
    let (output_act, loss) = match spec.loss {
        LossKind::SoftmaxCrossEntropy => ("softmax", "categorical cross-entropy"),
        LossKind::SigmoidBinaryCrossEntropy => ("sigmoid", "binary cross-entropy"),
        LossKind::MeanSquaredError => ("linear", "mean squared error"),
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Model: {} input{}, {} output{}, {output_act} output with {loss} loss",
        spec.inputs,
        if spec.inputs == 1 { "" } else { "s" },
        spec.outputs,
        if spec.outputs == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>8}  {:<11} {:<15} {:>12}",
        "layer", "units", "activation", "initialiser", "parameters"
    );
    let shapes = spec.layer_shapes();
    for (i, &(inputs, outputs)) in shapes.iter().enumerate() {
        let last = i + 1 == shapes.len();
        let name = if last {
            "output".to_string()
        } else {
            format!("dense_{}", i + 1)
        };
        let act = if last {
            output_act
        } else {
            spec.activation.name()
        };
        let _ = writeln!(
            out,
            "  {name:<10} {outputs:>8}  {act:<11} {:<15} {:>12}",
            spec.layer_init(i).name(),
            thousands(inputs * outputs + outputs)
        );
    }
    let _ = writeln!(
        out,
        "  total parameters: {}",
        thousands(spec.parameter_count())
    );
    if spec.dropout > 0.0 && !spec.hidden.is_empty() {
        let _ = writeln!(out, "  dropout: {} after each hidden layer", spec.dropout);
    }
    let _ = writeln!(out, "Optimizer: {optimizer}");
    let _ = write!(out, "Device: {device}; seed {seed}");
    out
}

/// Describes how the fit went: epochs, best epoch, why it stopped, which weights were kept,
/// and the speed.
pub fn run_summary(result: &FitResult, monitor: Monitor, restore_best: bool) -> String {
    let mut out = String::new();
    let epochs = result.history.epochs.len();
    let per_epoch = result.train_seconds / epochs.max(1) as f64;
    if epochs == 0 {
        let _ = writeln!(
            out,
            "Trained no complete epoch ({:.2}s before stopping).",
            result.train_seconds
        );
    } else {
        let _ = writeln!(
            out,
            "Trained {epochs} epoch{} in {:.2}s ({per_epoch:.3} s/epoch, {} samples/s).",
            if epochs == 1 { "" } else { "s" },
            result.train_seconds,
            thousands(result.samples_per_second.round() as usize)
        );
    }
    let best_text = match (result.best_epoch, result.best_value) {
        (Some(e), Some(v)) => format!("epoch {e} ({monitor} {v:.4})"),
        _ => "none".to_string(),
    };
    let _ = writeln!(out, "Best epoch: {best_text}.");
    let reason = match &result.stop {
        StopReason::EpochLimit => format!("reached --epochs {epochs}"),
        StopReason::EarlyStopping { waited } => format!(
            "early stopping: {monitor} did not improve for {waited} epoch{} after the best",
            if *waited == 1 { "" } else { "s" }
        ),
        StopReason::NonFinite(nf) => {
            let place = match (nf.batch, nf.layer) {
                (Some(b), Some(l)) => {
                    format!("in epoch {}, batch {b}, first at layer {l}", nf.epoch)
                }
                (Some(b), None) => format!("in epoch {}, batch {b}, in the loss", nf.epoch),
                (None, _) => format!("in the validation pass of epoch {}", nf.epoch),
            };
            format!(
                "the loss became non-finite {place}; lower --lr, add --clipnorm 1.0, \
                 or check that features are scaled (--scale standard)"
            )
        }
        StopReason::Interrupted {
            epochs_completed,
            batches_done: 0,
        } => format!("interrupted after epoch {epochs_completed}"),
        StopReason::Interrupted {
            epochs_completed,
            batches_done,
        } => format!(
            "interrupted after batch {batches_done} of epoch {}",
            epochs_completed + 1
        ),
    };
    let _ = writeln!(out, "Stopped: {reason}.");
    let kept = if result.saved_epoch == 0 {
        "the initial weights (no epoch completed)".to_string()
    } else if restore_best && Some(result.saved_epoch) == result.best_epoch {
        format!("epoch {} (the best)", result.saved_epoch)
    } else {
        format!("epoch {} (the last completed)", result.saved_epoch)
    };
    let _ = write!(out, "Saved weights: {kept}.");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(235146), "235,146");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
