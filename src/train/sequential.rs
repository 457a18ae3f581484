//! The block-local training step of SLL (and of `local`, its β = 0 preset), as in
//! docs/method.md, "Training step": each block gets its input detached, computes its
//! local loss, and steps its own optimizer before the next block runs.

use super::model::Model;
use super::optim::Optimizer;
use super::BlockLoss;
use crate::config::Prior;
use crate::model::Block;
use crate::objective::BlockObjective;
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

/// Everything the local step of block i reads: the block, its objective, and which
/// prior its divergence uses. Borrowed from a [`Model`] ([`Model::local_block`]) or
/// from the share of it a pipeline stage owns.
#[derive(Clone, Copy)]
pub struct LocalBlock<'a> {
    /// 0-based block index i.
    pub index: usize,
    /// f_i.
    pub block: &'a dyn Block,
    /// Head and projection of block i.
    pub objective: &'a BlockObjective,
    /// The prior of the divergence term.
    pub prior: Prior,
}

/// Trains block `part` on one minibatch: h_i = f_i(sg(h_prev)), L_i with the (detached)
/// prior, one step of `optimizer`. Nothing of the graph survives the call, and no
/// gradient reaches any other block.
///
/// `log_q_prev` is log q_{i-1} for `prior = previous`; `label_prior` is log t_y for
/// `prior = label`. `sync(i)` runs between the backward pass and the optimizer step
/// (data-parallel replicas average their gradients there; `&|_| Ok(())` otherwise).
pub fn block_step(
    part: LocalBlock<'_>,
    optimizer: &mut Optimizer,
    h_prev: &Tensor,
    log_q_prev: Option<&Tensor>,
    label_prior: Option<&Tensor>,
    y: &Tensor,
    sync: &dyn Fn(usize) -> Result<()>,
) -> Result<BlockOutput> {
    let out = part.block.forward_t(&h_prev.detach(), true);
    let u = part.block.pooling().apply(&out);
    let prior = match part.prior {
        Prior::Previous => log_q_prev,
        Prior::Label => label_prior,
        Prior::None => None,
    };
    let (loss, log_q) = part.objective.loss(&u, y, prior, true);
    crate::report::memory::probe();
    optimizer.step_after(|| {
        loss.total.f_backward()?;
        sync(part.index)
    })?;
    Ok(BlockOutput {
        h: out.detach(),
        log_q: log_q.map(|t| t.detach()),
        loss: BlockLoss::read(part.index, &loss),
    })
}

/// One minibatch through every block in order; returns each block's loss terms.
pub fn step(model: &Model, optimizers: &mut [Optimizer], x: &Tensor, y: &Tensor) -> Result<Vec<BlockLoss>> {
    let label_prior = model.label_prior(y);
    let mut log_q = model.input_log_posterior(x, true);
    let mut h = x.shallow_clone();
    let mut losses = Vec::with_capacity(model.network.len());
    for (i, optimizer) in optimizers.iter_mut().enumerate() {
        let part = model.local_block(i);
        let out = block_step(
            part,
            optimizer,
            &h,
            log_q.as_ref(),
            label_prior.as_ref(),
            y,
            &|_| Ok(()),
        )?;
        losses.push(out.loss);
        (h, log_q) = (out.h, out.log_q);
    }
    Ok(losses)
}
