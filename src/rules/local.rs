//! Local cross-entropy (`--method local`): each block trains its head alone,
//!
//! ```text
//! L_i = CE(head_i(h_i), y)
//! ```
//!
//! SLL without the divergence term (β = 0), and the "greedy" baseline of the local
//! learning literature (with a linear head on pooled features: InfoPro's Table 2
//! "greedy supervised learning"). Any head works; with `head = projection` the fixed
//! projection R_i (and its dropout) is a frozen random classifier. BP uses the same
//! rule on its last block only: the network's classifier.

use super::head::Head;
use super::{LocalLoss, LocalRule, RuleContext, Rules};
use crate::config::HeadKind;
use crate::model::Pooling;
use crate::objective::{self, project, Dropout, Projection};
use anyhow::Result;
use tch::{Device, Tensor};

/// A block's classifier: a trainable head, or the fixed projection.
#[derive(Debug)]
pub enum Classifier {
    /// A trainable head.
    Head(Head),
    /// R_i (m_i ⊙ pool(h_i)) / τ.
    Projection(Box<FixedClassifier>),
}

/// The fixed projection as a frozen classifier: R_i (m_i ⊙ pool(h_i)) / τ.
#[derive(Debug)]
pub struct FixedClassifier {
    /// R_i.
    pub projection: Projection,
    /// m_i.
    pub dropout: Dropout,
    /// How h_i is pooled.
    pub pooling: Pooling,
    /// τ.
    pub tau: f64,
}

impl Classifier {
    /// The classifier of block `b`: its head of `kind`, or its fixed projection.
    pub fn new(ctx: &RuleContext<'_>, b: &super::BlockSpec<'_>, kind: HeadKind) -> Result<Self> {
        Ok(match kind {
            HeadKind::Projection => {
                let seed = objective::projection_seed(ctx.config.train.seed, b.index + 1);
                Classifier::Projection(Box::new(FixedClassifier {
                    projection: Projection::new(ctx.objective, b.pooled_dim, seed, ctx.device),
                    dropout: Dropout::new(ctx.objective.dropout, seed),
                    pooling: b.pooling,
                    tau: ctx.objective.tau,
                }))
            }
            kind => Classifier::Head(ctx.head(b, kind)?),
        })
    }

    /// Logits of block output `h`.
    pub fn logits(&self, h: &Tensor, train: bool) -> Tensor {
        match self {
            Classifier::Head(head) => head.logits(h, train),
            Classifier::Projection(f) => {
                project(&f.projection, &f.pooling.apply(h), &f.dropout, train) / f.tau
            }
        }
    }

    /// A momentum head's EMA copy follows the next block (after its step).
    pub fn follow_next(&self) {
        if let Classifier::Head(head) = self {
            head.follow_next();
        }
    }

    /// Forward FLOPs per example of a trainable head (a projection counts as such).
    pub fn flops_per_example(&self) -> f64 {
        match self {
            Classifier::Head(head) => head.flops_per_example(),
            Classifier::Projection(_) => 0.0,
        }
    }
}

/// Local cross-entropy for one block (`classifier = None`: BP's inner blocks).
#[derive(Debug)]
pub struct Local {
    classifier: Option<Classifier>,
}

/// Builds the rules of `local` (`bp`: a classifier on the last block only).
pub fn build(ctx: &RuleContext<'_>, last_only: bool) -> Result<Rules> {
    let last = ctx.blocks.len().saturating_sub(1);
    let blocks = ctx
        .blocks
        .iter()
        .map(|b| {
            let classifier = (!last_only || b.index == last)
                .then(|| Classifier::new(ctx, b, ctx.objective.head))
                .transpose()?;
            Ok(Box::new(Local { classifier }) as Box<dyn LocalRule>)
        })
        .collect::<Result<_>>()?;
    Ok(Rules {
        blocks,
        input: Box::new(super::NoMessage),
    })
}

impl LocalRule for Local {
    fn follow_next(&self) {
        if let Some(c) = &self.classifier {
            c.follow_next();
        }
    }

    fn term_names(&self) -> &'static [&'static str] {
        &["prediction"]
    }

    fn loss(&self, h: &Tensor, y: &Tensor, _passed: Option<&Tensor>, train: bool) -> LocalLoss {
        let classifier = self
            .classifier
            .as_ref()
            .expect("a block trained alone has a head");
        let prediction = classifier.logits(h, train).cross_entropy_for_logits(y);
        LocalLoss {
            total: prediction.shallow_clone(),
            terms: vec![prediction],
            passes_on: None,
        }
    }

    fn logits(&self, h: &Tensor) -> Option<Tensor> {
        self.classifier.as_ref().map(|c| c.logits(h, false))
    }

    fn has_head(&self) -> bool {
        self.classifier.is_some()
    }

    fn set_device(&mut self, device: Device) {
        if let Some(Classifier::Projection(f)) = &mut self.classifier {
            f.projection = f.projection.to_device(device);
        }
    }

    fn dropout(&self) -> Option<&Dropout> {
        match &self.classifier {
            Some(Classifier::Projection(f)) => Some(&f.dropout),
            _ => None,
        }
    }

    fn projection_seed(&self) -> Option<u64> {
        match &self.classifier {
            Some(Classifier::Projection(f)) => Some(f.projection.seed),
            _ => None,
        }
    }

    fn flops(&self) -> super::RuleFlops {
        super::RuleFlops {
            trainable: self.classifier.as_ref().map_or(0.0, |c| c.flops_per_example()),
            projection: match &self.classifier {
                Some(Classifier::Projection(f)) => f.projection.flops_per_example(),
                _ => 0.0,
            },
            divergence_dim: None,
        }
    }
}
