//! The `[optim]` section.

use serde::{Deserialize, Serialize};

/// Optimizer algorithm.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (L2 weight decay).
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
    /// SGD with momentum.
    Sgd,
}

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// lr stays at its base value.
    Constant,
    /// Linear warm-up, then cosine decay to `min_lr`.
    Cosine,
}

/// Optimizer section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Algorithm.
    pub optimizer: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Momentum (SGD only).
    pub momentum: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Warm-up length in epochs (may be fractional) for `cosine`.
    pub warmup_epochs: f64,
    /// Final learning rate of `cosine`.
    pub min_lr: f64,
    /// Use the one-pass fused Adam/AdamW kernel where it applies (f32 on the CPU);
    /// `false` uses libtorch's `torch::optim` implementation.
    pub fused: bool,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: 0.0,
            momentum: 0.9,
            schedule: Schedule::Cosine,
            warmup_epochs: 0.0,
            min_lr: 0.0,
            fused: true,
        }
    }
}
