//! End-to-end backpropagation through the same blocks: one head on the last block,
//! one global cross-entropy, one optimizer over every parameter. The baseline SLL is
//! measured against.

use super::model::Model;
use super::optim::Optimizer;
use super::BlockLoss;
use anyhow::Result;
use tch::Tensor;

/// One minibatch forward through all blocks and back; returns the loss of the last block.
pub fn step(model: &Model, optimizer: &mut Optimizer, x: &Tensor, y: &Tensor) -> Result<Vec<BlockLoss>> {
    let h = model
        .network
        .blocks
        .iter()
        .fold(x.shallow_clone(), |h, block| block.forward_t(&h, true));
    let last = model.network.blocks.last().expect("at least one block");
    let u = last.pooling().apply(&h);
    let (loss, _) = model
        .objectives
        .last()
        .expect("one objective per block")
        .loss(&u, y, None, true);
    optimizer.backward_step(&loss.total)?;
    Ok(vec![BlockLoss::read(model.network.len() - 1, &loss)])
}
