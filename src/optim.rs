//! Optimizer settings and the per-step update rule handed to a backend.
//!
//! The formulas follow Keras 3 (`keras/src/optimizers/*.py`):
//! - SGD: `v = momentum * v - lr * g`, then `w += v`, or with Nesterov
//!   `w += momentum * v - lr * g`; without momentum `w -= lr * g`.
//! - Adam: `m = beta1 * m + (1 - beta1) * g`, `v = beta2 * v + (1 - beta2) * g^2`,
//!   `w -= lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)`
//!   (Keras's epsilon placement), or with the PyTorch placement
//!   `w -= lr * m_hat / (sqrt(v_hat) + eps)` with bias-corrected moments.
//! - AdamW: Adam plus decoupled weight decay.
//! - RMSprop: `v = rho * v + (1 - rho) * g^2`, `inc = lr * g / sqrt(v + eps)`,
//!   then `w -= inc`, or with momentum `mom = momentum * mom + inc`, `w -= mom`.
//!
//! Decoupled weight decay (`--weight-decay`, any optimizer) runs before the
//! update: `w -= lr * weight_decay * w`. The L2 penalty (`--l2`) adds
//! `l2 * sum(w^2)` to the loss and `2 * l2 * w` to the gradient. Both apply
//! to weight matrices only, never to biases.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Where Adam adds epsilon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EpsilonStyle {
    /// To the square root of the uncorrected second moment, with the bias
    /// correction folded into the step size (Keras).
    #[default]
    Keras,
    /// To the square root of the bias-corrected second moment (PyTorch).
    Pytorch,
}

/// Optimizer algorithm and its hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Optimizer {
    /// Stochastic gradient descent; defaults momentum 0, no Nesterov.
    Sgd { momentum: f32, nesterov: bool },
    /// Adam; defaults beta1 0.9, beta2 0.999, epsilon 1e-7.
    Adam {
        beta1: f32,
        beta2: f32,
        epsilon: f32,
        epsilon_style: EpsilonStyle,
    },
    /// Adam with decoupled weight decay; the decay itself is in [`OptimizerConfig`].
    AdamW {
        beta1: f32,
        beta2: f32,
        epsilon: f32,
        epsilon_style: EpsilonStyle,
    },
    /// RMSprop; defaults rho 0.9, momentum 0, epsilon 1e-7.
    RmsProp {
        rho: f32,
        momentum: f32,
        epsilon: f32,
    },
}

impl Optimizer {
    /// Returns the optimizer called `name` (`sgd`, `adam`, `adamw`, `rmsprop`) with Keras's defaults.
    pub fn with_defaults(name: &str) -> Option<Self> {
        Some(match name {
            "sgd" => Self::Sgd {
                momentum: 0.0,
                nesterov: false,
            },
            "adam" => Self::Adam {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-7,
                epsilon_style: EpsilonStyle::Keras,
            },
            "adamw" => Self::AdamW {
                beta1: 0.9,
                beta2: 0.999,
                epsilon: 1e-7,
                epsilon_style: EpsilonStyle::Keras,
            },
            "rmsprop" => Self::RmsProp {
                rho: 0.9,
                momentum: 0.0,
                epsilon: 1e-7,
            },
            _ => return None,
        })
    }

    /// The command-line name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Sgd { .. } => "sgd",
            Self::Adam { .. } => "adam",
            Self::AdamW { .. } => "adamw",
            Self::RmsProp { .. } => "rmsprop",
        }
    }

    /// Keras's default learning rate: 0.01 for SGD, 0.001 otherwise.
    pub fn default_lr(&self) -> f32 {
        match self {
            Self::Sgd { .. } => 0.01,
            _ => 0.001,
        }
    }

    /// Keras's default decoupled weight decay: 0.004 for AdamW, 0 otherwise.
    pub fn default_weight_decay(&self) -> f32 {
        match self {
            Self::AdamW { .. } => 0.004,
            _ => 0.0,
        }
    }

    /// Number of state buffers per parameter tensor.
    pub fn slot_count(&self) -> usize {
        match self {
            Self::Sgd { momentum, .. } => usize::from(*momentum != 0.0),
            Self::Adam { .. } | Self::AdamW { .. } => 2,
            Self::RmsProp { momentum, .. } => 1 + usize::from(*momentum != 0.0),
        }
    }
}

/// Everything that decides how parameters move.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OptimizerConfig {
    /// The algorithm.
    pub optimizer: Optimizer,
    /// Learning rate (> 0).
    pub lr: f32,
    /// L2 penalty factor on weight matrices (>= 0; default 0).
    pub l2: f32,
    /// Decoupled weight decay factor on weight matrices (>= 0; default 0.004 for AdamW, else 0).
    pub weight_decay: f32,
    /// Clip the global gradient norm to this value (> 0), if set.
    pub clipnorm: Option<f32>,
}

impl OptimizerConfig {
    /// Returns the rule for optimizer step `t` (counted from 1) of one tensor.
    ///
    /// `is_weight` selects whether L2 and weight decay apply (weights yes, biases no).
    pub fn rule(&self, t: u64, lr: f32, is_weight: bool) -> UpdateRule {
        UpdateRule {
            optimizer: self.optimizer,
            lr,
            t,
            l2: if is_weight { self.l2 } else { 0.0 },
            weight_decay: if is_weight { self.weight_decay } else { 0.0 },
        }
    }
}

impl fmt::Display for OptimizerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (lr {}", self.optimizer.name(), self.lr)?;
        match self.optimizer {
            Optimizer::Sgd { momentum, nesterov } => {
                write!(f, ", momentum {momentum}")?;
                if nesterov {
                    write!(f, ", nesterov")?;
                }
            }
            Optimizer::Adam {
                beta1,
                beta2,
                epsilon,
                epsilon_style,
            }
            | Optimizer::AdamW {
                beta1,
                beta2,
                epsilon,
                epsilon_style,
            } => {
                let style = match epsilon_style {
                    EpsilonStyle::Keras => "keras",
                    EpsilonStyle::Pytorch => "pytorch",
                };
                write!(
                    f,
                    ", beta1 {beta1}, beta2 {beta2}, epsilon {epsilon:e} ({style} style)"
                )?;
            }
            Optimizer::RmsProp {
                rho,
                momentum,
                epsilon,
            } => write!(f, ", rho {rho}, momentum {momentum}, epsilon {epsilon:e}")?,
        }
        if self.weight_decay > 0.0 {
            write!(f, ", weight decay {}", self.weight_decay)?;
        }
        if self.l2 > 0.0 {
            write!(f, ", l2 {}", self.l2)?;
        }
        if let Some(c) = self.clipnorm {
            write!(f, ", clipnorm {c}")?;
        }
        write!(f, ")")
    }
}

/// What one optimizer step does to one tensor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UpdateRule {
    /// The algorithm and its hyperparameters.
    pub optimizer: Optimizer,
    /// Learning rate of this step.
    pub lr: f32,
    /// Step number, counted from 1 (Adam's bias correction).
    pub t: u64,
    /// L2 penalty factor (0 for biases).
    pub l2: f32,
    /// Decoupled weight decay factor (0 for biases).
    pub weight_decay: f32,
}

impl UpdateRule {
    /// Number of state buffers the rule needs.
    pub fn slot_count(&self) -> usize {
        self.optimizer.slot_count()
    }
}

/// Per-step scalars of Adam's bias correction, computed on the host in f64.
///
/// Both epsilon placements reduce to one update,
/// `w -= step_size * m / (sqrt(v) * denom_scale + eps)`:
/// Keras folds both corrections into `step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t)`
/// with `denom_scale = 1`, PyTorch uses `step_size = lr / (1 - beta1^t)` and
/// `denom_scale = 1 / sqrt(1 - beta2^t)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamScalars {
    /// Factor of `m` in the update.
    pub step_size: f32,
    /// Factor of `sqrt(v)` in the denominator.
    pub denom_scale: f32,
}

impl AdamScalars {
    /// Computes the scalars of step `t` (counted from 1; 0 is treated as 1).
    pub fn new(lr: f32, beta1: f32, beta2: f32, t: u64, style: EpsilonStyle) -> Self {
        // Exponents beyond i32 leave beta^t at 0 for any beta below 1.
        let t = t.clamp(1, i32::MAX as u64) as i32;
        let correction1 = 1.0 - f64::from(beta1).powi(t);
        let correction2 = 1.0 - f64::from(beta2).powi(t);
        let lr = f64::from(lr);
        let (step_size, denom_scale) = match style {
            EpsilonStyle::Keras => (lr * correction2.sqrt() / correction1, 1.0),
            EpsilonStyle::Pytorch => (lr / correction1, 1.0 / correction2.sqrt()),
        };
        Self {
            step_size: step_size as f32,
            denom_scale: denom_scale as f32,
        }
    }
}
