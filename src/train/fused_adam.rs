//! Adam/AdamW as one pass over memory, for f32 parameters on the CPU.
//!
//! libtorch's `torch::optim::Adam` updates each parameter with about seven element-wise
//! kernels (each a full pass over parameter-sized tensors) plus a separate pass that
//! zeroes the gradients. This kernel reads each parameter, gradient and both moments
//! once, writes them once, and zeroes the gradient in the same pass, split over the
//! intra-op threads. Same update rule as PyTorch's `Adam`/`AdamW` (no AMSGrad):
//!
//! ```text
//! g ← g + λ·p (Adam) | p ← p·(1 − η·λ) (AdamW)
//! m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²
//! p ← p − η/(1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
//! ```
//!
//! `sll bench step` measures it against libtorch's optimizer (see docs/performance.md).

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// Adam state over a list of parameters.
#[derive(Debug)]
pub struct FusedAdam {
    params: Vec<Tensor>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    step: i32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    decoupled: bool,
}

/// One contiguous run of elements of one parameter, as raw pointers.
#[derive(Clone, Copy)]
struct Span {
    p: *mut f32,
    g: *mut f32,
    m: *mut f32,
    v: *mut f32,
    len: usize,
}

// SAFETY: spans handed to different threads never overlap (disjoint element ranges).
unsafe impl Send for Span {}

impl FusedAdam {
    /// Whether `params` can use the fused kernel: f32 on the CPU, each contiguous or
    /// channels-last (dense either way, so its elements are one block of memory).
    pub fn supports(params: &[Tensor]) -> bool {
        let dense =
            |p: &Tensor| p.is_contiguous() || (p.dim() == 4 && p.permute([0, 2, 3, 1]).is_contiguous());
        params
            .iter()
            .all(|p| p.device() == Device::Cpu && p.kind() == Kind::Float && dense(p))
    }

    /// Adam (`decoupled = false`, L2 weight decay) or AdamW over `params`.
    pub fn new(params: &[Tensor], weight_decay: f64, decoupled: bool) -> Result<Self> {
        if !Self::supports(params) {
            bail!("fused Adam needs contiguous f32 parameters on the CPU");
        }
        let zeros = |p: &Tensor| Tensor::zeros_like(p);
        Ok(Self {
            params: params.iter().map(Tensor::shallow_clone).collect(),
            exp_avg: params.iter().map(zeros).collect(),
            exp_avg_sq: params.iter().map(zeros).collect(),
            step: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: weight_decay as f32,
            decoupled,
        })
    }

    /// Bytes of the two moment buffers.
    pub fn state_bytes(&self) -> usize {
        self.exp_avg
            .iter()
            .chain(&self.exp_avg_sq)
            .map(|t| t.numel() * t.kind().elt_size_in_bytes())
            .sum()
    }

    /// The step count and the moments, m of every parameter then v of every parameter.
    pub fn state(&self) -> (i64, Vec<Tensor>) {
        let tensors = self.exp_avg.iter().chain(&self.exp_avg_sq);
        (self.step as i64, tensors.map(Tensor::shallow_clone).collect())
    }

    /// Continues at step `step` (a resumed run; the moments are copied in separately).
    pub fn set_step(&mut self, step: i64) -> Result<()> {
        self.step = i32::try_from(step).map_err(|_| anyhow::anyhow!("optimizer step {step} out of range"))?;
        Ok(())
    }

    /// One update at learning rate `lr`; gradients are read, then zeroed.
    pub fn step(&mut self, lr: f64) {
        self.step += 1;
        let mut spans = vec![];
        let mut relaid = vec![];
        for ((p, m), v) in self.params.iter().zip(&self.exp_avg).zip(&self.exp_avg_sq) {
            let mut g = p.grad();
            if !g.defined() || g.kind() != Kind::Float {
                continue;
            }
            if g.stride() != p.stride() {
                // A gradient laid out unlike its parameter: read a copy in the parameter's
                // layout (kept alive below) and zero the original here.
                let mut laid_out = p.empty_like();
                laid_out.copy_(&g);
                let _ = g.zero_();
                relaid.push(laid_out.shallow_clone());
                g = laid_out;
            }
            spans.push(Span {
                p: p.data_ptr() as *mut f32,
                g: g.data_ptr() as *mut f32,
                m: m.data_ptr() as *mut f32,
                v: v.data_ptr() as *mut f32,
                len: p.numel(),
            });
        }
        let rule = self.rule(lr);
        let shares = split(&spans, crate::kernels::kernel_threads().min(8));
        crate::parallel::run_shares(shares, |share| share.iter().for_each(|s| apply_rule(&rule, *s)));
        drop(relaid);
    }

    fn rule(&self, lr: f64) -> Rule {
        let bc1 = 1.0 - (self.beta1 as f64).powi(self.step);
        let bc2 = 1.0 - (self.beta2 as f64).powi(self.step);
        Rule {
            lr: lr as f32,
            step_size: (lr / bc1) as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            decoupled: self.decoupled,
        }
    }
}

/// Cuts the spans into `parts` shares of about equal element counts.
fn split(spans: &[Span], parts: usize) -> Vec<Vec<Span>> {
    let total: usize = spans.iter().map(|s| s.len).sum();
    let per = total.div_ceil(parts).max(1);
    let mut shares = vec![vec![]; parts];
    let (mut share, mut filled) = (0, 0);
    for s in spans {
        let mut s = *s;
        while s.len > 0 {
            let take = (per - filled).min(s.len);
            shares[share].push(Span { len: take, ..s });
            // SAFETY: `take <= s.len`, so the advanced pointers stay inside the tensors.
            unsafe {
                s = Span {
                    p: s.p.add(take),
                    g: s.g.add(take),
                    m: s.m.add(take),
                    v: s.v.add(take),
                    len: s.len - take,
                };
            }
            filled += take;
            if filled == per && share + 1 < parts {
                share += 1;
                filled = 0;
            }
        }
    }
    shares
}

/// The per-element update with this step's constants.
#[derive(Clone, Copy)]
struct Rule {
    lr: f32,
    step_size: f32,
    inv_sqrt_bc2: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    decoupled: bool,
}

/// One Adam step on a span, compiled once more for AVX2 + FMA and picked at run time
/// (the same bits either way: no fused multiply-add is formed).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn apply_rule(this: &Rule, s: Span) {
    // SAFETY: each span covers `len` valid f32 elements of four distinct, live
    // tensors, and no other thread touches this range.
    let (p, g, m, v) = unsafe {
        (
            std::slice::from_raw_parts_mut(s.p, s.len),
            std::slice::from_raw_parts_mut(s.g, s.len),
            std::slice::from_raw_parts_mut(s.m, s.len),
            std::slice::from_raw_parts_mut(s.v, s.len),
        )
    };
    let decay = 1.0 - this.lr * this.weight_decay;
    for i in 0..s.len {
        let mut grad = g[i];
        if this.decoupled {
            p[i] *= decay;
        } else {
            grad += this.weight_decay * p[i];
        }
        m[i] = this.beta1 * m[i] + (1.0 - this.beta1) * grad;
        v[i] = this.beta2 * v[i] + (1.0 - this.beta2) * grad * grad;
        let denom = v[i].sqrt() * this.inv_sqrt_bc2 + this.eps;
        p[i] -= this.step_size * m[i] / denom;
        g[i] = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::COptimizer;

    /// The fused kernel follows libtorch's Adam and AdamW step for step.
    #[test]
    fn matches_libtorch_adam_and_adamw() {
        let _turn = crate::libtorch_turn();
        for (decoupled, wd) in [(false, 0.0), (false, 0.01), (true, 0.05)] {
            tch::manual_seed(0);
            let a = Tensor::randn([37, 11], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let b = a.detach().copy().set_requires_grad(true);
            let mut ours = FusedAdam::new(&[a.shallow_clone()], wd, decoupled).unwrap();
            let mut theirs = if decoupled {
                COptimizer::adamw(1e-2, 0.9, 0.999, wd, 1e-8, false).unwrap()
            } else {
                COptimizer::adam(1e-2, 0.9, 0.999, wd, 1e-8, false).unwrap()
            };
            theirs.add_parameters(&b, 0).unwrap();
            for step in 0..20 {
                let target = Tensor::randn([37, 11], (Kind::Float, Device::Cpu));
                (&a - &target).square().sum(Kind::Float).backward();
                ours.step(1e-2);
                theirs.zero_grad().unwrap();
                (&b - &target).square().sum(Kind::Float).backward();
                theirs.step().unwrap();
                let diff = (&a - &b).abs().max().double_value(&[]);
                assert!(
                    diff < 1e-5,
                    "decoupled {decoupled}, wd {wd}, step {step}: max diff {diff}"
                );
                assert_eq!(
                    a.grad().abs().sum(Kind::Float).double_value(&[]),
                    0.0,
                    "gradient not zeroed"
                );
            }
        }
    }
}
