//! The block-local training step of every local rule, as in docs/method.md,
//! "Training step": each block gets its input detached, computes its local loss
//! (`rules`), and steps its own optimizer before the next block runs.

use super::optim::Optimizer;
use crate::learner::{LocalBlock, Model};
use crate::precision::Autocast;
use crate::rules::terms::BlockLoss;
use anyhow::Result;
use tch::Tensor;

/// What block i passes to block i+1: its output and its rule's message, both detached.
pub struct BlockOutput {
    /// sg(h_i).
    pub h: Tensor,
    /// What the rule passes on (SLL: sg(log q_i); InfoPro: x), if anything.
    pub passed: Option<Tensor>,
    /// The block's loss terms on this minibatch.
    pub loss: BlockLoss,
}

/// Trains block `part` on one minibatch: h_i = f_i(sg(h_prev)), its rule's loss given
/// what the block below passed on, one step of `optimizer`. Nothing of the graph
/// survives the call, and no gradient reaches any other block.
///
/// `sync(i)` runs between the backward pass and the optimizer step (data-parallel
/// replicas average their gradients there; `&|_| Ok(())` otherwise).
pub fn block_step(
    part: LocalBlock<'_>,
    optimizer: &mut Optimizer,
    h_prev: &Tensor,
    passed: Option<&Tensor>,
    y: &Tensor,
    sync: &dyn Fn(usize) -> Result<()>,
) -> Result<BlockOutput> {
    // bf16: the forward pass and the loss inside an autocast region, closed before the
    // backward pass and the step (fp32: no region).
    let region = Autocast::enter(part.precision, h_prev.device());
    let out = part.block.forward_t(&h_prev.detach(), true);
    let loss = part.rule.loss(&out, y, passed.map(|p| p.detach()).as_ref(), true);
    drop(region);
    crate::heap::probe();
    optimizer.step_after(|| {
        loss.total.f_backward()?;
        sync(part.index)
    })?;
    if let Some(previous) = part.previous {
        previous.follow_next();
    }
    Ok(BlockOutput {
        h: out.detach(),
        passed: loss.passes_on.as_ref().map(|t| t.detach()),
        loss: BlockLoss::read(part.index, part.rule.term_names(), &loss.terms),
    })
}

/// One minibatch through every block in order; returns each block's loss terms.
pub fn step(model: &Model, optimizers: &mut [Optimizer], x: &Tensor, y: &Tensor) -> Result<Vec<BlockLoss>> {
    let mut passed = model.input_message(x, true);
    let mut h = x.shallow_clone();
    let mut losses = Vec::with_capacity(model.network.len());
    for (i, optimizer) in optimizers.iter_mut().enumerate() {
        let out = block_step(model.local_block(i), optimizer, &h, passed.as_ref(), y, &|_| {
            Ok(())
        })?;
        losses.push(out.loss);
        (h, passed) = (out.h, out.passed);
    }
    Ok(losses)
}
