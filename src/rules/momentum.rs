//! Momentum heads (MAN: Su et al., *Momentum Auxiliary Network for Supervised Local
//! Learning*, ECCV 2024; reference code JunhaoSu0/MAN): the head of module i reads
//! what module i+1 would make of its output,
//!
//! ```text
//! head_i( copy_i(h_i) + ema_i(h_i) ),    ema_i ← m·ema_i + (1 − m)·θ_{i+1}  after each step of module i+1
//! ```
//!
//! with copy_i a learnable copy of module i+1 and ema_i an exponential moving average
//! of module i+1's parameters (m = `objective.head_momentum`, 0.995), both starting
//! from module i+1's initial weights; the head itself is built for module i+1's
//! output. The gradient of module i's loss flows through both copies into module i
//! (that is the point: module i learns what the next module can use) and into copy_i,
//! never into ema_i's parameters nor into module i+1. The sum of the two copies is the
//! reference code's (`LB[i](x) + EMA_Net[i](x)`). Batch-norm statistics of ema_i are
//! its own, as in the reference code. The last module keeps its plain head.
//!
//! Both copies live in module i's var store (`block<i>.head.next.copy.*`,
//! `block<i>.head.next.ema.*`): checkpoints hold them, resume continues them. Module
//! i+1's step updates module i's ema_i, so the momentum heads need the sequential
//! trainer: a pipeline is refused (`config::validate`).

use crate::model::Block;
use anyhow::{anyhow, bail, Result};
use std::collections::HashMap;
use tch::{nn, Tensor};

/// Module i+1 seen from module i: a learnable copy and an EMA copy.
#[derive(Debug)]
pub struct NextModule {
    copy: Box<dyn Block>,
    ema: Box<dyn Block>,
    /// (ema_i's parameter, module i+1's parameter), in the same order.
    pairs: Vec<(Tensor, Tensor)>,
    momentum: f64,
}

/// One block of a copy of the network: the block and its var store.
pub type BlockCopy = (Box<dyn Block>, nn::VarStore);

impl NextModule {
    /// Module `next`'s copies for the head at `path` (`block<i>.head`): `copies` are
    /// module `next` of two networks built from the same config; their variables move
    /// into `path`'s var store (the copy's trainable, the EMA's not), set to the
    /// values of `real`, module `next`'s own variables.
    pub fn new(
        path: &nn::Path,
        real: &HashMap<String, Tensor>,
        next: usize,
        copies: [BlockCopy; 2],
        momentum: f64,
    ) -> Result<Self> {
        let prefix = format!("block{}.", next + 1);
        let refuse = |what: &str| {
            anyhow!(
                "config key `objective.momentum_head`: the network is not the one `[model]` describes (block {}: {what})",
                next + 1
            )
        };
        let mut pairs = vec![];
        let [(copy, copy_store), (ema, ema_store)] = copies;
        for (store, name, trainable) in [(&copy_store, "copy", true), (&ema_store, "ema", false)] {
            let vars = store.variables();
            if vars.len() != real.len() {
                return Err(refuse("a different number of tensors"));
            }
            let mut names: Vec<&String> = vars.keys().collect();
            names.sort();
            for full in names {
                let t = &vars[full];
                let original = real.get(full).ok_or_else(|| refuse(full))?;
                if original.size() != t.size() {
                    return Err(refuse(full));
                }
                tch::no_grad(|| t.shallow_clone().copy_(original));
                let parameter = t.requires_grad();
                let rest = full.strip_prefix(&prefix).unwrap_or(full);
                let mut parts: Vec<&str> = rest.split('.').collect();
                let leaf = parts.pop().unwrap_or(rest);
                let dir = parts.iter().fold(path / "next" / name, |p, part| p / *part);
                if parameter && !trainable {
                    let _ = t.shallow_clone().set_requires_grad(false);
                }
                let _ = dir.add(leaf, t.shallow_clone(), trainable && parameter);
                if parameter && !trainable {
                    pairs.push((t.shallow_clone(), original.shallow_clone()));
                }
            }
        }
        if pairs.is_empty() {
            bail!(
                "config key `objective.momentum_head`: block {} has no parameters to average",
                next + 1
            );
        }
        Ok(Self {
            copy,
            ema,
            pairs,
            momentum,
        })
    }

    /// copy_i(h) + ema_i(h).
    pub fn forward_t(&self, h: &Tensor, train: bool) -> Tensor {
        self.copy.forward_t(h, train) + self.ema.forward_t(h, train)
    }

    /// ema_i ← m·ema_i + (1 − m)·θ_{i+1} (after module i+1's step).
    pub fn follow(&self) {
        tch::no_grad(|| {
            for (ema, theta) in &self.pairs {
                let _ = ema.shallow_clone().lerp_(theta, 1.0 - self.momentum);
            }
        });
    }

    /// FLOPs per example of the two copies as a trainable head's count them (a training
    /// step costs 3× a head's forward FLOPs): the learnable copy's forward, and 2/3 of
    /// the EMA copy's, whose backward computes input gradients only.
    pub fn flops_per_example(&self) -> f64 {
        self.copy.forward_flops().0 + 2.0 / 3.0 * self.ema.forward_flops().0
    }
}
