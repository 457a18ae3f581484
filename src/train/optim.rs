//! Per-block optimizers and learning-rate schedules.

use super::fused_adam::FusedAdam;
use crate::config::{OptimConfig, OptimizerKind, Schedule};
use anyhow::{Context, Result};
use tch::{COptimizer, Tensor};

/// Learning rate as a function of the step: constant, or linear warm-up then cosine
/// decay from `lr` to `min_lr` over the whole run.
#[derive(Debug, Clone)]
pub struct LrSchedule {
    kind: Schedule,
    lr: f64,
    min_lr: f64,
    warmup_steps: usize,
    total_steps: usize,
}

impl LrSchedule {
    /// The schedule of `config` for a run of `total_steps` steps of which
    /// `steps_per_epoch` make one epoch.
    pub fn new(config: &OptimConfig, steps_per_epoch: usize, total_steps: usize) -> Self {
        Self {
            kind: config.schedule,
            lr: config.lr,
            min_lr: config.min_lr,
            warmup_steps: (config.warmup_epochs * steps_per_epoch as f64).round() as usize,
            total_steps,
        }
    }

    /// Learning rate at (0-based) step `step`.
    pub fn at(&self, step: usize) -> f64 {
        match self.kind {
            Schedule::Constant => self.lr,
            Schedule::Cosine if step < self.warmup_steps => {
                self.lr * (step + 1) as f64 / self.warmup_steps as f64
            }
            Schedule::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
                let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
                self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }
}

/// The update rule behind an [`Optimizer`].
#[derive(Debug)]
enum Engine {
    /// Our one-pass Adam/AdamW (f32 parameters on the CPU).
    Fused(FusedAdam),
    /// libtorch's optimizers (SGD, and Adam/AdamW elsewhere).
    Torch(COptimizer),
}

/// One optimizer over a set of parameters (one block's, or the whole network's for
/// `bp`), stepping its own schedule.
#[derive(Debug)]
pub struct Optimizer {
    engine: Engine,
    schedule: LrSchedule,
    step: usize,
    /// Parameter-sized state buffers of libtorch's rule (Adam 2, SGD with momentum 1).
    buffers_per_parameter: usize,
}

impl Optimizer {
    /// Builds the optimizer of `config` over `params`.
    pub fn new(config: &OptimConfig, params: &[Tensor], schedule: LrSchedule) -> Result<Self> {
        let (lr, wd) = (config.lr, config.weight_decay);
        let adam = matches!(config.optimizer, OptimizerKind::Adam | OptimizerKind::Adamw);
        if adam && config.fused && FusedAdam::supports(params) {
            let decoupled = config.optimizer == OptimizerKind::Adamw;
            let engine = Engine::Fused(FusedAdam::new(params, wd, decoupled)?);
            return Ok(Self {
                engine,
                schedule,
                step: 0,
                buffers_per_parameter: 2,
            });
        }
        let mut inner = match config.optimizer {
            OptimizerKind::Adam => COptimizer::adam(lr, 0.9, 0.999, wd, 1e-8, false),
            OptimizerKind::Adamw => COptimizer::adamw(lr, 0.9, 0.999, wd, 1e-8, false),
            OptimizerKind::Sgd => COptimizer::sgd(lr, config.momentum, 0.0, wd, false),
        }
        .context("cannot create optimizer")?;
        for p in params {
            inner.add_parameters(p, 0)?;
        }
        let buffers_per_parameter = match config.optimizer {
            OptimizerKind::Adam | OptimizerKind::Adamw => 2,
            OptimizerKind::Sgd => usize::from(config.momentum != 0.0),
        };
        Ok(Self {
            engine: Engine::Torch(inner),
            schedule,
            step: 0,
            buffers_per_parameter,
        })
    }

    /// Learning rate of the next step.
    pub fn learning_rate(&self) -> f64 {
        self.schedule.at(self.step)
    }

    /// Zeroes the gradients, back-propagates `loss` into this optimizer's parameters
    /// and takes one step at the scheduled learning rate.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        self.step_after(|| Ok(loss.f_backward()?))
    }

    /// Zeroes the gradients, runs `backward` (which may back-propagate several times:
    /// the gradients accumulate) and takes one step at the scheduled learning rate.
    pub fn step_after(&mut self, backward: impl FnOnce() -> Result<()>) -> Result<()> {
        let lr = self.learning_rate();
        match &mut self.engine {
            Engine::Fused(adam) => {
                // The fused step leaves the gradients zeroed.
                backward()?;
                adam.step(lr);
            }
            Engine::Torch(inner) => {
                inner.zero_grad()?;
                backward()?;
                inner.set_learning_rate(lr)?;
                inner.step()?;
            }
        }
        self.step += 1;
        Ok(())
    }

    /// Bytes of optimizer state (Adam's two moments, SGD's momentum buffer): read from
    /// the fused kernel's buffers, or, for libtorch's optimizers (whose state tch does
    /// not expose), the same count computed from the parameters (`param_bytes`).
    pub fn state_bytes(&self, param_bytes: usize) -> usize {
        match &self.engine {
            Engine::Fused(adam) => adam.state_bytes(),
            Engine::Torch(_) => self.buffers_per_parameter * param_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_warms_up_then_decays_to_min() {
        let _turn = crate::libtorch_turn();
        let config = OptimConfig {
            lr: 1.0,
            min_lr: 0.1,
            warmup_epochs: 1.0,
            ..Default::default()
        };
        let s = LrSchedule::new(&config, 10, 110);
        assert!((s.at(0) - 0.1).abs() < 1e-12);
        assert!((s.at(9) - 1.0).abs() < 1e-12);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        assert!((s.at(60) - 0.55).abs() < 1e-12);
        assert!((s.at(110) - 0.1).abs() < 1e-12);
        let constant = OptimConfig {
            schedule: Schedule::Constant,
            ..config
        };
        assert_eq!(LrSchedule::new(&constant, 10, 110).at(77), 1.0);
    }
}
