//! Adam, AdamW and SGD written with libtorch tensor operations: any device, any dtype,
//! and state (moments, momentum buffers, step count) that this crate owns and can save
//! for a resumable checkpoint, which libtorch's `torch::optim` behind `tch::COptimizer`
//! does not expose. Where the fused CPU kernel ([`super::fused_adam`]) applies it is
//! used instead; this is the rule everywhere else (GPUs, `optim.fused = false`, SGD).
//!
//! The rules are PyTorch's (no AMSGrad, no Nesterov, no dampening):
//!
//! ```text
//! Adam:  g ← g + λ·p;  m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
//!        p ← p − η/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
//! AdamW: p ← p·(1 − η·λ), then Adam without the g ← g + λ·p
//! SGD:   g ← g + λ·p;  b ← g (first step) | μ·b + g;  p ← p − η·b   (b only when μ > 0)
//! ```

use crate::config::OptimizerKind;
use anyhow::Result;
use tch::Tensor;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

/// One of the rules above over a list of parameters.
#[derive(Debug)]
pub struct TensorOptimizer {
    kind: OptimizerKind,
    params: Vec<Tensor>,
    /// Per parameter: Adam's m and v, or SGD's momentum buffer (none when μ = 0).
    state: Vec<Vec<Tensor>>,
    step: i64,
    weight_decay: f64,
    momentum: f64,
}

impl TensorOptimizer {
    /// The rule `kind` over `params`, state zeroed.
    pub fn new(kind: OptimizerKind, params: &[Tensor], weight_decay: f64, momentum: f64) -> Self {
        let buffers = Self::buffers(kind, momentum);
        let state = params
            .iter()
            .map(|p| (0..buffers).map(|_| p.zeros_like().detach()).collect())
            .collect();
        Self {
            kind,
            params: params.iter().map(Tensor::shallow_clone).collect(),
            state,
            step: 0,
            weight_decay,
            momentum,
        }
    }

    /// Parameter-sized state buffers per parameter: Adam 2, SGD with momentum 1.
    pub fn buffers(kind: OptimizerKind, momentum: f64) -> usize {
        match kind {
            OptimizerKind::Adam | OptimizerKind::Adamw => 2,
            OptimizerKind::Sgd => usize::from(momentum != 0.0),
        }
    }

    /// One update at learning rate `lr`; gradients are read, then zeroed.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        self.step += 1;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        let wd = self.weight_decay;
        tch::no_grad(|| -> Result<()> {
            for (p, state) in self.params.iter().zip(&mut self.state) {
                let mut g = p.grad();
                if !g.defined() {
                    continue;
                }
                let mut p = p.shallow_clone();
                let mut decayed = if wd != 0.0 && self.kind != OptimizerKind::Adamw {
                    g.f_add(&(&p * wd))?
                } else {
                    g.shallow_clone()
                };
                match self.kind {
                    OptimizerKind::Adam | OptimizerKind::Adamw => {
                        if self.kind == OptimizerKind::Adamw && wd != 0.0 {
                            let _ = p.f_mul_scalar_(1.0 - lr * wd)?;
                        }
                        let (m, v) = state.split_at_mut(1);
                        let (m, v) = (&mut m[0], &mut v[0]);
                        let _ = m.f_mul_scalar_(BETA1)?;
                        let _ = m.f_add_(&(&decayed * (1.0 - BETA1)))?;
                        let _ = v.f_mul_scalar_(BETA2)?;
                        let _ = v.f_add_(&(&decayed * &decayed * (1.0 - BETA2)))?;
                        let denom = v.f_sqrt()? / bc2.sqrt() + EPS;
                        let _ = p.f_sub_(&(&*m / &denom * (lr / bc1)))?;
                    }
                    OptimizerKind::Sgd => {
                        if let Some(buffer) = state.first_mut() {
                            if self.step == 1 {
                                buffer.f_copy_(&decayed)?;
                            } else {
                                let _ = buffer.f_mul_scalar_(self.momentum)?;
                                let _ = buffer.f_add_(&decayed)?;
                            }
                            decayed = buffer.shallow_clone();
                        }
                        let _ = p.f_sub_(&(&decayed * lr))?;
                    }
                }
                let _ = g.f_zero_()?;
            }
            Ok(())
        })
    }

    /// The step count and every state tensor, parameter by parameter.
    pub fn state(&self) -> (i64, Vec<Tensor>) {
        (
            self.step,
            self.state.iter().flatten().map(Tensor::shallow_clone).collect(),
        )
    }

    /// Continues at step `step` (a resumed run; the state tensors are copied in
    /// separately).
    pub fn set_step(&mut self, step: i64) {
        self.step = step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{COptimizer, Device, Kind};

    /// Each rule follows libtorch's `torch::optim` step for step.
    #[test]
    fn matches_libtorch_optimizers() {
        let _turn = crate::libtorch_turn();
        let cases = [
            (OptimizerKind::Adam, 0.0, 0.0),
            (OptimizerKind::Adam, 0.01, 0.0),
            (OptimizerKind::Adamw, 0.05, 0.0),
            (OptimizerKind::Sgd, 0.0, 0.0),
            (OptimizerKind::Sgd, 0.01, 0.9),
        ];
        for (kind, wd, momentum) in cases {
            tch::manual_seed(0);
            let a = Tensor::randn([37, 11], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let b = a.detach().copy().set_requires_grad(true);
            let lr = 1e-2;
            let mut ours = TensorOptimizer::new(kind, &[a.shallow_clone()], wd, momentum);
            let mut theirs = match kind {
                OptimizerKind::Adam => COptimizer::adam(lr, 0.9, 0.999, wd, 1e-8, false),
                OptimizerKind::Adamw => COptimizer::adamw(lr, 0.9, 0.999, wd, 1e-8, false),
                OptimizerKind::Sgd => COptimizer::sgd(lr, momentum, 0.0, wd, false),
            }
            .unwrap();
            theirs.add_parameters(&b, 0).unwrap();
            for step in 0..20 {
                let target = Tensor::randn([37, 11], (Kind::Float, Device::Cpu));
                (&a - &target).square().sum(Kind::Float).backward();
                ours.step(lr).unwrap();
                theirs.zero_grad().unwrap();
                (&b - &target).square().sum(Kind::Float).backward();
                theirs.step().unwrap();
                let diff = (&a - &b).abs().max().double_value(&[]);
                assert!(diff < 1e-5, "{kind:?}, wd {wd}, step {step}: max diff {diff}");
                assert_eq!(a.grad().abs().sum(Kind::Float).double_value(&[]), 0.0);
            }
        }
    }
}
