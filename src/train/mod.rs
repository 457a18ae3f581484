//! Trainers: they drive blocks through epochs, whatever the blocks contain.
//!
//! - [`sequential`]: SLL and `local`, block by block, each with its own optimizer;
//! - [`bp`]: end-to-end backpropagation through the same blocks;
//! - [`pipeline`]: the local step with blocks grouped into concurrent stages;
//! - `distributed` (feature `mpi`): the same with one stage per MPI rank.
//!
//! [`progress`] is what their steps report to. The whole training run behind `sll
//! train` (epochs, evaluation, the run directory, checkpoints) is [`crate::run`].

pub mod bp;
#[cfg(feature = "mpi")]
pub mod distributed;
pub mod fused_adam;
pub mod optim;
pub mod pipeline;
pub mod progress;
pub mod sequential;
pub mod tensor_optim;

use crate::config::{Config, Method};
use crate::data::{self, Dataset};
use crate::learner::Model;
use crate::rules::terms::BlockLoss;
use anyhow::Result;
use optim::{LrSchedule, Optimizer};
use tch::Tensor;

/// Sets libtorch's global state for a run: intra-op threads, flushing of subnormal
/// numbers and the seed.
pub fn init_runtime(config: &Config) {
    if config.train.threads > 0 {
        tch::set_num_threads(config.train.threads as i32);
    }
    crate::denormals::apply(config.train.flush_denormals);
    tch::manual_seed(config.train.seed as i64);
}

/// The optimizers of a method: one per block for `sll`/`local`, one over every
/// parameter for `bp`, all on `schedule`.
pub fn build_optimizers(config: &Config, model: &Model, schedule: &LrSchedule) -> Result<Vec<Optimizer>> {
    let blocks = 0..model.network.len();
    match config.train.method {
        Method::Bp => {
            let params: Vec<Tensor> = blocks.flat_map(|i| model.network.trainable(i)).collect();
            Ok(vec![Optimizer::new(&config.optim, &params, schedule.clone())?])
        }
        _ => blocks
            .map(|i| Optimizer::new(&config.optim, &model.network.trainable(i), schedule.clone()))
            .collect(),
    }
}

/// One training step of the configured method on a minibatch; returns the loss terms.
pub fn train_step(
    method: Method,
    model: &Model,
    optimizers: &mut [Optimizer],
    x: &Tensor,
    y: &Tensor,
) -> Result<Vec<BlockLoss>> {
    match method {
        Method::Bp => bp::step(model, &mut optimizers[0], x, y),
        _ => sequential::step(model, optimizers, x, y),
    }
}

/// One epoch of [`fit`]: each block's loss terms averaged over the epoch's steps.
#[derive(Debug, Clone, PartialEq)]
pub struct FitEpoch {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Per block (input to output), the mean of each loss term over the epoch (`None`
    /// for a block without a loss of its own: BP's inner blocks).
    pub losses: Vec<Option<crate::rules::terms::Terms>>,
}

/// Trains `model` on `data` for `epochs` epochs with the optimizers and schedule of
/// `config`, in memory: the plain loop of shuffled minibatches and [`train_step`], with
/// no run directory, checkpoint, evaluation or pipeline (what `examples/` use; `sll
/// train` is [`crate::run::run`]). Returns each epoch's mean loss terms per block.
pub fn fit(config: &Config, model: &Model, data: &Dataset, epochs: usize) -> Result<Vec<FitEpoch>> {
    fit_with(config, model, data, epochs, |_| Ok(()))
}

/// [`fit`], calling `after_epoch` with each epoch's record as it ends (an error from
/// it stops training and is returned).
pub fn fit_with(
    config: &Config,
    model: &Model,
    data: &Dataset,
    epochs: usize,
    mut after_epoch: impl FnMut(&FitEpoch) -> Result<()>,
) -> Result<Vec<FitEpoch>> {
    let steps = data.len().div_ceil(config.data.batch_size);
    let schedule = LrSchedule::new(&config.optim, steps, steps * epochs);
    let mut optimizers = build_optimizers(config, model, &schedule)?;
    let mut history = vec![];
    for epoch in 1..=epochs {
        let mut sums: Vec<Option<crate::rules::terms::Terms>> = vec![None; model.network.len()];
        let mut count = 0usize;
        for (x, y) in data::shuffled_batches(data, config.data.batch_size, config.train.seed, epoch) {
            for loss in train_step(config.train.method, model, &mut optimizers, &x, &y)? {
                match &mut sums[loss.block] {
                    Some(sum) => sum.add(&loss.terms),
                    slot => *slot = Some(loss.terms),
                }
            }
            count += 1;
        }
        let n = count.max(1) as f64;
        let record = FitEpoch {
            epoch,
            losses: sums.iter().map(|t| t.as_ref().map(|t| t.divided(n))).collect(),
        };
        after_epoch(&record)?;
        history.push(record);
    }
    Ok(history)
}
