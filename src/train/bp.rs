//! End-to-end backpropagation through the same blocks: one head on the last block,
//! one global cross-entropy, one optimizer over every parameter. The baseline SLL is
//! measured against, plain and with activation checkpointing per block.

use super::optim::Optimizer;
use crate::heap::probe;
use crate::learner::Model;
use crate::precision::Autocast;
use crate::rules::terms::BlockLoss;
use anyhow::{Context, Result};
use tch::Tensor;

/// One minibatch forward through all blocks and back; returns the loss of the last block.
pub fn step(model: &Model, optimizer: &mut Optimizer, x: &Tensor, y: &Tensor) -> Result<Vec<BlockLoss>> {
    // bf16: forward and loss in an autocast region, closed before the backward pass.
    let region = Autocast::enter(model.precision, x.device());
    let h = model.network.blocks.iter().fold(x.shallow_clone(), |h, block| {
        let out = block.forward_t(&h, true);
        probe();
        out
    });
    let rule = model.rules.last().expect("one rule per block");
    let loss = rule.loss(&h, y, None, true);
    drop(region);
    probe();
    optimizer.backward_step(&loss.total)?;
    Ok(vec![BlockLoss::read(
        model.network.len() - 1,
        rule.term_names(),
        &loss.terms,
    )])
}

/// The same step as [`step`] with activation checkpointing per block: the forward pass
/// runs without a graph and keeps only each block's input; the backward pass recomputes
/// one block at a time, last first, with a graph, and back-propagates into it the
/// gradient that arrived from the block above. Same gradients as [`step`] (up to
/// floating-point order) for blocks whose forward is deterministic; blocks with dropout
/// draw new masks in the recomputation, and batch-norm running statistics are updated
/// twice.
pub fn checkpointed_step(
    model: &Model,
    optimizer: &mut Optimizer,
    x: &Tensor,
    y: &Tensor,
) -> Result<Vec<BlockLoss>> {
    let blocks = &model.network.blocks;
    let last = blocks.len() - 1;
    let mut inputs = vec![x.shallow_clone()];
    tch::no_grad(|| {
        let _region = Autocast::enter(model.precision, x.device());
        for block in &blocks[..last] {
            let h = block.forward_t(inputs.last().expect("the input"), true);
            inputs.push(h);
            probe();
        }
    });
    let mut result = None;
    optimizer.step_after(|| {
        let mut grad_above: Option<Tensor> = None;
        for i in (0..=last).rev() {
            let input = inputs.pop().expect("one input per block").detach();
            let input = if i > 0 {
                input.set_requires_grad(true)
            } else {
                input
            };
            let region = Autocast::enter(model.precision, x.device());
            let out = blocks[i].forward_t(&input, true);
            match grad_above.take() {
                None => {
                    let rule = &model.rules[i];
                    let loss = rule.loss(&out, y, None, true);
                    drop(region);
                    probe();
                    loss.total.f_backward()?;
                    result = Some(BlockLoss::read(i, rule.term_names(), &loss.terms));
                }
                Some(g) => {
                    drop(region);
                    probe();
                    // d⟨out, sg(g)⟩/d(out) = g: back-propagates g through block i.
                    (&out * g).sum(None).f_backward()?;
                }
            }
            if i > 0 {
                grad_above = Some(input.grad().detach());
            }
        }
        Ok(())
    })?;
    Ok(vec![result.context("the last block computed no loss")?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::train::{build_optimizers, optim::LrSchedule};
    use tch::{Device, Kind};

    /// Parameters after one step of `checkpointed` or plain BP from the same seed.
    fn parameters_after_step(checkpointed: bool) -> (f64, Vec<Tensor>) {
        let sets = [
            "model.hidden=[32, 24, 16]",
            "train.method=\"bp\"",
            "optim.optimizer=\"sgd\"",
            "optim.momentum=0.0",
            "optim.lr=0.5",
            "optim.schedule=\"constant\"",
        ]
        .map(String::from);
        let config = Config::load(Some("mnist-mlp"), &sets).unwrap();
        tch::manual_seed(3);
        let model = Model::new(&config, 10, [1, 4, 5], Device::Cpu).unwrap();
        let mut optimizers =
            build_optimizers(&config, &model, &LrSchedule::new(&config.optim, 1, 1)).unwrap();
        let x = Tensor::randn([8, 1, 4, 5], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
        let step_fn = if checkpointed { checkpointed_step } else { step };
        let loss = step_fn(&model, &mut optimizers[0], &x, &y).unwrap()[0].prediction();
        let params = (0..model.network.len())
            .flat_map(|i| model.network.trainable(i))
            .map(|p| p.detach().copy())
            .collect();
        (loss, params)
    }

    #[test]
    fn checkpointed_step_matches_plain_backprop() {
        let _turn = crate::libtorch_turn();
        let (plain_loss, plain) = parameters_after_step(false);
        let (loss, checkpointed) = parameters_after_step(true);
        assert_eq!(plain_loss, loss);
        assert_eq!(plain.len(), checkpointed.len());
        for (a, b) in plain.iter().zip(&checkpointed) {
            let diff = (a - b).abs().max().double_value(&[]);
            assert!(diff < 1e-5, "parameters differ by {diff}");
        }
    }
}
