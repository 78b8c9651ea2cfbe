//! Learning-rate range test (Leslie Smith, "Cyclical Learning Rates for
//! Training Neural Networks", 2017; the fastai and PyTorch Lightning finders).
//!
//! One optimizer step per learning rate, the rate growing exponentially from
//! `start_lr` to `end_lr`. Each step records the batch loss before its update
//! and the loss smoothed with a bias-corrected exponential moving average. The
//! sweep stops early once the smoothed loss exceeds [`DIVERGENCE_FACTOR`]
//! times its best value, or at the first non-finite loss. The suggestion rules
//! ignore non-finite points and the first [`SKIP_BEGIN_SHARE`] of the others,
//! and read a moving average restarted after them, so a spike among the first
//! batches cannot leak into the curve they read.

use crate::backend::Backend;
use crate::data::Dataset;
use crate::model::{ModelSpec, Network, Params};
use crate::optim::OptimizerConfig;
use crate::rng;
use crate::train::Units;
use anyhow::{Result, bail};
use std::fmt::Write as _;

/// Decay of the exponential moving average of the loss.
pub const SMOOTHING: f64 = 0.98;
/// The sweep stops once the smoothed loss exceeds this multiple of its best value.
pub const DIVERGENCE_FACTOR: f64 = 4.0;
/// Suggestions further apart than this factor raise a warning.
pub const DISAGREEMENT_FACTOR: f64 = 10.0;
/// Share of the first finite points the rules skip. The moving average of the
/// rules restarts after them and its first values, which average only a few
/// batches, are skipped again by the same share.
pub const SKIP_BEGIN_SHARE: f64 = 0.1;
/// Noise (robust standard deviation of the batch losses) above this share of
/// the smoothed loss's drop makes the curve too noisy to trust.
pub const NOISE_LIMIT: f64 = 0.5;
/// Minimum number of points the rules need.
pub const MIN_POINTS: usize = 5;
/// Maximum number of steps: each trains one batch, and the schedule and the
/// recorded points are kept in memory.
pub const MAX_STEPS: usize = 100_000;

/// Settings of a range test.
#[derive(Clone, Debug, PartialEq)]
pub struct LrFindConfig {
    /// First learning rate (> 0).
    pub start_lr: f64,
    /// Last learning rate (> `start_lr`).
    pub end_lr: f64,
    /// Number of steps, one batch each (>= [`MIN_POINTS`]).
    pub steps: usize,
    /// Rows per batch.
    pub batch_size: usize,
    /// Seed of the batch order (the same per-epoch shuffle as training).
    pub seed: u64,
    /// Optimizer; its `lr` is replaced by the sweep's rate at each step.
    pub optimizer: OptimizerConfig,
    /// Per-class loss weights.
    pub class_weights: Option<Vec<f32>>,
}

impl LrFindConfig {
    /// Rejects rates that are not positive and increasing, and too few steps.
    pub fn validate(&self) -> Result<()> {
        let (start, end) = (self.start_lr, self.end_lr);
        if !(start.is_finite() && start > 0.0) {
            bail!("invalid --start-lr {start}: expected a positive learning rate, e.g. 1e-7");
        }
        if !(end.is_finite() && end > start) {
            bail!("invalid --end-lr {end}: expected a finite rate above --start-lr {start}");
        }
        if self.steps < MIN_POINTS {
            bail!(
                "invalid --steps {}: the range test needs at least {MIN_POINTS} steps",
                self.steps
            );
        }
        if self.steps > MAX_STEPS {
            bail!(
                "invalid --steps {}: the range test takes at most {MAX_STEPS} steps (one batch \
                 each); 100 to 1000 are usual",
                self.steps
            );
        }
        if self.batch_size == 0 {
            bail!("invalid --batch-size 0: a batch needs at least 1 row");
        }
        Ok(())
    }
}

/// One step of the sweep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrPoint {
    /// Learning rate of the step.
    pub lr: f64,
    /// Batch loss before the update (NaN when it was not finite).
    pub loss: f64,
    /// Bias-corrected moving average of the finite losses so far.
    pub smoothed: f64,
}

/// A suggestion rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The point where the smoothed loss falls fastest against log(lr).
    Steepest,
    /// A tenth of the rate with the lowest smoothed loss.
    MinimumTenth,
    /// The middle of the longest run of points where the smoothed loss falls.
    Valley,
}

impl Rule {
    /// Returns the rule's name as printed.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Steepest => "steepest",
            Rule::MinimumTenth => "minimum/10",
            Rule::Valley => "valley",
        }
    }
}

/// A suggested learning rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Suggestion {
    /// Rule that produced it.
    pub rule: Rule,
    /// Suggested learning rate.
    pub lr: f64,
}

/// Reason the sweep ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SweepEnd {
    /// Every step ran.
    Completed,
    /// The smoothed loss exceeded [`DIVERGENCE_FACTOR`] times its best at this step (from 1).
    Diverged { step: usize },
    /// The loss was not finite at this step (from 1).
    NonFinite { step: usize },
}

/// Outcome of a range test.
#[derive(Clone, Debug, PartialEq)]
pub struct LrFindResult {
    /// One point per step run.
    pub points: Vec<LrPoint>,
    /// Reason the sweep ended.
    pub end: SweepEnd,
    /// Suggestions in rule order (steepest, minimum/10, valley); a rule that
    /// finds nothing is absent.
    pub suggestions: Vec<Suggestion>,
    /// Doubts about the curve, for the user.
    pub warnings: Vec<String>,
}

impl LrFindResult {
    /// Returns the rate `train --lr auto` uses: valley, else steepest, else minimum/10.
    pub fn suggested_lr(&self) -> Option<f64> {
        [Rule::Valley, Rule::Steepest, Rule::MinimumTenth]
            .iter()
            .find_map(|rule| self.suggestions.iter().find(|s| s.rule == *rule))
            .map(|s| s.lr)
    }

    /// Formats the points as CSV: `step,learning_rate,loss,smoothed_loss`.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("step,learning_rate,loss,smoothed_loss\n");
        for (i, p) in self.points.iter().enumerate() {
            let _ = writeln!(out, "{},{},{},{}", i + 1, p.lr, p.loss, p.smoothed);
        }
        out
    }
}

/// Returns `steps` learning rates from `start` to `end`, evenly spaced on a log scale.
pub fn lr_schedule(start: f64, end: f64, steps: usize) -> Vec<f64> {
    if steps == 1 {
        return vec![start];
    }
    let ratio = end / start;
    (0..steps)
        .map(|i| start * ratio.powf(i as f64 / (steps - 1) as f64))
        .collect()
}

/// Smooths `losses` with a bias-corrected exponential moving average of decay `beta`.
///
/// Non-finite losses are skipped: they leave the average unchanged and get a
/// NaN smoothed value. The first finite loss is its own smoothed value.
pub fn smooth(losses: &[f64], beta: f64) -> Vec<f64> {
    let mut average = 0.0;
    let mut count = 0i32;
    losses
        .iter()
        .map(|&loss| {
            if !loss.is_finite() {
                return f64::NAN;
            }
            count += 1;
            average = beta * average + (1.0 - beta) * loss;
            average / (1.0 - beta.powi(count))
        })
        .collect()
}

/// Applies the three rules to the batch losses of a sweep (`lrs` increasing).
///
/// Non-finite points are dropped, the first [`SKIP_BEGIN_SHARE`] of the rest
/// are skipped, and the remaining losses are smoothed with decay `beta` (0
/// reads them as they are), see [`rule_curve`]. With fewer than
/// [`MIN_POINTS`] points left there is no suggestion.
pub fn suggest(lrs: &[f64], losses: &[f64], beta: f64) -> Vec<Suggestion> {
    let (lr, loss) = rule_curve(lrs, losses, beta);
    if lr.len() < MIN_POINTS {
        return Vec::new();
    }
    let mut suggestions = Vec::new();
    if let Some(i) = steepest_index(&lr, &loss) {
        suggestions.push(Suggestion {
            rule: Rule::Steepest,
            lr: lr[i],
        });
    }
    let minimum = (0..loss.len())
        .min_by(|&a, &b| loss[a].total_cmp(&loss[b]))
        .unwrap_or(0);
    suggestions.push(Suggestion {
        rule: Rule::MinimumTenth,
        lr: lr[minimum] / 10.0,
    });
    if let Some(i) = valley_index(&loss) {
        suggestions.push(Suggestion {
            rule: Rule::Valley,
            lr: lr[i],
        });
    }
    suggestions
}

/// Returns the `(rates, smoothed losses)` the rules read.
///
/// Keeps the finite points, drops the first [`SKIP_BEGIN_SHARE`] of them,
/// smooths the rest with a bias-corrected moving average of decay `beta`
/// started afresh, and drops that share again from the start of the result.
pub fn rule_curve(lrs: &[f64], losses: &[f64], beta: f64) -> (Vec<f64>, Vec<f64>) {
    let finite: Vec<(f64, f64)> = lrs
        .iter()
        .zip(losses)
        .filter(|(lr, loss)| lr.is_finite() && **lr > 0.0 && loss.is_finite())
        .map(|(&lr, &loss)| (lr, loss))
        .collect();
    let skip = (finite.len() as f64 * SKIP_BEGIN_SHARE).floor() as usize;
    let rest = &finite[skip..];
    let raw: Vec<f64> = rest.iter().map(|p| p.1).collect();
    let smoothed = smooth(&raw, beta);
    let warmup = if beta > 0.0 { skip } else { 0 };
    let start = warmup.min(rest.len());
    (
        rest[start..].iter().map(|p| p.0).collect(),
        smoothed[start..].to_vec(),
    )
}

/// Index of the most negative slope of `loss` against ln(lr), by central
/// differences (one-sided at the ends); `None` when the loss never falls.
fn steepest_index(lr: &[f64], loss: &[f64]) -> Option<usize> {
    let n = loss.len();
    let log: Vec<f64> = lr.iter().map(|v| v.ln()).collect();
    let slope = |i: usize| {
        let (a, b) = match i {
            0 => (0, 1),
            _ if i == n - 1 => (n - 2, n - 1),
            _ => (i - 1, i + 1),
        };
        (loss[b] - loss[a]) / (log[b] - log[a])
    };
    (0..n)
        .map(|i| (i, slope(i)))
        .filter(|(_, s)| s.is_finite() && *s < 0.0)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// Middle index of the longest run of consecutive points where the loss falls.
fn valley_index(loss: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    let mut start = 0;
    for i in 1..=loss.len() {
        let falling = i < loss.len() && loss[i] < loss[i - 1];
        if !falling {
            let length = i - 1 - start;
            if length > 0 && best.is_none_or(|(s, e)| length > e - s) {
                best = Some((start, i - 1));
            }
            start = i;
        }
    }
    best.map(|(s, e)| (s + e) / 2)
}

/// Lists the doubts about a curve read with decay `beta`: disagreeing
/// suggestions, noise, no descent, too few points.
pub fn curve_warnings(points: &[LrPoint], suggestions: &[Suggestion], beta: f64) -> Vec<String> {
    let mut warnings = Vec::new();
    let lrs: Vec<f64> = points.iter().map(|p| p.lr).collect();
    let losses: Vec<f64> = points.iter().map(|p| p.loss).collect();
    let (_, loss) = rule_curve(&lrs, &losses, beta);
    if loss.len() < MIN_POINTS {
        warnings.push(format!(
            "only {} usable points: the rules need at least {MIN_POINTS} finite losses after \
             the first {:.0}% of the sweep; use a smaller --start-lr or more --steps",
            loss.len(),
            2.0 * SKIP_BEGIN_SHARE * 100.0
        ));
        return warnings;
    }
    let low = suggestions
        .iter()
        .map(|s| s.lr)
        .fold(f64::INFINITY, f64::min);
    let high = suggestions.iter().map(|s| s.lr).fold(0.0, f64::max);
    if suggestions.len() > 1 && high > DISAGREEMENT_FACTOR * low {
        let listed: Vec<String> = suggestions
            .iter()
            .map(|s| format!("{} {:.3e}", s.rule.name(), s.lr))
            .collect();
        warnings.push(format!(
            "the suggestions disagree by a factor of {:.0} ({}); look at lr_find.png and pick \
             a rate where the loss falls steadily",
            high / low,
            listed.join(", ")
        ));
    }
    let drop = loss[0] - loss.iter().copied().fold(f64::INFINITY, f64::min);
    let raw: Vec<f64> = points
        .iter()
        .map(|p| p.loss)
        .filter(|v| v.is_finite())
        .collect();
    let noise = robust_noise(&raw[(raw.len() as f64 * SKIP_BEGIN_SHARE) as usize..]);
    if drop <= 0.0 {
        warnings.push(
            "the smoothed loss never fell below its value at the start of the sweep; try a \
             larger --end-lr, more --steps, or check the data"
                .to_string(),
        );
    } else if noise > NOISE_LIMIT * drop {
        warnings.push(format!(
            "the curve is too noisy to trust: batch losses vary by about {noise:.3} while the \
             smoothed loss falls by {drop:.3}; use a larger --batch-size or more --steps"
        ));
    }
    warnings
}

/// Robust standard deviation of the step-to-step changes: the median
/// absolute difference of neighbours divided by 0.954 (the median of |X - Y|
/// for independent normal X, Y is 0.954 standard deviations).
fn robust_noise(values: &[f64]) -> f64 {
    let mut diffs: Vec<f64> = values.windows(2).map(|w| (w[1] - w[0]).abs()).collect();
    if diffs.is_empty() {
        return 0.0;
    }
    diffs.sort_by(f64::total_cmp);
    diffs[diffs.len() / 2] / 0.954
}

/// Runs the range test on `train` from `initial` weights; nothing is written to disk.
///
/// Runs on any backend. The loss is read back once per step (the sweep
/// needs it to decide whether to stop). `units` converts losses into the
/// target's units as training does.
pub fn range_test<B: Backend>(
    backend: &B,
    spec: &ModelSpec,
    initial: &Params,
    train: &Dataset,
    units: Units,
    config: &LrFindConfig,
) -> Result<LrFindResult> {
    config.validate()?;
    if train.rows == 0 {
        bail!("the training part has no rows");
    }
    let batch_size = config.batch_size.min(train.rows);
    let mut net = Network::new(backend, spec, initial, &config.optimizer, batch_size)?;
    let x = backend.upload(&train.x)?;
    let y = backend.upload(&train.y)?;
    let mut batch_x = backend.zeros(batch_size * train.cols)?;
    let mut batch_y = backend.zeros(batch_size)?;
    let class_weights = config
        .class_weights
        .as_ref()
        .map(|w| backend.upload(w))
        .transpose()?;
    let mut order = backend.upload_idx(&(0..train.rows as u32).collect::<Vec<_>>())?;
    let mut stats = backend.new_stats()?;
    let batches = train.rows.div_ceil(batch_size);
    let lrs = lr_schedule(config.start_lr, config.end_lr, config.steps);

    let mut points = Vec::with_capacity(config.steps);
    let mut average = 0.0;
    let mut best = f64::INFINITY;
    let mut end = SweepEnd::Completed;
    // The sweep runs on the backend's worker threads, like a training run.
    backend.run(|| -> Result<()> {
        for (step, &lr) in lrs.iter().enumerate() {
            let (epoch, b) = (step / batches, step % batches);
            if b == 0 {
                let permutation = rng::epoch_permutation(config.seed, epoch as u64, train.rows);
                backend.write_idx(&permutation, &mut order)?;
            }
            let start = b * batch_size;
            let rows = batch_size.min(train.rows - start);
            backend.gather_rows(&x, train.cols, &order, start, rows, &mut batch_x)?;
            backend.gather_rows(&y, 1, &order, start, rows, &mut batch_y)?;
            backend.reset_stats(&mut stats)?;
            net.compute_gradients(
                backend,
                &batch_x,
                &batch_y,
                rows,
                class_weights.as_ref(),
                step as u64,
                config.seed,
                b as u64,
                &mut stats,
            )?;
            let values = backend.read_stats(&stats)?;
            let loss = values.loss_sum / values.rows.max(1.0) * units.loss;
            if values.nonfinite_batch.is_some() || !loss.is_finite() {
                points.push(LrPoint {
                    lr,
                    loss: f64::NAN,
                    smoothed: f64::NAN,
                });
                end = SweepEnd::NonFinite { step: step + 1 };
                break;
            }
            net.apply_gradients(
                backend,
                &config.optimizer,
                lr as f32,
                step as u64,
                &mut stats,
            )?;
            // Every earlier point is finite: the sweep ends at the first that is not.
            average = SMOOTHING * average + (1.0 - SMOOTHING) * loss;
            let smoothed = average / (1.0 - SMOOTHING.powi(points.len() as i32 + 1));
            points.push(LrPoint { lr, loss, smoothed });
            if step > 0 && smoothed > DIVERGENCE_FACTOR * best {
                end = SweepEnd::Diverged { step: step + 1 };
                break;
            }
            best = best.min(smoothed);
        }
        Ok(())
    })?;

    let lrs: Vec<f64> = points.iter().map(|p| p.lr).collect();
    let losses: Vec<f64> = points.iter().map(|p| p.loss).collect();
    let suggestions = suggest(&lrs, &losses, SMOOTHING);
    let mut warnings = curve_warnings(&points, &suggestions, SMOOTHING);
    if let SweepEnd::NonFinite { step } = end {
        warnings.push(format!(
            "the loss was not finite at step {step} (learning rate {:.3e}); the suggestions \
             use the {} finite points before it",
            lrs[step - 1],
            step - 1
        ));
    }
    Ok(LrFindResult {
        points,
        end,
        suggestions,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_geometric() {
        let lrs = lr_schedule(1e-7, 10.0, 100);
        assert_eq!(lrs.len(), 100);
        assert!((lrs[0] - 1e-7).abs() < 1e-20);
        assert!((lrs[99] - 10.0).abs() < 1e-9);
        let ratio = lrs[1] / lrs[0];
        assert!((lrs[51] / lrs[50] - ratio).abs() < 1e-9);
    }

    #[test]
    fn smoothing_is_bias_corrected() {
        let smoothed = smooth(&[2.0, 2.0, 2.0], SMOOTHING);
        for v in smoothed {
            assert!((v - 2.0).abs() < 1e-12, "{v}");
        }
    }

    #[test]
    fn smoothing_skips_non_finite() {
        let with_nan = smooth(&[1.0, f64::NAN, 3.0], 0.5);
        let without = smooth(&[1.0, 3.0], 0.5);
        assert!(with_nan[1].is_nan());
        assert_eq!(with_nan[2], without[1]);
    }

    #[test]
    fn valley_is_middle_of_longest_fall() {
        let loss = [3.0, 2.0, 2.5, 2.4, 2.3, 2.2, 2.1, 2.6];
        // Falls over 2..=6; the middle is 4.
        assert_eq!(valley_index(&loss), Some(4));
        assert_eq!(valley_index(&[1.0, 1.0, 2.0]), None);
    }

    #[test]
    fn validate_rejects_bad_ranges() {
        let config = LrFindConfig {
            start_lr: 1e-7,
            end_lr: 10.0,
            steps: 100,
            batch_size: 32,
            seed: 1,
            optimizer: OptimizerConfig {
                optimizer: crate::optim::Optimizer::with_defaults("sgd").unwrap(),
                lr: 0.01,
                l2: 0.0,
                weight_decay: 0.0,
                clipnorm: None,
            },
            class_weights: None,
        };
        assert!(config.validate().is_ok());
        let bad = LrFindConfig {
            end_lr: 1e-8,
            ..config.clone()
        };
        let message = bad.validate().unwrap_err().to_string();
        assert!(message.contains("--end-lr"), "{message}");
        let bad = LrFindConfig {
            start_lr: 0.0,
            ..config.clone()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("--start-lr")
        );
        let bad = LrFindConfig { steps: 2, ..config };
        assert!(bad.validate().unwrap_err().to_string().contains("--steps"));
    }
}
