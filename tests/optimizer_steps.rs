//! The first three steps of every optimizer against the Keras 3 update
//! formulas, evaluated here in f64 from the same f32 inputs.
//!
//! Each step's learning rate is 0.1, so an update moves a weight by about
//! 0.01 to 0.1. A wrong formula is off by far more than the 2e-6 tolerance,
//! which covers the f32 rounding of a few operations on values near 2.

mod reference;

use densetrain::backend::cpu::Cpu;
use densetrain::backend::{Backend, LossKind};
use densetrain::optim::{EpsilonStyle, Optimizer, OptimizerConfig};
use reference::wide;

const LR: f32 = 0.1;
const W0: [f32; 4] = [0.5, -1.25, 2.0, 0.1];
/// Gradients of steps 1, 2 and 3: signs and sizes vary per element and step.
const GRADS: [[f32; 4]; 3] = [
    [0.3, -0.7, 1.1, -0.05],
    [-0.2, 0.4, 0.9, 0.6],
    [0.15, -1.3, -0.45, 0.25],
];

fn config(optimizer: Optimizer) -> OptimizerConfig {
    OptimizerConfig {
        optimizer,
        lr: LR,
        l2: 0.0,
        weight_decay: 0.0,
        clipnorm: None,
    }
}

fn adam(epsilon: f32, epsilon_style: EpsilonStyle) -> Optimizer {
    Optimizer::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon,
        epsilon_style,
    }
}

/// The f64 state of one tensor under the reference update.
struct Expected {
    w: Vec<f64>,
    slots: Vec<Vec<f64>>,
    /// Sum of the L2 penalties `l2 * sum(w^2)` taken before each step.
    penalty: f64,
}

/// Applies one step of `config` in f64, exactly as the formulas in `optim.rs` state them.
fn reference_step(config: &OptimizerConfig, t: u64, g: &[f64], scale: f64, state: &mut Expected) {
    let lr = f64::from(config.lr);
    let l2 = f64::from(config.l2);
    let decay = lr * f64::from(config.weight_decay);
    state.penalty += l2 * state.w.iter().map(|w| w * w).sum::<f64>();
    for j in 0..state.w.len() {
        // The gradient: clipped, plus 2 * l2 * w at the weight before decay.
        let g = g[j] * scale + 2.0 * l2 * state.w[j];
        // Decoupled weight decay: w -= lr * weight_decay * w, before the update.
        let w = state.w[j] - decay * state.w[j];
        state.w[j] = match config.optimizer {
            Optimizer::Sgd { momentum, nesterov } => {
                let momentum = f64::from(momentum);
                if momentum == 0.0 {
                    w - lr * g
                } else {
                    // v = momentum * v - lr * g; w += v, or w += momentum * v - lr * g.
                    let v = &mut state.slots[0][j];
                    *v = momentum * *v - lr * g;
                    if nesterov {
                        w + momentum * *v - lr * g
                    } else {
                        w + *v
                    }
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
                let (b1, b2, eps) = (f64::from(beta1), f64::from(beta2), f64::from(epsilon));
                let m = b1 * state.slots[0][j] + (1.0 - b1) * g;
                let v = b2 * state.slots[1][j] + (1.0 - b2) * g * g;
                state.slots[0][j] = m;
                state.slots[1][j] = v;
                let (c1, c2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
                match epsilon_style {
                    // Keras: lr * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps).
                    EpsilonStyle::Keras => w - lr * c2.sqrt() / c1 * m / (v.sqrt() + eps),
                    // PyTorch: lr * m_hat / (sqrt(v_hat) + eps).
                    EpsilonStyle::Pytorch => w - lr * (m / c1) / ((v / c2).sqrt() + eps),
                }
            }
            Optimizer::RmsProp {
                rho,
                momentum,
                epsilon,
            } => {
                let (rho, eps) = (f64::from(rho), f64::from(epsilon));
                let v = rho * state.slots[0][j] + (1.0 - rho) * g * g;
                state.slots[0][j] = v;
                let increment = lr * g / (v + eps).sqrt();
                if momentum == 0.0 {
                    w - increment
                } else {
                    let mom = f64::from(momentum) * state.slots[1][j] + increment;
                    state.slots[1][j] = mom;
                    w - mom
                }
            }
        };
    }
}

/// Runs three steps on the backend and on the reference and compares them after each.
fn check_three_steps(name: &str, config: OptimizerConfig) -> Vec<f64> {
    let cpu = Cpu::new(1).unwrap();
    let slot_count = config.optimizer.slot_count();
    let mut w = W0.to_vec();
    let mut slots = vec![vec![0.0f32; W0.len()]; slot_count];
    let mut stats = cpu.new_stats().unwrap();
    let mut expected = Expected {
        w: wide(&W0),
        slots: vec![vec![0.0; W0.len()]; slot_count],
        penalty: 0.0,
    };
    for (step, grad) in GRADS.iter().enumerate() {
        let t = step as u64 + 1;
        let grad = grad.to_vec();
        let scale = match config.clipnorm {
            Some(max_norm) => {
                let mut scale = vec![0.0];
                cpu.clip_scale(&[&grad], max_norm, &mut scale).unwrap();
                Some(scale)
            }
            None => None,
        };
        let rule = config.rule(t, config.lr, true);
        cpu.optimizer_step(&rule, &mut w, &grad, &mut slots, scale.as_ref(), &mut stats)
            .unwrap();

        let norm = wide(&grad).iter().map(|g| g * g).sum::<f64>().sqrt();
        let scale = config
            .clipnorm
            .map_or(1.0, |c| (f64::from(c) / (norm + 1e-6)).min(1.0));
        reference_step(&config, t, &wide(&grad), scale, &mut expected);

        for j in 0..W0.len() {
            let err = (f64::from(w[j]) - expected.w[j]).abs();
            assert!(
                err <= 2e-6,
                "{name}, step {t}: w[{j}] = {}, expected {}",
                w[j],
                expected.w[j]
            );
            for (s, (got, want)) in slots.iter().zip(&expected.slots).enumerate() {
                let err = (f64::from(got[j]) - want[j]).abs();
                assert!(
                    err <= 1e-5 * want[j].abs().max(1e-3),
                    "{name}, step {t}: slot {s}[{j}] = {}, expected {}",
                    got[j],
                    want[j]
                );
            }
        }
    }
    let penalty = cpu.read_stats(&stats).unwrap().penalty_sum;
    assert!(
        (penalty - expected.penalty).abs() <= 1e-6 * expected.penalty.max(1.0),
        "{name}: penalty {penalty}, expected {}",
        expected.penalty
    );
    expected.w
}

#[test]
fn sgd_plain_momentum_and_nesterov() {
    let plain = check_three_steps(
        "sgd",
        config(Optimizer::Sgd {
            momentum: 0.0,
            nesterov: false,
        }),
    );
    let momentum = check_three_steps(
        "sgd momentum",
        config(Optimizer::Sgd {
            momentum: 0.9,
            nesterov: false,
        }),
    );
    let nesterov = check_three_steps(
        "sgd nesterov",
        config(Optimizer::Sgd {
            momentum: 0.9,
            nesterov: true,
        }),
    );
    // The three variants take different paths, so the checks above tell them apart.
    assert!((plain[2] - momentum[2]).abs() > 1e-2);
    assert!((momentum[2] - nesterov[2]).abs() > 1e-2);
}

#[test]
fn adam_both_epsilon_placements() {
    check_three_steps("adam keras", config(adam(1e-7, EpsilonStyle::Keras)));
    check_three_steps("adam pytorch", config(adam(1e-7, EpsilonStyle::Pytorch)));
    // With a large epsilon the placements differ: Keras adds eps to sqrt(v), PyTorch
    // to sqrt(v / (1 - beta2^t)), which is about 30 times larger at step 1.
    let keras = check_three_steps("adam keras eps 0.1", config(adam(0.1, EpsilonStyle::Keras)));
    let pytorch = check_three_steps(
        "adam pytorch eps 0.1",
        config(adam(0.1, EpsilonStyle::Pytorch)),
    );
    let gap = keras
        .iter()
        .zip(&pytorch)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(gap > 1e-2, "the two placements agree to {gap}");
}

#[test]
fn adamw_decays_weights() {
    let adamw = Optimizer::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-7,
        epsilon_style: EpsilonStyle::Keras,
    };
    let with_decay = OptimizerConfig {
        weight_decay: 0.5,
        ..config(adamw)
    };
    let decayed = check_three_steps("adamw", with_decay);
    let plain = check_three_steps("adamw without decay", config(adamw));
    assert!((decayed[2] - plain[2]).abs() > 1e-2);
}

#[test]
fn rmsprop_with_and_without_momentum() {
    check_three_steps(
        "rmsprop",
        config(Optimizer::RmsProp {
            rho: 0.9,
            momentum: 0.0,
            epsilon: 1e-7,
        }),
    );
    check_three_steps(
        "rmsprop momentum",
        config(Optimizer::RmsProp {
            rho: 0.9,
            momentum: 0.8,
            epsilon: 1e-7,
        }),
    );
}

#[test]
fn l2_weight_decay_and_clipnorm() {
    let sgd = Optimizer::Sgd {
        momentum: 0.9,
        nesterov: false,
    };
    check_three_steps(
        "sgd l2",
        OptimizerConfig {
            l2: 0.05,
            ..config(sgd)
        },
    );
    check_three_steps(
        "sgd weight decay",
        OptimizerConfig {
            weight_decay: 0.3,
            ..config(sgd)
        },
    );
    // The gradient norms are 1.34, 1.17 and 1.41: a limit of 0.5 clips every step,
    check_three_steps(
        "sgd clipnorm",
        OptimizerConfig {
            clipnorm: Some(0.5),
            ..config(sgd)
        },
    );
    // and a limit of 1.2 clips steps 1 and 3 but not step 2.
    check_three_steps(
        "adam l2 decay clipnorm",
        OptimizerConfig {
            l2: 0.01,
            weight_decay: 0.2,
            clipnorm: Some(1.2),
            ..config(adam(1e-7, EpsilonStyle::Keras))
        },
    );
}

#[test]
fn biases_skip_l2_and_weight_decay() {
    let cpu = Cpu::new(1).unwrap();
    let sgd = Optimizer::Sgd {
        momentum: 0.0,
        nesterov: false,
    };
    let regularised = OptimizerConfig {
        l2: 0.5,
        weight_decay: 0.5,
        ..config(sgd)
    };
    let mut stats = cpu.new_stats().unwrap();
    let mut b = W0.to_vec();
    let grad = GRADS[0].to_vec();
    let rule = regularised.rule(1, LR, false);
    cpu.optimizer_step(&rule, &mut b, &grad, &mut [], None, &mut stats)
        .unwrap();
    let expected: Vec<f32> = W0.iter().zip(&grad).map(|(w, g)| w - LR * g).collect();
    assert_eq!(b, expected);
    assert_eq!(cpu.read_stats(&stats).unwrap().penalty_sum, 0.0);
}

#[test]
fn small_adam_step_moves_a_unit_weight() {
    // One Adam step moves each weight by about lr against the gradient. A weight
    // stored in bf16 would round back to 1.0, because its spacing near 1 is 2^-7.
    let cpu = Cpu::new(1).unwrap();
    let adam = OptimizerConfig {
        lr: 1e-4,
        ..config(adam(1e-7, EpsilonStyle::Keras))
    };
    let mut w = vec![1.0f32, 1.0];
    let mut slots = vec![vec![0.0; 2]; 2];
    let mut stats = cpu.new_stats().unwrap();
    let rule = adam.rule(1, adam.lr, true);
    cpu.optimizer_step(
        &rule,
        &mut w,
        &vec![0.5, -2.0],
        &mut slots,
        None,
        &mut stats,
    )
    .unwrap();
    assert_ne!(w[0], 1.0);
    assert_ne!(w[1], 1.0);
    assert!((w[0] - 0.9999).abs() < 1e-6, "w[0] = {}", w[0]);
    assert!((w[1] - 1.0001).abs() < 1e-6, "w[1] = {}", w[1]);
}

#[test]
fn nonfinite_flag_freezes_parameters_and_state() {
    let cpu = Cpu::new(1).unwrap();
    let mut stats = cpu.new_stats().unwrap();
    let adam = config(adam(1e-7, EpsilonStyle::Keras));
    let mut w = W0.to_vec();
    let mut slots = vec![vec![0.0; 4]; 2];
    let grad = GRADS[0].to_vec();
    cpu.optimizer_step(
        &adam.rule(1, LR, true),
        &mut w,
        &grad,
        &mut slots,
        None,
        &mut stats,
    )
    .unwrap();
    let (w_before, slots_before) = (w.clone(), slots.clone());

    let logits = vec![f32::NAN, 0.0];
    let kind = LossKind::SoftmaxCrossEntropy;
    cpu.loss(kind, &logits, &vec![0.0], None, 1, 2, 3, None, &mut stats)
        .unwrap();
    assert_eq!(cpu.read_stats(&stats).unwrap().nonfinite_batch, Some(3));
    for t in 2..4 {
        cpu.optimizer_step(
            &adam.rule(t, LR, true),
            &mut w,
            &grad,
            &mut slots,
            None,
            &mut stats,
        )
        .unwrap();
    }
    assert_eq!(w, w_before);
    assert_eq!(slots, slots_before);
}

#[test]
fn optimizer_step_rejects_mismatched_state() {
    let cpu = Cpu::new(1).unwrap();
    let mut stats = cpu.new_stats().unwrap();
    let adam = config(adam(1e-7, EpsilonStyle::Keras));
    let mut w = W0.to_vec();
    let grad = GRADS[0].to_vec();
    let mut one_slot = vec![vec![0.0; 4]];
    let err = cpu
        .optimizer_step(
            &adam.rule(1, LR, true),
            &mut w,
            &grad,
            &mut one_slot,
            None,
            &mut stats,
        )
        .unwrap_err();
    assert!(err.to_string().contains("adam keeps 2 per tensor"), "{err}");
    let mut short = vec![vec![0.0; 4], vec![0.0; 3]];
    let err = cpu
        .optimizer_step(
            &adam.rule(1, LR, true),
            &mut w,
            &grad,
            &mut short,
            None,
            &mut stats,
        )
        .unwrap_err();
    assert!(err.to_string().contains("state buffer holds 3"), "{err}");
    assert_eq!(w, W0.to_vec());
}

/// Large tensors take the multi-threaded path; it must give the same bits as one thread.
#[test]
fn parallel_update_matches_serial_bitwise() {
    let len = 100_003;
    let mut values = reference::Values::new(400);
    let w0 = values.uniform(len, 1.0);
    let grad = values.uniform(len, 1.0);
    let adamw = OptimizerConfig {
        l2: 0.01,
        weight_decay: 0.05,
        ..config(Optimizer::AdamW {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
            epsilon_style: EpsilonStyle::Pytorch,
        })
    };
    let run = |threads: usize| {
        let cpu = Cpu::new(threads).unwrap();
        let mut stats = cpu.new_stats().unwrap();
        let mut w = w0.clone();
        let mut slots = vec![vec![0.0; len]; 2];
        for t in 1..=3 {
            cpu.optimizer_step(
                &adamw.rule(t, LR, true),
                &mut w,
                &grad,
                &mut slots,
                None,
                &mut stats,
            )
            .unwrap();
        }
        (w, slots, cpu.read_stats(&stats).unwrap().penalty_sum)
    };
    let (w1, slots1, penalty1) = run(1);
    let (w2, slots2, penalty2) = run(2);
    assert!(w1.iter().zip(&w2).all(|(a, b)| a.to_bits() == b.to_bits()));
    assert_eq!(slots1, slots2);
    assert_eq!(penalty1.to_bits(), penalty2.to_bits());
    assert_ne!(w1, w0);
}
