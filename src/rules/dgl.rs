//! DGL, decoupled greedy learning (Belilovsky, Eickenberg and Oyallon, *Decoupled
//! Greedy Learning of CNNs*, ICML 2020): each block trains a small convolutional
//! auxiliary network on its output with cross-entropy,
//!
//! ```text
//! L_i = CE(aux_i(h_i), y),   aux_i = two 3×3 conv–BN–ReLU at the block's width → 2×2 average pool → linear
//! ```
//!
//! The rule is local cross-entropy; what makes it DGL is the auxiliary net, the `conv`
//! head ([`super::head`]), which `objective.head = "auto"` gives this method. Any
//! other head can be set, to compare heads under one rule.

use super::{RuleContext, Rules};
use anyhow::Result;

/// Builds DGL's rules: local cross-entropy through each block's auxiliary net.
pub fn build(ctx: &RuleContext<'_>) -> Result<Rules> {
    super::local::build(ctx, false)
}
