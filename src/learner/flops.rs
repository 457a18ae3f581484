//! Counted FLOPs of one training step, block by block, with every
//! part a skeptic asks about: the block's layers forward and backward, the local head,
//! the fixed projection R (2·d0·dim(u) per example for the dense Gaussian, forward and
//! again for its input gradient in backward; 2·k·dim(u) sparse; n·log2(n) + dim(u)
//! for the SRHT), the dropout and the Bhattacharyya term, and q_0's projection of the
//! input. `sll bench flops` prints them next to the GFLOP/s measured by timing steps.
//!
//! Conventions: a multiply-add is 2 FLOPs; backward of a linear map or convolution is
//! twice its forward (weight gradient + input gradient) except that a detached block
//! input (SLL, local, and BP's first block) needs no input gradient for its first
//! layer; element-wise work (dropout, softmax, D_B) counts one FLOP per operation per
//! entry, with the operation counts of the constants below. Biases, activations,
//! pooling and norms are not counted (they are small next to the products).

use super::Model;
use crate::config::Method;
use serde::Serialize;

/// Element-wise operations per d0 entry of log q = log softmax(z/τ): scale, max-subtract,
/// exp, sum, log-subtract.
pub const LOG_SOFTMAX_OPS: f64 = 5.0;
/// Forward operations per d0 entry of D_B(q, p) after log q: add the logs, halve,
/// exp, sum.
pub const BHATTACHARYYA_OPS: f64 = 4.0;
/// Backward operations per d0 entry of ∂D_B/∂z = (q − w)/(2τN): w's normalisation
/// (2), subtract, scale.
pub const BHATTACHARYYA_BACKWARD_OPS: f64 = 4.0;

/// Counted FLOPs of one block's share of a training step, per example.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BlockFlops {
    /// 1-based block number.
    pub block: usize,
    /// The block's layers, forward.
    pub forward: f64,
    /// The block's layers, backward (weight gradients + input gradients).
    pub backward: f64,
    /// The local head, forward and backward (0 for BP's inner blocks).
    pub head: f64,
    /// The projection z = R(m ⊙ u), forward and its input gradient.
    pub projection: f64,
    /// Dropout, log-softmax and the Bhattacharyya distance, forward and backward.
    pub divergence: f64,
}

impl BlockFlops {
    /// All of the block's FLOPs per example.
    pub fn total(&self) -> f64 {
        self.forward + self.backward + self.head + self.projection + self.divergence
    }
}

/// Counted FLOPs of one training step of a model, per example.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepFlops {
    /// Each block's share.
    pub blocks: Vec<BlockFlops>,
    /// q_0: dropout, projection and log-softmax of the pooled input (forward only).
    pub input_projection: f64,
}

impl StepFlops {
    /// FLOPs of a step on `batch` examples.
    pub fn per_step(&self, batch: usize) -> f64 {
        (self.blocks.iter().map(BlockFlops::total).sum::<f64>() + self.input_projection) * batch as f64
    }
}

/// Counts the FLOPs of one training step of `model` (see the module documentation).
pub fn count(model: &Model) -> StepFlops {
    let network = &model.network;
    let d0 = model.objective.d0 as f64;
    let blocks = network
        .blocks
        .iter()
        .zip(&model.rules)
        .enumerate()
        .map(|(i, (block, rule))| {
            let (forward, first) = block.forward_flops();
            let input_needs_grad = model.method == Method::Bp && i > 0;
            let flops = rule.flops();
            let divergence = flops.divergence_dim.map_or(0.0, |dim| {
                2.0 * dim + (LOG_SOFTMAX_OPS + BHATTACHARYYA_OPS + BHATTACHARYYA_BACKWARD_OPS) * d0
            });
            BlockFlops {
                block: i + 1,
                forward,
                backward: 2.0 * forward - if input_needs_grad { 0.0 } else { first },
                head: 3.0 * flops.trainable,
                projection: 2.0 * flops.projection,
                divergence,
            }
        })
        .collect();
    let input_flops = model.input.projection_flops();
    let input_projection = if input_flops > 0.0 {
        input_flops + network.input_dim as f64 + LOG_SOFTMAX_OPS * d0
    } else {
        0.0
    };
    StepFlops {
        blocks,
        input_projection,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use tch::Device;

    fn model(sets: &[&str], input: [i64; 3]) -> Model {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        let config = Config::load(Some("mnist-mlp"), &sets).unwrap();
        Model::new(&config, 10, input, Device::Cpu).unwrap()
    }

    #[test]
    fn linear_projection_head_and_divergence_match_hand_counts() {
        let _turn = crate::libtorch_turn();
        // Input 1×2×3 (6 values), layers 6→16→8, d0 = 4, dense Gaussian projections.
        let m = model(
            &[
                "model.hidden=[16, 8]",
                "objective.d0=4",
                "objective.projection=\"gaussian\"",
            ],
            [1, 2, 3],
        );
        let f = count(&m);
        let b1 = f.blocks[0];
        assert_eq!(b1.forward, 2.0 * 6.0 * 16.0);
        // Detached input: weight gradient only.
        assert_eq!(b1.backward, 2.0 * 6.0 * 16.0);
        assert_eq!(b1.head, 3.0 * 2.0 * 16.0 * 10.0);
        // 2·d0·dim forward and again backward.
        assert_eq!(b1.projection, 2.0 * (2.0 * 4.0 * 16.0));
        assert_eq!(b1.divergence, 2.0 * 16.0 + 13.0 * 4.0);
        let b2 = f.blocks[1];
        assert_eq!(b2.forward, 2.0 * 16.0 * 8.0);
        assert_eq!(b2.projection, 2.0 * (2.0 * 4.0 * 8.0));
        assert_eq!(f.input_projection, 2.0 * 4.0 * 6.0 + 6.0 + 5.0 * 4.0);
        let per_example = b1.total() + b2.total() + f.input_projection;
        assert_eq!(f.per_step(3), 3.0 * per_example);
    }

    #[test]
    fn backprop_counts_input_gradients_and_only_the_last_head() {
        let _turn = crate::libtorch_turn();
        let m = model(&["model.hidden=[16, 8]", "train.method=\"bp\""], [1, 2, 3]);
        let f = count(&m);
        assert_eq!(f.blocks[0].head, 0.0);
        assert_eq!(
            f.blocks[0].projection + f.blocks[0].divergence + f.input_projection,
            0.0
        );
        assert_eq!(f.blocks[1].backward, 2.0 * 2.0 * 16.0 * 8.0);
        assert_eq!(f.blocks[1].head, 3.0 * 2.0 * 8.0 * 10.0);
    }

    #[test]
    fn conv_and_sparse_projection_match_hand_counts() {
        let _turn = crate::libtorch_turn();
        // conv 3×3 3→4 on 8×8 (padding keeps the size), then pooled to 2×2: dim(u) = 16.
        let m = model(
            &[
                "model.kind=\"cnn\"",
                "model.channels=[4]",
                "model.pool_after=[]",
                "model.pool_grid=2",
                "objective.d0=4",
                "objective.projection=\"sparse\"",
                "objective.sparse_nonzeros=2",
            ],
            [3, 8, 8],
        );
        let b = count(&m).blocks[0];
        assert_eq!(b.forward, 2.0 * 3.0 * 9.0 * 4.0 * 64.0);
        assert_eq!(b.projection, 2.0 * (2.0 * 2.0 * 16.0));
    }
}
