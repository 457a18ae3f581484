//! The per-model-kind counting: one function per model kind walks the layer shapes
//! that `model/<kind>.rs` builds and gives, per block, its trainable parameters
//! (exact), its pooled dimension and the floats one example keeps alive in a training
//! step (approximate). [`network`] picks the function of a config's model kind.

use crate::model::{CnnConfig, MlpConfig, ModelConfig, Norm, PatchEmbed, ResnetConfig, Stem, VitConfig};
use crate::model::{InputShape, Layer};

/// One block as far as memory goes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BlockShape {
    /// Trainable parameters of the block's layers (its local head not included).
    pub parameters: u128,
    /// dim(u_i), the pooled output that the head and the projection see.
    pub pooled_dim: u128,
    /// [C, H, W] of the block's output, when it is a feature map (what the heads that
    /// read the unpooled map are sized by).
    pub map: Option<[u128; 3]>,
    /// Floats per example that a training forward pass keeps for backward.
    pub activations: f64,
    /// Floats per example of the block's output h_i.
    pub output: f64,
    /// Floats per example of the block's largest single intermediate map.
    pub largest: f64,
    /// The block's layers, as the built block describes them (`Block::layers`).
    pub layers: Vec<Layer>,
}

/// The blocks of a network, and what its input looks like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkShape {
    /// f_1 … f_L.
    pub blocks: Vec<BlockShape>,
    /// dim(pool(x)), what the input's projection R_0 sees.
    pub input_dim: u128,
    /// Floats per example of the input x.
    pub input: f64,
}

impl NetworkShape {
    /// Trainable parameters of all blocks (heads not included).
    pub fn parameters(&self) -> u128 {
        self.blocks.iter().map(|b| b.parameters).sum()
    }
}

/// A count from the config as an unsigned number (negative values, which
/// validation refuses, count as 0).
pub(super) fn n(v: i64) -> u128 {
    v.max(0) as u128
}

/// The MLP of [`crate::model::mlp::build`]: per layer a Linear (weights and bias) and, with a
/// norm, its weight and bias.
pub fn mlp(config: &MlpConfig, input: InputShape) -> NetworkShape {
    let input_dim: u128 = input.iter().map(|&d| n(d)).product();
    let norm = u128::from(config.norm != Norm::None);
    let mut in_dim = input_dim;
    let blocks = config
        .hidden
        .chunks(config.block_size.max(1))
        .map(|widths| {
            let mut block = BlockShape::default();
            for &width in widths {
                let width = n(width);
                block.parameters += in_dim * width + width + 2 * norm * width;
                // The linear map's output, the norm's, the activation's.
                block.activations += (2 + norm) as f64 * width as f64;
                block.largest = block.largest.max(width as f64);
                block.layers.push(Layer::Dense { width: width as i64 });
                in_dim = width;
            }
            block.pooled_dim = in_dim;
            block.output = in_dim as f64;
            block
        })
        .collect();
    NetworkShape {
        blocks,
        input_dim,
        input: input_dim as f64,
    }
}

/// The VGG-style CNN of [`crate::model::cnn::build`]: per stage a 3×3 conv with bias and,
/// with batch norm, its weight and bias.
pub fn cnn(config: &CnnConfig, input: InputShape) -> NetworkShape {
    let grid = n(config.pool_grid);
    let batch_norm = config.norm == Norm::Batch;
    let bn = u128::from(batch_norm);
    let [c, mut height, mut width] = input.map(n);
    let mut c_in = c;
    let numbered: Vec<(usize, i64)> = config.channels.iter().copied().enumerate().collect();
    let blocks = numbered
        .chunks(config.block_size.max(1))
        .map(|chunk| {
            let mut block = BlockShape::default();
            // The channels-last copy of the block's input.
            if config.channels_last {
                block.activations += (c_in * height * width) as f64;
            }
            for &(index, c_out) in chunk {
                block.layers.push(Layer::Conv { channels: c_out });
                let c_out = n(c_out);
                block.parameters += c_in * 9 * c_out + c_out + 2 * bn * c_out;
                let map = (c_out * height * width) as f64;
                // The conv's output, the norm's, the ReLU's.
                block.activations += (2 + bn) as f64 * map;
                block.largest = block.largest.max(map);
                if config.pool_after.contains(&(index + 1)) {
                    (height, width) = (height / 2, width / 2);
                    // The pooled map and its (64-bit) argmax indices.
                    block.activations += 3.0 * (c_out * height * width) as f64;
                }
                c_in = c_out;
            }
            block.pooled_dim = c_in * grid * grid;
            block.output = (c_in * height * width) as f64;
            block.map = Some([c_in, height, width]);
            block
        })
        .collect();
    NetworkShape {
        blocks,
        input_dim: c * grid * grid,
        input: (c * n(input[1]) * n(input[2])) as f64,
    }
}

/// Spatial size after a conv of `kernel` (padding kernel/2) with `stride`, as
/// [`crate::model::resnet`] computes it.
fn conv_out(size: i64, kernel: i64, stride: i64) -> i64 {
    ((size + 2 * (kernel / 2) - kernel) / stride.max(1) + 1).max(0)
}

/// Parameters of a conv (bias unless a batch norm follows) and its batch norm.
fn conv_norm(c_in: u128, c_out: u128, kernel: u128, batch_norm: bool) -> u128 {
    c_in * kernel * kernel * c_out + if batch_norm { 2 * c_out } else { c_out }
}

/// The ResNet of [`crate::model::resnet::build`]: the stem (with the first block), then basic
/// blocks of two 3×3 conv–norm pairs and a 1×1 projection shortcut where the width or
/// the resolution changes.
pub fn resnet(config: &ResnetConfig, input: InputShape) -> NetworkShape {
    let batch_norm = config.norm == Norm::Batch;
    let bn = f64::from(u8::from(batch_norm));
    let grid = n(config.pool_grid);
    let [c, mut height, mut width] = input;
    let plan = config.plan();
    let mut channels = n(c);
    let mut blocks = vec![];
    for (with_stem, range) in crate::model::resnet::unit_groups(config, plan.len()) {
        let chunk = &plan[range];
        let mut block = BlockShape::default();
        let area = |h: i64, w: i64| (n(h) * n(w)) as f64;
        if config.channels_last {
            block.activations += channels as f64 * area(height, width);
        }
        if with_stem {
            let (kernel, stride, max_pool) = match config.stem {
                Stem::Cifar => (3, 1, false),
                Stem::Imagenet => (7, 2, true),
            };
            let c0 = n(config.channels.first().copied().unwrap_or(0));
            block.layers.push(Layer::Conv { channels: c0 as i64 });
            block.parameters += conv_norm(channels, c0, kernel as u128, batch_norm);
            (height, width) = (conv_out(height, kernel, stride), conv_out(width, kernel, stride));
            let map = c0 as f64 * area(height, width);
            block.activations += (2.0 + bn) * map;
            block.largest = block.largest.max(map);
            if max_pool {
                (height, width) = (conv_out(height, 3, 2), conv_out(width, 3, 2));
                block.activations += 3.0 * c0 as f64 * area(height, width);
            }
            channels = c0;
        }
        for &(c_out, stride) in chunk {
            block.layers.push(Layer::Residual { channels: c_out });
            let c_out = n(c_out);
            let projection = stride != 1 || channels != c_out;
            block.parameters +=
                conv_norm(channels, c_out, 3, batch_norm) + conv_norm(c_out, c_out, 3, batch_norm);
            if projection {
                block.parameters += conv_norm(channels, c_out, 1, batch_norm);
            }
            (height, width) = (conv_out(height, 3, stride), conv_out(width, 3, stride));
            let map = c_out as f64 * area(height, width);
            // conv1, its norm, ReLU, conv2, its norm, (the shortcut's conv and norm),
            // the sum, ReLU.
            let maps = 4.0 + 2.0 * bn + if projection { 1.0 + bn } else { 0.0 };
            block.activations += maps * map;
            block.largest = block.largest.max(map);
            channels = c_out;
        }
        block.pooled_dim = channels * grid * grid;
        block.output = channels as f64 * area(height, width);
        block.map = Some([channels, n(height), n(width)]);
        blocks.push(block);
    }
    NetworkShape {
        blocks,
        input_dim: n(c) * grid * grid,
        input: (n(c) * n(input[1]) * n(input[2])) as f64,
    }
}

/// The ViT of [`crate::model::vit::build`]: the patch embedding, position embeddings and
/// class token with the first block, pre-norm transformer blocks (two LayerNorms, qkv
/// and output maps, a two-layer MLP), and the final LayerNorm with the last block.
pub fn vit(config: &VitConfig, input: InputShape) -> NetworkShape {
    let [c, h, w] = input;
    let p = config.patch_size.max(1);
    let d = n(config.width);
    let hidden = n((config.width as f64 * config.mlp_ratio).round() as i64);
    let tokens = n((h / p) * (w / p)) + u128::from(config.class_token);
    let layer_parameters =
        2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * hidden + hidden) + (hidden * d + d);
    let t = tokens as f64;
    // Per layer: norm1, qkv, the attention output and its transposed copy, the output
    // map, the residual sum, norm2, fc1, GELU, fc2, the residual sum; and the
    // attention weights (heads × T × T).
    let layer_activations = t * (11.0 * d as f64 + 2.0 * hidden as f64) + n(config.heads) as f64 * t * t;
    let largest = t * (3 * d).max(hidden) as f64;
    let depth = config.depth;
    let step = config.block_size.max(1);
    let blocks = (0..depth)
        .step_by(step)
        .enumerate()
        .map(|(b, start)| {
            let end = (start + step).min(depth);
            let layers = (end - start) as u128;
            let mut block = BlockShape {
                parameters: layers * layer_parameters,
                pooled_dim: d,
                activations: layers as f64 * layer_activations,
                output: t * d as f64,
                largest,
                map: None,
                layers: vec![
                    Layer::Transformer {
                        width: config.width,
                        heads: config.heads,
                        mlp_ratio: config.mlp_ratio,
                        tokens: tokens as i64,
                        dropout: config.dropout,
                    };
                    end - start
                ],
            };
            if b == 0 {
                let patch = n(c) * n(p) * n(p) * d + d;
                let class_token = if config.class_token { d } else { 0 };
                block.parameters += patch + tokens * d + class_token;
                // The patch tokens and their sum with the position embeddings.
                block.activations += 2.0 * t * d as f64;
                if config.patch_embed == PatchEmbed::Linear {
                    block.activations += (n(c) * n(h) * n(w)) as f64;
                }
            }
            if end == depth {
                block.parameters += 2 * d;
                block.activations += t * d as f64;
            }
            block
        })
        .collect();
    let grid = n(config.pool_grid);
    NetworkShape {
        blocks,
        input_dim: n(c) * grid * grid,
        input: (n(c) * n(h) * n(w)) as f64,
    }
}

/// The blocks of the network `config` describes, for inputs of `input` shape (`None`
/// for an unknown model kind).
pub fn network(config: &ModelConfig, input: InputShape) -> Option<NetworkShape> {
    Some(match config {
        ModelConfig::Mlp(c) => mlp(c, input),
        ModelConfig::Cnn(c) => cnn(c, input),
        ModelConfig::Resnet(c) => resnet(c, input),
        ModelConfig::Vit(c) => vit(c, input),
    })
}
