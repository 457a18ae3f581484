//! Per-block optimizers and learning-rate schedules.

use super::fused_adam::FusedAdam;
use super::tensor_optim::TensorOptimizer;
use crate::config::{OptimConfig, OptimizerKind, Schedule};
use anyhow::Result;
use tch::Tensor;

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
    /// The same rules (and SGD) in libtorch tensor operations, on any device.
    Tensor(TensorOptimizer),
}

/// One optimizer over a set of parameters (one block's, or the whole network's for
/// `bp`), stepping its own schedule.
#[derive(Debug)]
pub struct Optimizer {
    engine: Engine,
    schedule: LrSchedule,
    step: usize,
}

/// What an [`Optimizer`] must keep for a run to resume: the steps taken and every
/// state tensor (Adam's moments, SGD's momentum buffers), in a fixed order.
#[derive(Debug)]
pub struct OptimizerState {
    /// Steps taken (the schedule's position).
    pub step: usize,
    /// The update rule's own step count (Adam's bias correction).
    pub rule_step: i64,
    /// The state tensors.
    pub tensors: Vec<Tensor>,
}

impl Optimizer {
    /// Builds the optimizer of `config` over `params`.
    pub fn new(config: &OptimConfig, params: &[Tensor], schedule: LrSchedule) -> Result<Self> {
        let adam = matches!(config.optimizer, OptimizerKind::Adam | OptimizerKind::Adamw);
        let engine = if adam && config.fused && FusedAdam::supports(params) {
            let decoupled = config.optimizer == OptimizerKind::Adamw;
            Engine::Fused(FusedAdam::new(params, config.weight_decay, decoupled)?)
        } else {
            Engine::Tensor(TensorOptimizer::new(
                config.optimizer,
                params,
                config.weight_decay,
                config.momentum,
            ))
        };
        Ok(Self {
            engine,
            schedule,
            step: 0,
        })
    }

    /// The state a resumed run needs (tensors shared, not copied).
    pub fn state(&self) -> OptimizerState {
        let (rule_step, tensors) = match &self.engine {
            Engine::Fused(adam) => adam.state(),
            Engine::Tensor(rule) => rule.state(),
        };
        OptimizerState {
            step: self.step,
            rule_step,
            tensors,
        }
    }

    /// Continues at the step counts of a saved [`OptimizerState`] (its tensors are
    /// restored by copying into those of [`Self::state`]).
    pub fn set_steps(&mut self, step: usize, rule_step: i64) -> Result<()> {
        match &mut self.engine {
            Engine::Fused(adam) => adam.set_step(rule_step)?,
            Engine::Tensor(rule) => rule.set_step(rule_step),
        }
        self.step = step;
        Ok(())
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
            Engine::Tensor(rule) => {
                backward()?;
                rule.step(lr)?;
            }
        }
        self.step += 1;
        Ok(())
    }

    /// Bytes of optimizer state (Adam's two moments, SGD's momentum buffer).
    pub fn state_bytes(&self) -> usize {
        self.state()
            .tensors
            .iter()
            .map(|t| t.numel() * t.kind().elt_size_in_bytes())
            .sum()
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
