//! What the training steps of an epoch report to: the progress bar, the per-block
//! loss sums and the divergence guard.

use crate::rules::terms::{BlockLoss, Terms};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::Mutex;

/// The divergence guard: a step's loss that is not finite, or above
/// `train.divergence_factor` times the block's loss on the run's first step, stops the
/// run. Shared by every stage of a pipeline; its references are part of the
/// resumable state.
pub struct LossGuard {
    factor: f64,
    references: Mutex<Vec<Option<f64>>>,
    tripped: Mutex<Option<String>>,
}

impl LossGuard {
    /// A guard with factor `factor` (0 = non-finite losses only) and the references of
    /// an earlier session (empty for a new run).
    pub fn new(factor: f64, references: Vec<Option<f64>>) -> Self {
        Self {
            factor,
            references: Mutex::new(references),
            tripped: Mutex::new(None),
        }
    }

    /// Each block's reference loss (its first step's), `None` before its first step.
    pub fn references(&self) -> Vec<Option<f64>> {
        self.references.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the guard stopped the run, once it has.
    pub fn tripped(&self) -> Option<String> {
        self.tripped.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Checks one block's loss; `Err` with the reason when it stops the run.
    fn check(&self, loss: &BlockLoss) -> std::result::Result<(), String> {
        let total = loss.terms.sum();
        let why = if !loss.is_finite() {
            Some("became non-finite".to_string())
        } else {
            let mut references = self.references.lock().unwrap_or_else(|e| e.into_inner());
            if references.len() <= loss.block {
                references.resize(loss.block + 1, None);
            }
            let reference = *references[loss.block].get_or_insert(total);
            (self.factor > 0.0 && total > self.factor * reference.max(1e-3)).then(|| {
                format!(
                    "exploded to {total:.4e}, more than train.divergence_factor = {} times its first step's {reference:.4}",
                    self.factor
                )
            })
        };
        match why {
            None => Ok(()),
            Some(why) => {
                let terms: Vec<String> = loss.terms.0.iter().map(|(n, v)| format!("{n} {v}")).collect();
                let why = format!("block {} loss {why} ({})", loss.block + 1, terms.join(", "));
                *self.tripped.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
                Err(why)
            }
        }
    }
}

/// Where the training steps of one epoch report their losses: per-block sums, the
/// progress bar, and the divergence guard. Shared by the stages of a pipeline, each
/// reporting its own blocks.
pub struct EpochProgress<'a> {
    bar: ProgressBar,
    sums: Mutex<Vec<BlockLoss>>,
    epoch: usize,
    first_step: usize,
    kept: String,
    guard: &'a LossGuard,
}

impl<'a> EpochProgress<'a> {
    /// Progress of epoch `epoch`, shown on `bar`, losses checked by `guard`; `kept`
    /// says what a failure leaves behind (named in its error).
    pub fn new(bar: ProgressBar, epoch: usize, kept: String, guard: &'a LossGuard) -> Self {
        Self {
            bar,
            sums: Mutex::new(vec![]),
            epoch,
            first_step: 0,
            kept,
            guard,
        }
    }

    /// The same for an epoch resumed after `first_step` steps whose loss sums were `sums`.
    pub fn starting_at(mut self, first_step: usize, sums: Vec<BlockLoss>) -> Self {
        self.first_step = first_step;
        self.sums = Mutex::new(sums);
        self
    }

    /// Adds the loss terms of some blocks at step `step` (0-based, counted from where
    /// this epoch's trainer started) to the sums; `completes` when they are the step's
    /// last (the bar advances). A non-finite or exploding loss is an error naming the
    /// block, epoch and step.
    pub fn record(&self, step: usize, losses: &[BlockLoss], completes: bool) -> Result<()> {
        let step = self.first_step + step;
        for loss in losses {
            if let Err(why) = self.guard.check(loss) {
                self.bar.abandon();
                bail!(
                    "{why} at epoch {}, step {}; training stopped; {} (try a lower optim.lr)",
                    self.epoch,
                    step + 1,
                    self.kept
                );
            }
        }
        let mut sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        accumulate(&mut sums, losses);
        if completes {
            if step.is_multiple_of(20) {
                self.bar.set_message(loss_message(&sums, step + 1));
            }
            self.bar.inc(1);
        }
        Ok(())
    }

    /// Clears the bar and returns the per-block sums, in block order.
    pub fn finish(self) -> Vec<BlockLoss> {
        self.bar.finish_and_clear();
        self.sums.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds `losses` to the sum of their blocks (a block seen for the first time gets a
/// sum of its own, kept in block order).
fn accumulate(sums: &mut Vec<BlockLoss>, losses: &[BlockLoss]) {
    for l in losses {
        let at = match sums.iter().position(|s| s.block >= l.block) {
            Some(at) if sums[at].block == l.block => at,
            position => {
                let at = position.unwrap_or(sums.len());
                sums.insert(
                    at,
                    BlockLoss {
                        block: l.block,
                        terms: Terms::default(),
                    },
                );
                at
            }
        };
        sums[at].terms.add(&l.terms);
    }
}

fn loss_message(sums: &[BlockLoss], steps: usize) -> String {
    sums.iter()
        .map(|s| format!("b{} {}", s.block + 1, s.terms.divided(steps as f64).short(3)))
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The progress bar of one epoch of `steps` steps.
pub(crate) fn progress_bar(steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:25}] {pos}/{len} {elapsed} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}
