//! Layer specification, parameters, initialisation and model files.

pub mod file;
pub mod init;
pub mod network;

use crate::backend::LossKind;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::fmt;

pub use network::Network;

/// Negative slope of `leaky_relu` (Keras's `keras.activations.leaky_relu` default).
pub const LEAKY_RELU_SLOPE: f32 = 0.2;
/// Alpha of `elu` (Keras and PyTorch default).
pub const ELU_ALPHA: f32 = 1.0;

/// Activation of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(0, z)`.
    Relu,
    /// `z` for `z > 0`, else `LEAKY_RELU_SLOPE * z`.
    LeakyRelu,
    /// `z` for `z > 0`, else `ELU_ALPHA * (exp(z) - 1)`.
    Elu,
    /// `tanh(z)`.
    Tanh,
    /// `1 / (1 + exp(-z))`.
    Sigmoid,
    /// `z` (output layers; the loss applies softmax or sigmoid itself).
    Linear,
}

impl Activation {
    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "relu" => Self::Relu,
            "leaky_relu" => Self::LeakyRelu,
            "elu" => Self::Elu,
            "tanh" => Self::Tanh,
            "sigmoid" => Self::Sigmoid,
            "linear" => Self::Linear,
            other => bail!(
                "invalid activation '{other}': expected relu, leaky_relu, elu, tanh or sigmoid"
            ),
        })
    }

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relu => "relu",
            Self::LeakyRelu => "leaky_relu",
            Self::Elu => "elu",
            Self::Tanh => "tanh",
            Self::Sigmoid => "sigmoid",
            Self::Linear => "linear",
        }
    }

    /// Whether the activation belongs to the ReLU family (He initialisation by default).
    pub fn is_relu_family(self) -> bool {
        matches!(self, Self::Relu | Self::LeakyRelu | Self::Elu)
    }

    /// Applies the activation to one pre-activation value.
    #[inline]
    pub fn apply(self, z: f32) -> f32 {
        match self {
            // Not `z.max(0.0)`: that maps NaN to 0 and would hide a non-finite input.
            Self::Relu => {
                if z < 0.0 {
                    0.0
                } else {
                    z
                }
            }
            Self::LeakyRelu => {
                if z > 0.0 {
                    z
                } else {
                    LEAKY_RELU_SLOPE * z
                }
            }
            Self::Elu => {
                if z > 0.0 {
                    z
                } else {
                    ELU_ALPHA * z.exp_m1()
                }
            }
            Self::Tanh => z.tanh(),
            Self::Sigmoid => 1.0 / (1.0 + (-z).exp()),
            Self::Linear => z,
        }
    }

    /// Returns the derivative at the point whose activation output is `y`.
    ///
    /// Every supported activation's derivative is a function of its output,
    /// so the backward pass needs no stored pre-activations.
    #[inline]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Self::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Self::LeakyRelu => {
                if y > 0.0 {
                    1.0
                } else {
                    LEAKY_RELU_SLOPE
                }
            }
            Self::Elu => {
                if y > 0.0 {
                    1.0
                } else {
                    y + ELU_ALPHA
                }
            }
            Self::Tanh => 1.0 - y * y,
            Self::Sigmoid => y * (1.0 - y),
            Self::Linear => 1.0,
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Weight initialisation scheme (biases always start at zero).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// He uniform: `U(-sqrt(6 / fan_in), sqrt(6 / fan_in))`.
    He,
    /// Glorot uniform: `U(-sqrt(6 / (fan_in + fan_out)), ...)`.
    Glorot,
    /// LeCun uniform: `U(-sqrt(3 / fan_in), sqrt(3 / fan_in))`.
    Lecun,
}

impl Init {
    /// Parses a command-line name.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "he" => Self::He,
            "glorot" => Self::Glorot,
            "lecun" => Self::Lecun,
            other => bail!("invalid initialiser '{other}': expected he, glorot or lecun"),
        })
    }

    /// The default for hidden layers with `act`: He before the ReLU family, Glorot otherwise.
    pub fn default_for(act: Activation) -> Self {
        if act.is_relu_family() {
            Self::He
        } else {
            Self::Glorot
        }
    }

    /// Name printed in the model summary.
    pub fn name(self) -> &'static str {
        match self {
            Self::He => "he_uniform",
            Self::Glorot => "glorot_uniform",
            Self::Lecun => "lecun_uniform",
        }
    }
}

/// Architecture of a dense network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Number of input features.
    pub inputs: usize,
    /// Hidden layer sizes, first to last; empty for a linear or logistic model.
    pub hidden: Vec<usize>,
    /// Activation of every hidden layer.
    pub activation: Activation,
    /// Number of outputs: classes for softmax, 1 for sigmoid or regression.
    pub outputs: usize,
    /// Output activation and loss.
    pub loss: LossKind,
    /// Initialisation of hidden layers; the output layer uses Glorot uniform
    /// (it has no ReLU after it).
    pub init: Init,
    /// Dropout rate applied after each hidden layer, in `[0, 1)`.
    pub dropout: f32,
}

impl ModelSpec {
    /// Returns `(inputs, outputs)` of every layer, hidden layers first, the output layer last.
    pub fn layer_shapes(&self) -> Vec<(usize, usize)> {
        let mut sizes = vec![self.inputs];
        sizes.extend(&self.hidden);
        sizes.push(self.outputs);
        sizes.windows(2).map(|w| (w[0], w[1])).collect()
    }

    /// Returns the activation of layer `index` (the output layer is linear: the loss applies
    /// softmax or sigmoid).
    pub fn layer_activation(&self, index: usize) -> Activation {
        if index < self.hidden.len() {
            self.activation
        } else {
            Activation::Linear
        }
    }

    /// Returns the initialiser of layer `index`.
    pub fn layer_init(&self, index: usize) -> Init {
        if index < self.hidden.len() {
            self.init
        } else {
            Init::Glorot
        }
    }

    /// Total number of trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.layer_shapes().iter().map(|(i, o)| i * o + o).sum()
    }

    /// Checks sizes and rates.
    pub fn validate(&self) -> Result<()> {
        if self.inputs == 0 {
            bail!("the data has no feature columns: nothing to train on");
        }
        if let Some(pos) = self.hidden.iter().position(|&h| h == 0) {
            bail!(
                "invalid --layers: hidden layer {} has 0 units; every layer needs at least 1",
                pos + 1
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            bail!(
                "invalid --dropout {}: expected a rate of at least 0 and below 1",
                self.dropout
            );
        }
        self.check_size()
    }

    /// Rejects a model whose parameters cannot fit in memory, before anything is allocated
    /// (an allocation failure would abort the process instead of reporting an error).
    fn check_size(&self) -> Result<()> {
        let count = self.layer_shapes().iter().try_fold(0u64, |sum, &(i, o)| {
            (i as u64)
                .checked_mul(o as u64)
                .and_then(|w| w.checked_add(o as u64))
                .and_then(|layer| sum.checked_add(layer))
        });
        // Weights, gradients, two optimizer slots and two snapshots, 4 bytes each.
        let bytes = count.and_then(|c| c.checked_mul(4 * 6));
        let available = available_memory_bytes();
        let fits = match (bytes, available) {
            (None, _) => false,
            (Some(b), Some(avail)) => b <= avail,
            (Some(b), None) => b <= u64::from(u32::MAX) * 64,
        };
        if !fits {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            let needed = bytes.map_or("more than 2^64 bytes".to_string(), |b| {
                format!("about {:.1} GiB", gib(b))
            });
            let have = available.map_or(String::new(), |a| {
                format!(" and this machine has {:.1} GiB available", gib(a))
            });
            let hidden: Vec<String> = self.hidden.iter().map(usize::to_string).collect();
            bail!(
                "invalid --layers {}: the model needs {needed} for its weights, gradients, \
                 optimizer state and snapshots{have}; use smaller layers",
                hidden.join(",")
            );
        }
        Ok(())
    }
}

/// Returns the memory the kernel reports as available (Linux `MemAvailable`), if readable.
fn available_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Host copy of a network's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    /// One entry per layer, first to last.
    pub layers: Vec<LayerParams>,
}

/// Host copy of one dense layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams {
    /// Inputs (I).
    pub inputs: usize,
    /// Outputs (O).
    pub outputs: usize,
    /// Weights `[O, I]`, row-major.
    pub w: Vec<f32>,
    /// Biases `[O]`.
    pub b: Vec<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_family_keeps_nan() {
        for act in [Activation::Relu, Activation::LeakyRelu, Activation::Elu] {
            assert!(act.apply(f32::NAN).is_nan(), "{act}");
        }
        assert_eq!(Activation::Relu.apply(-2.0), 0.0);
        assert_eq!(Activation::Relu.apply(3.0), 3.0);
    }

    #[test]
    fn oversized_model_is_rejected_before_allocation() {
        let spec = ModelSpec {
            inputs: 784,
            hidden: vec![1_000_000, 1_000_000],
            activation: Activation::Relu,
            outputs: 10,
            loss: LossKind::SoftmaxCrossEntropy,
            init: Init::He,
            dropout: 0.0,
        };
        let message = spec.validate().unwrap_err().to_string();
        assert!(message.contains("--layers 1000000,1000000"), "{message}");
        assert!(message.contains("GiB"), "{message}");

        let overflow = ModelSpec {
            hidden: vec![usize::MAX / 2, usize::MAX / 2],
            ..spec
        };
        let message = overflow.validate().unwrap_err().to_string();
        assert!(message.contains("more than 2^64 bytes"), "{message}");
    }
}
