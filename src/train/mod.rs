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

/// Trains `model` on `data` for `epochs` epochs with the optimizers and schedule of
/// `config`, in memory: the plain loop of shuffled minibatches and [`train_step`], with
/// no run directory, checkpoint, evaluation or pipeline (what `examples/` use; `sll
/// train` is [`crate::run::run`]).
pub fn fit(config: &Config, model: &Model, data: &Dataset, epochs: usize) -> Result<()> {
    let steps = data.len().div_ceil(config.data.batch_size);
    let schedule = LrSchedule::new(&config.optim, steps, steps * epochs);
    let mut optimizers = build_optimizers(config, model, &schedule)?;
    for epoch in 1..=epochs {
        for (x, y) in data::shuffled_batches(data, config.data.batch_size, config.train.seed, epoch) {
            train_step(config.train.method, model, &mut optimizers, &x, &y)?;
        }
    }
    Ok(())
}
