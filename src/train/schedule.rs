//! Learning-rate control per epoch: a fixed schedule, or Keras's
//! `ReduceLROnPlateau` on the quantity that early stopping monitors.
//!
//! The rate is set at the start of each epoch and stays fixed within it, so
//! history.csv records one rate per epoch. Schedules are closed-form functions
//! of the epoch (counted from 1) and the base rate `lr`:
//! - step: `lr * gamma^floor((epoch - 1) / step_size)` (PyTorch's `StepLR`);
//! - exponential: `lr * gamma^(epoch - 1)` (PyTorch's `ExponentialLR`);
//! - cosine: `min_lr + (lr - min_lr) * (1 + cos(pi * t / T)) / 2` with
//!   `t = min(epoch - 1, T)` (PyTorch's `CosineAnnealingLR` in closed form,
//!   Keras's `CosineDecay` with `alpha = min_lr / lr`).
//!
//! Rates are computed in f64 and rounded to f32, the precision the optimizer
//! uses.

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// A per-epoch learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// The base rate in every epoch (changed only by plateau reduction).
    #[default]
    Constant,
    /// Multiply by `gamma` every `step_size` epochs.
    Step { step_size: usize, gamma: f64 },
    /// Multiply by `gamma` every epoch.
    Exponential { gamma: f64 },
    /// Cosine annealing from the base rate down to `min_lr` over `epochs` epochs.
    Cosine { epochs: usize, min_lr: f64 },
}

impl LrSchedule {
    /// Checks the parameters; each error names the option that sets the value.
    pub fn validate(&self) -> Result<()> {
        match *self {
            LrSchedule::Constant => {}
            LrSchedule::Step { step_size, gamma } => {
                if step_size == 0 {
                    bail!("invalid --lr-step-size 0: expected at least 1 epoch");
                }
                check_gamma(gamma)?;
            }
            LrSchedule::Exponential { gamma } => check_gamma(gamma)?,
            LrSchedule::Cosine { epochs, min_lr } => {
                if epochs == 0 {
                    bail!("invalid --lr-cosine-epochs 0: expected at least 1 epoch");
                }
                check_min_lr(min_lr)?;
            }
        }
        Ok(())
    }

    /// Returns the rate of `epoch` (counted from 1) for base rate `base`.
    pub fn rate(&self, base: f32, epoch: usize) -> f32 {
        let base = f64::from(base);
        let e = epoch.saturating_sub(1);
        let rate = match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => {
                base * gamma.powi(exponent(e / step_size.max(1)))
            }
            LrSchedule::Exponential { gamma } => base * gamma.powi(exponent(e)),
            LrSchedule::Cosine { epochs, min_lr } => {
                let t = e.min(epochs) as f64 / epochs.max(1) as f64;
                min_lr + (base - min_lr) * (1.0 + (std::f64::consts::PI * t).cos()) / 2.0
            }
        };
        rate as f32
    }
}

fn exponent(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn check_gamma(gamma: f64) -> Result<()> {
    if !(gamma > 0.0 && gamma.is_finite()) {
        bail!("invalid --lr-gamma {gamma}: expected a positive factor, e.g. 0.5");
    }
    Ok(())
}

fn check_min_lr(min_lr: f64) -> Result<()> {
    if !(min_lr >= 0.0 && min_lr.is_finite()) {
        bail!("invalid --min-lr {min_lr}: expected a finite rate of at least 0");
    }
    Ok(())
}

/// Settings of plateau reduction, with Keras's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlateauConfig {
    /// Factor applied to the rate, in `(0, 1)` (default 0.1).
    pub factor: f64,
    /// Epochs without improvement before a reduction (default 10).
    pub patience: usize,
    /// An epoch improves only if it beats the best by more than this (default 1e-4).
    pub min_delta: f64,
    /// Epochs after a reduction during which no epoch counts as waiting (default 0).
    pub cooldown: usize,
    /// The rate is never reduced below this (default 0).
    pub min_lr: f64,
}

impl Default for PlateauConfig {
    fn default() -> Self {
        Self {
            factor: 0.1,
            patience: 10,
            min_delta: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
        }
    }
}

impl PlateauConfig {
    /// Checks the values; each error names its option.
    pub fn validate(&self) -> Result<()> {
        if !(self.factor > 0.0 && self.factor < 1.0) {
            bail!(
                "invalid --reduce-lr-factor {}: expected a factor above 0 and below 1, e.g. 0.1",
                self.factor
            );
        }
        if !(self.min_delta >= 0.0 && self.min_delta.is_finite()) {
            bail!(
                "invalid --reduce-lr-min-delta {}: expected a finite value of at least 0",
                self.min_delta
            );
        }
        check_min_lr(self.min_lr)
    }
}

/// Counters of plateau reduction, kept in checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct PlateauState {
    /// Best monitored value so far; `None` before the first comparable value.
    pub best: Option<f64>,
    /// Epochs since the last improvement (outside cooldown).
    pub wait: usize,
    /// Epochs of cooldown left.
    pub cooldown_counter: usize,
}

/// Keras's `ReduceLROnPlateau`, applied at the end of each epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct ReduceLrOnPlateau {
    config: PlateauConfig,
    maximize: bool,
    state: PlateauState,
}

impl ReduceLrOnPlateau {
    /// Creates the callback; `maximize` is the monitored quantity's direction.
    pub fn new(config: PlateauConfig, maximize: bool) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            maximize,
            state: PlateauState::default(),
        })
    }

    /// The counters.
    pub fn state(&self) -> PlateauState {
        self.state
    }

    /// Replaces the counters (resuming a checkpoint).
    pub fn restore(&mut self, state: PlateauState) {
        self.state = state;
    }

    /// Records the epoch's monitored `value` and returns the rate for the next
    /// epoch given the current rate `lr`.
    ///
    /// Follows `keras.callbacks.ReduceLROnPlateau.on_epoch_end` (Keras 3). A
    /// cooldown epoch decrements the cooldown and resets the wait. An
    /// improvement of more than `min_delta` resets the wait. Otherwise, outside
    /// cooldown, the wait grows. When it reaches `patience`, a rate above
    /// `min_lr` becomes `max(lr * factor, min_lr)`, the cooldown starts and the
    /// wait resets. A NaN value never improves.
    pub fn update(&mut self, value: f64, lr: f32) -> f32 {
        let state = &mut self.state;
        if state.cooldown_counter > 0 {
            state.cooldown_counter -= 1;
            state.wait = 0;
        }
        if self.is_improvement(value) {
            self.state.best = Some(value);
            self.state.wait = 0;
            return lr;
        }
        let state = &mut self.state;
        if state.cooldown_counter > 0 {
            return lr;
        }
        state.wait += 1;
        if state.wait < self.config.patience {
            return lr;
        }
        // Keras compares the float32 rate with float32(min_lr) and computes the
        // product in float64 before storing it as float32.
        if lr <= self.config.min_lr as f32 {
            return lr;
        }
        let reduced = (f64::from(lr) * self.config.factor).max(self.config.min_lr) as f32;
        state.cooldown_counter = self.config.cooldown;
        state.wait = 0;
        reduced
    }

    fn is_improvement(&self, value: f64) -> bool {
        if value.is_nan() {
            return false;
        }
        let d = self.config.min_delta;
        match self.state.best {
            None if self.maximize => value > f64::NEG_INFINITY + d,
            None => value < f64::INFINITY - d,
            Some(best) if self.maximize => value > best + d,
            Some(best) => value < best - d,
        }
    }
}

/// Learning-rate control of a fit: a schedule or plateau reduction.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct LrControl {
    /// A per-epoch schedule.
    pub schedule: LrSchedule,
    /// Plateau reduction; Keras also rejects it together with a schedule.
    pub plateau: Option<PlateauConfig>,
}

impl LrControl {
    /// Checks the settings and their combination.
    pub fn validate(&self) -> Result<()> {
        self.schedule.validate()?;
        if let Some(plateau) = &self.plateau {
            plateau.validate()?;
            if self.schedule != LrSchedule::Constant {
                bail!(
                    "--reduce-lr-on-plateau and --lr-schedule both set the learning rate; \
                     use one of them"
                );
            }
        }
        Ok(())
    }
}

/// The learning rate of a fit as it runs.
#[derive(Clone, Debug)]
pub struct LrState {
    base: f32,
    current: f32,
    schedule: LrSchedule,
    plateau: Option<ReduceLrOnPlateau>,
}

/// The part of [`LrState`] that changes, kept in checkpoints.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSnapshot {
    /// Rate of the next epoch when no schedule applies (plateau reductions included).
    pub current: f32,
    /// Plateau counters, when plateau reduction is on.
    pub plateau: Option<PlateauState>,
}

impl LrState {
    /// Starts at `base`; `maximize` is the direction of the monitored quantity.
    pub fn new(control: &LrControl, base: f32, maximize: bool) -> Result<Self> {
        control.validate()?;
        let plateau = control
            .plateau
            .map(|config| ReduceLrOnPlateau::new(config, maximize))
            .transpose()?;
        Ok(Self {
            base,
            current: base,
            schedule: control.schedule,
            plateau,
        })
    }

    /// Returns the rate of `epoch` (counted from 1).
    pub fn rate(&self, epoch: usize) -> f32 {
        match self.schedule {
            LrSchedule::Constant => self.current,
            schedule => schedule.rate(self.base, epoch),
        }
    }

    /// Records the monitored value at the end of an epoch that ran at `lr`;
    /// returns the new rate when plateau reduction lowered it.
    pub fn end_epoch(&mut self, value: f64, lr: f32) -> Option<f32> {
        let plateau = self.plateau.as_mut()?;
        let next = plateau.update(value, lr);
        self.current = next;
        (next != lr).then_some(next)
    }

    /// Returns the changing part, for a checkpoint.
    pub fn snapshot(&self) -> LrSnapshot {
        LrSnapshot {
            current: self.current,
            plateau: self.plateau.as_ref().map(ReduceLrOnPlateau::state),
        }
    }

    /// Restores the changing part from a checkpoint.
    pub fn restore(&mut self, snapshot: &LrSnapshot) -> Result<()> {
        self.current = snapshot.current;
        match (&mut self.plateau, snapshot.plateau) {
            (Some(plateau), Some(state)) => plateau.restore(state),
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                bail!("the checkpoint and the settings disagree on --reduce-lr-on-plateau")
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rates(schedule: LrSchedule, base: f32, epochs: usize) -> Vec<f32> {
        (1..=epochs).map(|e| schedule.rate(base, e)).collect()
    }

    #[test]
    fn step_schedule_matches_hand_values() {
        let schedule = LrSchedule::Step {
            step_size: 2,
            gamma: 0.5,
        };
        assert_eq!(
            rates(schedule, 0.1, 6),
            [0.1, 0.1, 0.05, 0.05, 0.025, 0.025]
        );
    }

    #[test]
    fn exponential_schedule_matches_hand_values() {
        let schedule = LrSchedule::Exponential { gamma: 0.9 };
        // 0.01 * 0.9^k for k = 0..3; f32 keeps about 7 significant digits.
        let expected = [0.01, 0.009, 0.0081, 0.00729];
        for (epoch, (got, want)) in rates(schedule, 0.01, 4).iter().zip(expected).enumerate() {
            let error = (f64::from(*got) - want).abs() / want;
            assert!(error < 1e-6, "epoch {}: {got} vs {want}", epoch + 1);
        }
    }

    #[test]
    fn cosine_schedule_matches_hand_values() {
        let schedule = LrSchedule::Cosine {
            epochs: 4,
            min_lr: 0.0,
        };
        // 0.5 * (1 + cos(pi * t / 4)) for t = 0..5; t stops at 4.
        let half_sqrt2 = std::f64::consts::FRAC_1_SQRT_2;
        let expected = [
            1.0,
            0.5 * (1.0 + half_sqrt2),
            0.5,
            0.5 * (1.0 - half_sqrt2),
            0.0,
            0.0,
        ];
        let got = rates(schedule, 1.0, 6);
        for (epoch, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!(
                (f64::from(*g) - e).abs() < 1e-7,
                "epoch {}: {g} vs {e}",
                epoch + 1
            );
        }
        let floor = LrSchedule::Cosine {
            epochs: 2,
            min_lr: 0.1,
        };
        assert_eq!(rates(floor, 0.5, 3), [0.5, 0.3, 0.1]);
    }

    #[test]
    fn schedule_parameters_are_checked() {
        let err = LrSchedule::Step {
            step_size: 0,
            gamma: 0.1,
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(err.contains("--lr-step-size 0"), "{err}");
        let err = LrSchedule::Exponential { gamma: -1.0 }
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("--lr-gamma -1"), "{err}");
    }

    /// Runs plateau reduction over `values`, starting at `lr`, and returns the
    /// rate used in each epoch.
    fn plateau_rates(config: PlateauConfig, values: &[f64], lr: f32) -> Vec<f32> {
        let control = LrControl {
            schedule: LrSchedule::Constant,
            plateau: Some(config),
        };
        let mut state = LrState::new(&control, lr, false).unwrap();
        let mut used = Vec::new();
        for (i, &value) in values.iter().enumerate() {
            let rate = state.rate(i + 1);
            used.push(rate);
            state.end_epoch(value, rate);
        }
        used
    }

    #[test]
    fn plateau_reduces_after_patience() {
        let config = PlateauConfig {
            patience: 2,
            ..PlateauConfig::default()
        };
        // Epoch 1 sets the best; epochs 2 and 3 do not improve, so epoch 4 runs at 0.1x.
        let values = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
        assert_eq!(
            plateau_rates(config, &values, 1.0),
            [1.0, 1.0, 1.0, 0.1, 0.1, 0.01]
        );
    }

    #[test]
    fn plateau_improvement_needs_more_than_min_delta() {
        let config = PlateauConfig {
            patience: 1,
            min_delta: 0.25,
            ..PlateauConfig::default()
        };
        // 0.75 is exactly min_delta below 1.0: no improvement, so the rate drops.
        assert_eq!(
            plateau_rates(config, &[1.0, 0.75, 0.4], 1.0),
            [1.0, 1.0, 0.1]
        );
    }

    #[test]
    fn plateau_cooldown_and_min_lr() {
        let config = PlateauConfig {
            patience: 1,
            factor: 0.5,
            cooldown: 2,
            min_lr: 0.3,
            min_delta: 0.0,
        };
        // Epoch 2 waits 1 -> 0.5 with cooldown 2. Epoch 3 spends one cooldown epoch.
        // Epoch 4 spends the other, and, as in Keras, counts as waiting in the same
        // call -> max(0.25, 0.3) = 0.3. From then on the rate is at min_lr and stays.
        let values = [1.0; 9];
        assert_eq!(
            plateau_rates(config, &values, 1.0),
            [1.0, 1.0, 0.5, 0.5, 0.3, 0.3, 0.3, 0.3, 0.3]
        );
    }

    #[test]
    fn plateau_keras_reference_sequence() {
        // keras.callbacks.ReduceLROnPlateau(patience=2, factor=0.5, cooldown=1,
        // min_delta=0) on val_loss [5, 4, 4, 4, 4, 3, 3, 3, 3] with lr 1.0, traced by
        // hand through on_epoch_end: reductions after epochs 4 and 8.
        let config = PlateauConfig {
            patience: 2,
            factor: 0.5,
            cooldown: 1,
            min_delta: 0.0,
            min_lr: 0.0,
        };
        let values = [5.0, 4.0, 4.0, 4.0, 4.0, 3.0, 3.0, 3.0, 3.0, 3.0];
        assert_eq!(
            plateau_rates(config, &values, 1.0),
            [1.0, 1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
        );
    }

    #[test]
    fn plateau_factor_must_be_below_one() {
        let config = PlateauConfig {
            factor: 1.0,
            ..PlateauConfig::default()
        };
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--reduce-lr-factor 1"), "{err}");
    }

    #[test]
    fn plateau_and_schedule_are_exclusive() {
        let control = LrControl {
            schedule: LrSchedule::Exponential { gamma: 0.9 },
            plateau: Some(PlateauConfig::default()),
        };
        let err = control.validate().unwrap_err().to_string();
        assert!(err.contains("use one of them"), "{err}");
    }

    #[test]
    fn plateau_maximizes_accuracy() {
        let mut plateau = ReduceLrOnPlateau::new(
            PlateauConfig {
                patience: 1,
                ..PlateauConfig::default()
            },
            true,
        )
        .unwrap();
        assert_eq!(plateau.update(0.5, 1.0), 1.0);
        assert_eq!(plateau.update(0.6, 1.0), 1.0);
        assert_eq!(plateau.update(0.55, 1.0), 0.1);
    }
}
