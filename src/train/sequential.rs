//! The block-local training step of SLL (and of `local`, its β = 0 preset), as in
//! docs/method.md, "Training step": each block gets its input detached, computes its
//! local loss, and steps its own optimizer before the next block runs.

use super::model::Model;
use super::optim::Optimizer;
use super::BlockLoss;
use crate::config::Prior;
use anyhow::Result;
use tch::Tensor;

/// What block i passes to block i+1: its output and its posterior, both detached.
pub struct BlockOutput {
    /// sg(h_i).
    pub h: Tensor,
    /// sg(log q_i), when the projection is computed.
    pub log_q: Option<Tensor>,
    /// The block's loss terms on this minibatch.
    pub loss: BlockLoss,
}

/// Trains block `i` on one minibatch: h_i = f_i(sg(h_prev)), L_i with the (detached)
/// prior, one step of `optimizer`. Nothing of the graph survives the call, and no
/// gradient reaches any other block.
///
/// `log_q_prev` is log q_{i-1} for `prior = previous`; `label_prior` is log t_y for
/// `prior = label`.
pub fn block_step(
    model: &Model,
    i: usize,
    optimizer: &mut Optimizer,
    h_prev: &Tensor,
    log_q_prev: Option<&Tensor>,
    label_prior: Option<&Tensor>,
    y: &Tensor,
) -> Result<BlockOutput> {
    let block = &model.network.blocks[i];
    let out = block.forward_t(&h_prev.detach(), true);
    let u = block.pooling().apply(&out);
    let prior = match model.objective.prior {
        Prior::Previous => log_q_prev,
        Prior::Label => label_prior,
        Prior::None => None,
    };
    let (loss, log_q) = model.objectives[i].loss(&u, y, prior, true);
    crate::report::memory::probe();
    optimizer.backward_step(&loss.total)?;
    Ok(BlockOutput {
        h: out.detach(),
        log_q: log_q.map(|t| t.detach()),
        loss: BlockLoss::read(i, &loss),
    })
}

/// One minibatch through every block in order; returns each block's loss terms.
pub fn step(model: &Model, optimizers: &mut [Optimizer], x: &Tensor, y: &Tensor) -> Result<Vec<BlockLoss>> {
    let label_prior = model.label_targets.as_ref().map(|t| t.index_select(0, y));
    let mut log_q = model.input_log_posterior(x, true);
    let mut h = x.shallow_clone();
    let mut losses = Vec::with_capacity(model.network.len());
    for (i, optimizer) in optimizers.iter_mut().enumerate() {
        let out = block_step(model, i, optimizer, &h, log_q.as_ref(), label_prior.as_ref(), y)?;
        losses.push(out.loss);
        (h, log_q) = (out.h, out.log_q);
    }
    Ok(losses)
}
