//! Per-epoch training diagnostics: dead ReLU units and vanishing or exploding
//! gradients, with the thresholds that raise a warning.
//!
//! [`Diagnostics`] keeps its accumulators on the device. During an epoch it
//! adds the squared weight gradients of each layer for up to
//! [`GRADIENT_SAMPLES`] evenly spaced batches; after the epoch it runs one
//! forward pass over the validation part (the training part when
//! there is none), counts the hidden ReLU-family units that output zero for
//! every row, reads both back once, and checks the rules below. The rules
//! themselves are plain functions of the per-epoch numbers ([`check_epoch`]),
//! so they are tested on scripted values.

use crate::backend::Backend;
use crate::model::{ModelSpec, Network};
use anyhow::Result;
use std::fmt::Write as _;

/// Share of a layer's units that must be dead (zero for every row) before the
/// "dead units" warning.
// NOTE: with a few dozen validation rows a live unit can be zero on all of them,
// so small validation parts (iris-sized folds) can overstate the dead share.
pub const DEAD_UNIT_LIMIT: f64 = 0.5;

/// Rise of a layer's dead share, above [`DEAD_UNIT_LIMIT`], since its last
/// warning that warns again (so a steadily dying layer warns every 10 points,
/// not every epoch).
pub const DEAD_UNIT_RISE: f64 = 0.1;

/// Ratio of the last layer's weight-gradient RMS to the first layer's above
/// which the gradients count as vanishing.
pub const VANISHING_RATIO: f64 = 1000.0;

/// Growth of the largest weight-gradient RMS over the first epoch's value
/// that counts as exploding, when it has also grown for
/// [`EXPLODING_EPOCHS`] epochs in a row.
pub const EXPLODING_GROWTH: f64 = 100.0;

/// Consecutive epochs of growth that an exploding gradient needs.
pub const EXPLODING_EPOCHS: usize = 3;

/// Batches per epoch whose gradients are measured, evenly spaced (every
/// `ceil(batches / 16)`-th batch from the first). Measuring every batch cost
/// about a fifth of the training time of a 784-128-10 network on two CPU cores.
pub const GRADIENT_SAMPLES: usize = 16;

/// Numbers of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochDiagnostics {
    /// Epoch, counted from 1.
    pub epoch: usize,
    /// Share of dead units (in `[0, 1]`) of each hidden ReLU-family layer, in
    /// the order of [`DiagnosticsReport::dead_layers`].
    pub dead_share: Vec<f64>,
    /// Root-mean-square weight gradient of each layer over the epoch's sampled
    /// batches ([`GRADIENT_SAMPLES`]):
    /// `sqrt(sum over batches of sum(dw^2) / (batches * weights))`.
    pub gradient_rms: Vec<f64>,
}

/// Kind of problem a warning reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarningKind {
    /// A hidden layer has more than [`DEAD_UNIT_LIMIT`] dead units.
    DeadUnits,
    /// The first layer's gradients are [`VANISHING_RATIO`] times smaller than the last's.
    VanishingGradients,
    /// Gradients keep growing, or are not finite.
    ExplodingGradients,
}

impl WarningKind {
    /// Returns the warning's name as printed.
    pub fn name(self) -> &'static str {
        match self {
            WarningKind::DeadUnits => "dead units",
            WarningKind::VanishingGradients => "vanishing gradients",
            WarningKind::ExplodingGradients => "exploding gradients",
        }
    }
}

/// One raised warning.
#[derive(Clone, Debug, PartialEq)]
pub struct DiagnosticWarning {
    /// Kind of problem.
    pub kind: WarningKind,
    /// Epoch (from 1) where it was raised.
    pub epoch: usize,
    /// The full message with advice.
    pub message: String,
}

/// Everything the diagnostics of one fit found.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DiagnosticsReport {
    /// Indices (from 0) of the hidden layers whose dead units are counted.
    pub dead_layers: Vec<usize>,
    /// Number of layers (hidden plus output) whose gradients are measured.
    pub layers: usize,
    /// One entry per completed epoch.
    pub epochs: Vec<EpochDiagnostics>,
    /// Warnings in the order they were raised.
    pub warnings: Vec<DiagnosticWarning>,
}

impl DiagnosticsReport {
    /// Creates an empty report for `spec`.
    pub fn new(spec: &ModelSpec) -> Self {
        let dead_layers = if spec.activation.is_relu_family() {
            (0..spec.hidden.len()).collect()
        } else {
            Vec::new()
        };
        Self {
            dead_layers,
            layers: spec.hidden.len() + 1,
            epochs: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// History column names: `dead_share_L` per counted layer, then
    /// `grad_rms_L` per layer, with `L` counted from 1.
    pub fn columns(&self) -> Vec<String> {
        let dead = self
            .dead_layers
            .iter()
            .map(|l| format!("dead_share_{}", l + 1));
        let rms = (0..self.layers).map(|l| format!("grad_rms_{}", l + 1));
        dead.chain(rms).collect()
    }

    /// Values of an epoch in the order of [`Self::columns`].
    pub fn row(epoch: &EpochDiagnostics) -> Vec<f64> {
        epoch
            .dead_share
            .iter()
            .chain(&epoch.gradient_rms)
            .copied()
            .collect()
    }

    /// Returns whether a warning of `kind` was raised.
    pub fn has(&self, kind: WarningKind) -> bool {
        self.warnings.iter().any(|w| w.kind == kind)
    }

    /// Describes the last epoch's numbers and every warning, for the run summary.
    pub fn summary(&self) -> String {
        let mut out = String::from("Diagnostics:");
        if let Some(last) = self.epochs.last() {
            for (layer, share) in self.dead_layers.iter().zip(&last.dead_share) {
                let _ = write!(
                    out,
                    "\n  layer {}: {:.1}% dead units",
                    layer + 1,
                    share * 100.0
                );
            }
            let rms: Vec<String> = last
                .gradient_rms
                .iter()
                .enumerate()
                .map(|(l, v)| format!("layer {} {v:.3e}", l + 1))
                .collect();
            let _ = write!(
                out,
                "\n  weight-gradient RMS in epoch {}: {}",
                last.epoch,
                rms.join(", ")
            );
        }
        if self.warnings.is_empty() {
            out.push_str("\n  no warnings (dead units, vanishing or exploding gradients)");
        }
        for warning in &self.warnings {
            let _ = write!(out, "\n  epoch {}: {}", warning.epoch, warning.message);
        }
        out
    }
}

/// Memory of earlier epochs that the rules need.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RuleState {
    /// Dead share at each counted layer's last warning.
    dead_warned: Vec<Option<f64>>,
    vanishing_warned: bool,
    exploding_warned: bool,
}

/// Checks the numbers of one epoch against the rules and returns the new warnings.
///
/// `history` contains the earlier epochs, `current` the new one.
/// - Dead units: a layer's dead share above [`DEAD_UNIT_LIMIT`], warned the
///   first time and again whenever it has risen by [`DEAD_UNIT_RISE`] since.
/// - Vanishing gradients: the last layer's RMS above [`VANISHING_RATIO`] times
///   the first layer's (networks with a hidden layer), warned once.
/// - Exploding gradients: a non-finite RMS, or the largest RMS growing in each
///   of the last [`EXPLODING_EPOCHS`] epochs to over [`EXPLODING_GROWTH`] times
///   the first epoch's, warned once.
pub fn check_epoch(
    report: &DiagnosticsReport,
    state: &mut RuleState,
    history: &[EpochDiagnostics],
    current: &EpochDiagnostics,
) -> Vec<DiagnosticWarning> {
    let mut warnings = Vec::new();
    state.dead_warned.resize(report.dead_layers.len(), None);
    for (k, (&layer, &share)) in report
        .dead_layers
        .iter()
        .zip(&current.dead_share)
        .enumerate()
    {
        if share <= DEAD_UNIT_LIMIT {
            continue;
        }
        let rising = match state.dead_warned[k] {
            None => true,
            Some(last) => share >= last + DEAD_UNIT_RISE,
        };
        if rising {
            let previous = history.last().and_then(|e| e.dead_share.get(k)).copied();
            let trend = match previous {
                Some(p) if share > p => format!(", up from {:.0}% the epoch before", p * 100.0),
                _ => String::new(),
            };
            warnings.push(DiagnosticWarning {
                kind: WarningKind::DeadUnits,
                epoch: current.epoch,
                message: format!(
                    "dead units: {:.0}% of the units of hidden layer {} output zero for every \
                     sample{trend}; lower the learning rate, use --activation leaky_relu or elu, \
                     or --init he",
                    share * 100.0,
                    layer + 1
                ),
            });
            state.dead_warned[k] = Some(share);
        }
    }

    let rms = &current.gradient_rms;
    if !state.vanishing_warned && rms.len() >= 2 {
        let (first, last) = (rms[0], rms[rms.len() - 1]);
        if first.is_finite() && last.is_finite() && last > VANISHING_RATIO * first {
            let ratio = if first > 0.0 {
                format!("{:.0}x", last / first)
            } else {
                "infinitely".to_string()
            };
            warnings.push(DiagnosticWarning {
                kind: WarningKind::VanishingGradients,
                epoch: current.epoch,
                message: format!(
                    "vanishing gradients: the first layer's weight gradients (RMS {first:.2e}) \
                     are {ratio} smaller than the last layer's ({last:.2e}); use a ReLU-family \
                     activation (--activation relu), --init he, or fewer layers"
                ),
            });
            state.vanishing_warned = true;
        }
    }

    let exploding = (!state.exploding_warned)
        .then(|| exploding_message(history, current))
        .flatten();
    if let Some(message) = exploding {
        warnings.push(DiagnosticWarning {
            kind: WarningKind::ExplodingGradients,
            epoch: current.epoch,
            message,
        });
        state.exploding_warned = true;
    }
    warnings
}

fn largest(values: &[f64]) -> f64 {
    values.iter().copied().fold(0.0, |a: f64, v| {
        if v.is_nan() || a.is_nan() {
            f64::NAN
        } else {
            a.max(v)
        }
    })
}

fn exploding_message(history: &[EpochDiagnostics], current: &EpochDiagnostics) -> Option<String> {
    const ADVICE: &str = "lower the learning rate, set --clipnorm 1.0, or use --init he with a ReLU-family activation";
    let now = largest(&current.gradient_rms);
    if !now.is_finite() {
        return Some(format!(
            "exploding gradients: a weight-gradient RMS is not finite; {ADVICE}"
        ));
    }
    if history.len() < EXPLODING_EPOCHS {
        return None;
    }
    let mut values: Vec<f64> = history.iter().map(|e| largest(&e.gradient_rms)).collect();
    values.push(now);
    let recent = &values[values.len() - EXPLODING_EPOCHS - 1..];
    let growing = recent.windows(2).all(|pair| pair[1] > pair[0]);
    let first = values[0];
    if growing && first > 0.0 && now > EXPLODING_GROWTH * first {
        return Some(format!(
            "exploding gradients: the largest weight-gradient RMS grew for {EXPLODING_EPOCHS} \
             epochs in a row to {now:.2e}, {:.0}x its first-epoch value; {ADVICE}",
            now / first
        ));
    }
    None
}

/// Device-side accumulators of the diagnostics of one fit.
pub struct Diagnostics<B: Backend> {
    report: DiagnosticsReport,
    state: RuleState,
    /// Per layer, `[1]`: sum over the epoch's sampled batches of `sum(dw^2)`.
    sums: Vec<B::Buf>,
    scratch: B::Buf,
    /// Per counted layer, `[O_l]`: rows whose output was zero.
    counts: Vec<B::Buf>,
    /// Weights per layer (`O * I`).
    weights: Vec<usize>,
    /// Units per counted layer.
    units: Vec<usize>,
    /// Batches added to `sums` since the last epoch's end.
    batches: usize,
}

impl<B: Backend> Diagnostics<B> {
    /// Allocates the accumulators for `spec`.
    pub fn new(backend: &B, spec: &ModelSpec) -> Result<Self> {
        let report = DiagnosticsReport::new(spec);
        let shapes = spec.layer_shapes();
        let sums = (0..shapes.len())
            .map(|_| backend.zeros(1))
            .collect::<Result<_>>()?;
        let units: Vec<usize> = report.dead_layers.iter().map(|&l| shapes[l].1).collect();
        let counts = units
            .iter()
            .map(|&u| backend.zeros(u))
            .collect::<Result<_>>()?;
        Ok(Self {
            report,
            state: RuleState::default(),
            sums,
            scratch: backend.zeros(1)?,
            counts,
            weights: shapes.iter().map(|&(i, o)| i * o).collect(),
            units,
            batches: 0,
        })
    }

    /// Returns the history columns the diagnostics add.
    pub fn columns(&self) -> Vec<String> {
        self.report.columns()
    }

    /// Adds the gradients of the batch just computed when batch `batch` (from
    /// 0, of `batches` in the epoch) is one of the sampled ones. Call it after
    /// each training step.
    pub fn after_batch(
        &mut self,
        backend: &B,
        net: &Network<B>,
        batch: usize,
        batches: usize,
    ) -> Result<()> {
        let stride = batches.div_ceil(GRADIENT_SAMPLES).max(1);
        if batch % stride != 0 {
            return Ok(());
        }
        net.add_weight_gradient_squares(backend, &mut self.sums, &mut self.scratch)?;
        self.batches += 1;
        Ok(())
    }

    /// Finishes epoch `epoch`: counts dead units over `rows` rows of `x`
    /// (`[rows, cols]` on the device, gathered through `identity` into
    /// `batch_x` in chunks of the network's batch size), checks the rules,
    /// logs and records new warnings, and returns the epoch's history values.
    #[allow(clippy::too_many_arguments)]
    pub fn end_epoch(
        &mut self,
        backend: &B,
        net: &mut Network<B>,
        x: &B::Buf,
        rows: usize,
        cols: usize,
        identity: &B::Idx,
        batch_x: &mut B::Buf,
        epoch: usize,
    ) -> Result<Vec<f64>> {
        let mut dead_share = Vec::with_capacity(self.counts.len());
        if !self.counts.is_empty() {
            for (count, &units) in self.counts.iter_mut().zip(&self.units) {
                backend.write(&vec![0.0; units], count)?;
            }
            let layers = self.report.dead_layers.clone();
            let chunk = net.max_rows();
            let mut start = 0;
            while start < rows {
                let n = chunk.min(rows - start);
                backend.gather_rows(x, cols, identity, start, n, batch_x)?;
                net.count_zero_outputs(backend, batch_x, n, &layers, &mut self.counts)?;
                start += n;
            }
            for (count, &units) in self.counts.iter().zip(&self.units) {
                let zeros = backend.download(count)?;
                let dead = zeros[..units]
                    .iter()
                    .filter(|&&c| c as usize >= rows)
                    .count();
                dead_share.push(dead as f64 / units.max(1) as f64);
            }
        }
        let mut gradient_rms = Vec::with_capacity(self.sums.len());
        for (sum, &weights) in self.sums.iter_mut().zip(&self.weights) {
            let total = f64::from(backend.download(sum)?[0]);
            let mean = total / (self.batches.max(1) * weights.max(1)) as f64;
            gradient_rms.push(mean.sqrt());
            backend.write(&[0.0], sum)?;
        }
        self.batches = 0;
        let current = EpochDiagnostics {
            epoch,
            dead_share,
            gradient_rms,
        };
        let warnings = check_epoch(&self.report, &mut self.state, &self.report.epochs, &current);
        for warning in &warnings {
            log::warn!("epoch {epoch}: {}", warning.message);
        }
        self.report.warnings.extend(warnings);
        let row = DiagnosticsReport::row(&current);
        self.report.epochs.push(current);
        Ok(row)
    }

    /// Returns the partial-epoch accumulators, `sum(dw^2)` of each layer and
    /// the batches added since the last epoch's end, for a checkpoint.
    pub fn accumulators(&self, backend: &B) -> Result<(Vec<f32>, usize)> {
        let mut sums = Vec::with_capacity(self.sums.len());
        for sum in &self.sums {
            sums.push(backend.download(sum)?[0]);
        }
        Ok((sums, self.batches))
    }

    /// Restores the state of a resumed fit: replays the completed epochs'
    /// history rows (in the order of [`Self::columns`], epochs from 1) through
    /// the rules without logging their warnings again, and reloads the
    /// accumulators that [`Self::accumulators`] returned.
    pub fn restore(
        &mut self,
        backend: &B,
        rows: &[Vec<f64>],
        sums: &[f32],
        batches: usize,
    ) -> Result<()> {
        let dead = self.report.dead_layers.len();
        anyhow::ensure!(
            sums.len() == self.sums.len(),
            "the checkpoint has gradient sums for {} layers, the network has {}",
            sums.len(),
            self.sums.len()
        );
        for (index, row) in rows.iter().enumerate() {
            anyhow::ensure!(
                row.len() == dead + self.sums.len(),
                "history row {} has {} diagnostic values, expected {}",
                index + 1,
                row.len(),
                dead + self.sums.len()
            );
            let current = EpochDiagnostics {
                epoch: index + 1,
                dead_share: row[..dead].to_vec(),
                gradient_rms: row[dead..].to_vec(),
            };
            let warnings =
                check_epoch(&self.report, &mut self.state, &self.report.epochs, &current);
            self.report.warnings.extend(warnings);
            self.report.epochs.push(current);
        }
        for (buf, &value) in self.sums.iter_mut().zip(sums) {
            backend.write(&[value], buf)?;
        }
        self.batches = batches;
        Ok(())
    }

    /// Returns what was found.
    pub fn into_report(self) -> DiagnosticsReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::LossKind;
    use crate::model::{Activation, Init};

    fn spec(activation: Activation, hidden: Vec<usize>) -> ModelSpec {
        ModelSpec {
            inputs: 4,
            hidden,
            activation,
            outputs: 3,
            loss: LossKind::SoftmaxCrossEntropy,
            init: Init::default_for(activation),
            dropout: 0.0,
        }
    }

    fn epoch(epoch: usize, dead: &[f64], rms: &[f64]) -> EpochDiagnostics {
        EpochDiagnostics {
            epoch,
            dead_share: dead.to_vec(),
            gradient_rms: rms.to_vec(),
        }
    }

    /// Runs the rules over scripted epochs and returns the warnings raised.
    fn run(report: &DiagnosticsReport, epochs: &[EpochDiagnostics]) -> Vec<DiagnosticWarning> {
        let mut state = RuleState::default();
        let mut all = Vec::new();
        for (i, e) in epochs.iter().enumerate() {
            all.extend(check_epoch(report, &mut state, &epochs[..i], e));
        }
        all
    }

    #[test]
    fn columns_follow_layers() {
        let report = DiagnosticsReport::new(&spec(Activation::Relu, vec![8, 4]));
        assert_eq!(
            report.columns(),
            [
                "dead_share_1",
                "dead_share_2",
                "grad_rms_1",
                "grad_rms_2",
                "grad_rms_3"
            ]
        );
        let report = DiagnosticsReport::new(&spec(Activation::Tanh, vec![8]));
        assert_eq!(report.columns(), ["grad_rms_1", "grad_rms_2"]);
    }

    #[test]
    fn dead_units_warn_above_limit_and_on_rise() {
        let report = DiagnosticsReport::new(&spec(Activation::Relu, vec![8, 4]));
        let epochs = [
            epoch(1, &[0.5, 0.0], &[1.0, 1.0, 1.0]),
            epoch(2, &[0.55, 0.0], &[1.0, 1.0, 1.0]),
            epoch(3, &[0.6, 0.0], &[1.0, 1.0, 1.0]),
            epoch(4, &[0.7, 0.0], &[1.0, 1.0, 1.0]),
        ];
        let warnings = run(&report, &epochs);
        let epochs_warned: Vec<usize> = warnings.iter().map(|w| w.epoch).collect();
        // Exactly 50% does not pass the limit; 55% does; 60% is a rise of only 5 points;
        // 70% is 15 points above the last warning.
        assert_eq!(epochs_warned, [2, 4]);
        assert!(warnings.iter().all(|w| w.kind == WarningKind::DeadUnits));
        assert!(warnings[0].message.contains("hidden layer 1"));
        assert!(warnings[1].message.contains("up from 60%"));
    }

    #[test]
    fn vanishing_needs_ratio_above_limit() {
        let report = DiagnosticsReport::new(&spec(Activation::Sigmoid, vec![8, 8]));
        let at_limit = [epoch(1, &[], &[1e-6, 1e-4, 1e-3])];
        assert!(run(&report, &at_limit).is_empty());
        let above = [epoch(1, &[], &[0.9e-6, 1e-4, 1e-3])];
        let warnings = run(&report, &above);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].kind, WarningKind::VanishingGradients);
    }

    #[test]
    fn exploding_needs_growth_and_streak() {
        let report = DiagnosticsReport::new(&spec(Activation::Relu, vec![8]));
        let mut epochs = vec![epoch(1, &[0.0], &[1.0, 1.0])];
        for (i, v) in [10.0, 50.0, 200.0].iter().enumerate() {
            epochs.push(epoch(i + 2, &[0.0], &[*v, 1.0]));
        }
        let warnings = run(&report, &epochs);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].kind, WarningKind::ExplodingGradients);
        assert_eq!(warnings[0].epoch, 4);

        // Large but not growing every epoch: no warning.
        let bumpy = [
            epoch(1, &[0.0], &[1.0, 1.0]),
            epoch(2, &[0.0], &[300.0, 1.0]),
            epoch(3, &[0.0], &[200.0, 1.0]),
            epoch(4, &[0.0], &[250.0, 1.0]),
        ];
        assert!(run(&report, &bumpy).is_empty());
    }

    #[test]
    fn non_finite_gradient_is_exploding() {
        let report = DiagnosticsReport::new(&spec(Activation::Relu, vec![8]));
        let warnings = run(&report, &[epoch(1, &[0.0], &[f64::INFINITY, 1.0])]);
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].kind, WarningKind::ExplodingGradients);
    }

    #[test]
    fn healthy_numbers_raise_nothing() {
        let report = DiagnosticsReport::new(&spec(Activation::Relu, vec![8, 4]));
        let epochs: Vec<EpochDiagnostics> = (1..=5)
            .map(|e| epoch(e, &[0.1, 0.05], &[0.01, 0.02, 0.05]))
            .collect();
        assert!(run(&report, &epochs).is_empty());
    }
}
