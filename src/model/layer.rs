//! What a block says about its own layers: the kind and width of each, input to
//! output. Heads that copy the downstream network (AugLocal's auxiliary nets,
//! `rules::auglocal`) are built from these descriptions, and the footprint estimate
//! walks the same lists from the config before anything is built.

/// One layer (a unit) of a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Layer {
    /// A 3×3 convolution → (norm) → ReLU with `channels` outputs (a CNN stage, a
    /// ResNet's stem).
    Conv {
        /// Output channels.
        channels: i64,
    },
    /// A basic residual block of width `channels`.
    Residual {
        /// Output channels.
        channels: i64,
    },
    /// A linear layer → activation of `width` outputs (an MLP layer).
    Dense {
        /// Output width.
        width: i64,
    },
    /// A pre-norm transformer block on `tokens` tokens of `width`.
    Transformer {
        /// Token width D.
        width: i64,
        /// Attention heads.
        heads: i64,
        /// Hidden width of the MLP as a multiple of `width`.
        mlp_ratio: f64,
        /// Tokens per example.
        tokens: i64,
        /// Dropout rate inside the block.
        dropout: f64,
    },
}

impl Layer {
    /// The layer's output width (channels, features, token width).
    pub fn width(&self) -> i64 {
        match *self {
            Layer::Conv { channels } | Layer::Residual { channels } => channels,
            Layer::Dense { width } | Layer::Transformer { width, .. } => width,
        }
    }
}
