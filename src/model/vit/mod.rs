//! Vision Transformers (Dosovitskiy et al. 2021): the image cut into `patch_size`²
//! patches, each embedded to `width` (a strided conv, or a linear map of the flattened
//! patch), learned position embeddings, an optional class token, then `depth` pre-norm
//! transformer blocks
//!
//!   x ← x + MHSA(LN(x)),   x ← x + MLP(LN(x)),   MLP = Linear → GELU → Linear,
//!
//! and a final LayerNorm. One SLL block is `block_size` transformer blocks; the patch
//! embedding trains with the first, the final LayerNorm with the last, whose local head
//! is then the network's "final LayerNorm + linear classifier". Tokens are pooled for
//! the heads and projections by their mean or by the class token (`token_pool`).
//!
//! Attention is computed in fp32 by libtorch's fused `scaled_dot_product_attention`
//! (the softmax is taken stably, max subtracted); [`attention_reference`] is the naive
//! formula it is tested against.

use super::kind::{
    ensure, validate_block_size, validate_pool_grid, ModelKind, MAX_CHANNELS, MAX_LAYERS, MAX_MLP_RATIO,
};
use super::{linear, Block, InputShape, Layer, Network, Pooling};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// How a ViT turns patches into tokens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PatchEmbed {
    /// A conv with kernel = stride = patch size.
    Conv,
    /// A linear map of each flattened patch (the same function, another layout).
    Linear,
}

/// How a ViT block's tokens are pooled into u_i.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenPool {
    /// The mean over tokens.
    Mean,
    /// The class token.
    Cls,
}

/// `[model]` with `kind = "vit"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VitConfig {
    /// Side of the square patches.
    pub patch_size: i64,
    /// Patch embedding, `conv` (kernel = stride = patch) or `linear` (on flattened patches).
    pub patch_embed: PatchEmbed,
    /// Token width.
    pub width: i64,
    /// Number of transformer blocks.
    pub depth: usize,
    /// Attention heads (must divide `width`).
    pub heads: i64,
    /// Hidden width of the MLP as a multiple of `width`.
    pub mlp_ratio: f64,
    /// Dropout after attention, in the MLP, and on attention weights (0 = off).
    pub dropout: f64,
    /// Prepend a learned class token.
    pub class_token: bool,
    /// Pooling of tokens for heads and projections, `mean` or `cls` (needs `class_token`).
    pub token_pool: TokenPool,
    /// The input is average-pooled to this k×k grid for q_0's projection.
    pub pool_grid: i64,
    /// Transformer blocks per block (one local objective per block).
    pub block_size: usize,
}

impl Default for VitConfig {
    fn default() -> Self {
        Self {
            patch_size: 4,
            patch_embed: PatchEmbed::Conv,
            width: 192,
            depth: 6,
            heads: 3,
            mlp_ratio: 2.0,
            dropout: 0.0,
            class_token: false,
            token_pool: TokenPool::Mean,
            pool_grid: 2,
            block_size: 1,
        }
    }
}

impl ModelKind for VitConfig {
    fn name(&self) -> &'static str {
        "vit"
    }

    fn validate(&self, side: usize, _crop: usize) -> Result<()> {
        ensure(
            self.width > 0 && self.heads > 0 && self.width % self.heads == 0,
            "model.heads",
            || {
                format!(
                    "must divide model.width ({} heads, width {})",
                    self.heads, self.width
                )
            },
        )?;
        ensure(
            self.depth > 0 && self.patch_size > 0 && self.mlp_ratio > 0.0,
            "model.depth",
            || "model.depth, model.patch_size and model.mlp_ratio must be > 0".into(),
        )?;
        ensure(
            self.token_pool != TokenPool::Cls || self.class_token,
            "model.token_pool",
            || "= \"cls\" needs model.class_token = true".into(),
        )?;
        ensure((0.0..1.0).contains(&self.dropout), "model.dropout", || {
            "must be in [0, 1)".into()
        })?;
        validate_pool_grid(self.pool_grid, side)?;
        ensure(self.width <= MAX_CHANNELS, "model.width", || {
            format!("= {} must be at most {MAX_CHANNELS}", self.width)
        })?;
        ensure(self.depth <= MAX_LAYERS, "model.depth", || {
            format!("= {} must be at most {MAX_LAYERS}", self.depth)
        })?;
        ensure(
            self.mlp_ratio.is_finite()
                && self.mlp_ratio <= MAX_MLP_RATIO
                && (self.width as f64 * self.mlp_ratio).round() >= 1.0,
            "model.mlp_ratio",
            || {
                format!(
                    "= {} must be a finite number in (0, {MAX_MLP_RATIO}] giving the MLP at least one unit",
                    self.mlp_ratio
                )
            },
        )?;
        let patch = self.patch_size as u64;
        ensure(
            patch <= side as u64 && (side as u64).is_multiple_of(patch),
            "model.patch_size",
            || format!("= {} does not divide the {side}x{side} images", self.patch_size),
        )?;
        validate_block_size(self.block_size, self.depth, "transformer blocks")
    }

    fn build(&self, input: InputShape, device: Device) -> Result<Network> {
        build(self, input, device)
    }

    fn layers(&self) -> String {
        format!(
            "vit patch {} width {} depth {} heads {} mlp {}x ({} pooling)",
            self.patch_size,
            self.width,
            self.depth,
            self.heads,
            self.mlp_ratio,
            match self.token_pool {
                TokenPool::Mean => "mean",
                TokenPool::Cls => "class-token",
            }
        )
    }

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn first_error(&self, table: toml::Value) -> Option<(String, String)> {
        super::kind::first_error::<Self>(table)
    }

    fn fixed_input_size(&self) -> bool {
        true
    }
}

/// softmax(q kᵀ / √d) v, written out: the reference the fused kernel is tested against.
pub fn attention_reference(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let d = *q.size().last().expect("q has a last dimension") as f64;
    let scores = q.matmul(&k.transpose(-2, -1)) / d.sqrt();
    scores.softmax(-1, Kind::Float).matmul(v)
}

/// Multi-head self-attention: qkv = x W_qkv, per head softmax(q kᵀ/√d_h) v, out = concat W_o.
#[derive(Debug)]
struct SelfAttention {
    qkv: nn::Linear,
    out: nn::Linear,
    heads: i64,
    dropout: f64,
}

impl SelfAttention {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let (n, t, d) = xs.size3().expect("tokens are [N, T, D]");
        let qkv = xs
            .apply(&self.qkv)
            .reshape([n, t, 3, self.heads, d / self.heads])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let p = if train { self.dropout } else { 0.0 };
        let kind = q.kind();
        let attended = Tensor::scaled_dot_product_attention::<Tensor>(
            &q.to_kind(Kind::Float),
            &k.to_kind(Kind::Float),
            &v.to_kind(Kind::Float),
            None,
            p,
            false,
            None,
            false,
        )
        .to_kind(kind);
        attended.transpose(1, 2).reshape([n, t, d]).apply(&self.out)
    }
}

/// One pre-norm transformer block.
#[derive(Debug)]
pub(crate) struct TransformerLayer {
    norm1: nn::LayerNorm,
    attention: SelfAttention,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    dropout: f64,
    width: i64,
    mlp_ratio: f64,
}

impl TransformerLayer {
    pub(crate) fn new(path: nn::Path, width: i64, heads: i64, mlp_ratio: f64, dropout: f64) -> Self {
        let hidden = (width as f64 * mlp_ratio).round() as i64;
        Self {
            norm1: nn::layer_norm(&path / "norm1", vec![width], Default::default()),
            attention: SelfAttention {
                qkv: linear(&path / "attention" / "qkv", width, 3 * width),
                out: linear(&path / "attention" / "out", width, width),
                heads,
                dropout,
            },
            norm2: nn::layer_norm(&path / "norm2", vec![width], Default::default()),
            fc1: linear(&path / "mlp" / "fc1", width, hidden),
            fc2: linear(&path / "mlp" / "fc2", hidden, width),
            dropout,
            width,
            mlp_ratio,
        }
    }

    /// The layer as [`Layer::Transformer`] on `tokens` tokens.
    fn describe(&self, tokens: i64) -> Layer {
        Layer::Transformer {
            width: self.width,
            heads: self.attention.heads,
            mlp_ratio: self.mlp_ratio,
            tokens,
            dropout: self.dropout,
        }
    }

    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let a = self.attention.forward_t(&self.norm1.forward(xs), train);
        let xs = xs + a.dropout(self.dropout, train);
        let m = self
            .norm2
            .forward(&xs)
            .apply(&self.fc1)
            .gelu("none")
            .dropout(self.dropout, train)
            .apply(&self.fc2)
            .dropout(self.dropout, train);
        xs + m
    }

    /// Forward FLOPs per example on `t` tokens of `width`.
    pub(crate) fn flops(t: i64, width: i64, mlp_ratio: f64) -> f64 {
        let (t, d) = (t as f64, width as f64);
        let projections = 2.0 * t * d * (3.0 * d) + 2.0 * t * d * d;
        let attention = 2.0 * 2.0 * t * t * d;
        let mlp = 2.0 * 2.0 * t * d * (d * mlp_ratio).round();
        projections + attention + mlp
    }
}

/// Patches → tokens, position embeddings, class token.
#[derive(Debug)]
struct Embedding {
    patch: PatchProjection,
    position: Tensor,
    class_token: Option<Tensor>,
    patch_size: i64,
}

/// The patch embedding: a conv with kernel = stride = patch size, or the same map as a
/// linear layer on flattened patches.
#[derive(Debug)]
enum PatchProjection {
    Conv(nn::Conv2D),
    Linear(nn::Linear),
}

impl Embedding {
    fn forward(&self, xs: &Tensor) -> Tensor {
        let p = self.patch_size;
        let tokens = match &self.patch {
            // [N, D, H/p, W/p] → [N, T, D]
            PatchProjection::Conv(conv) => xs.apply(conv).flatten(2, 3).transpose(1, 2),
            PatchProjection::Linear(lin) => {
                let (n, c, h, w) = xs.size4().expect("images are [N, C, H, W]");
                xs.reshape([n, c, h / p, p, w / p, p])
                    .permute([0, 2, 4, 1, 3, 5])
                    .reshape([n, (h / p) * (w / p), c * p * p])
                    .apply(lin)
            }
        };
        let tokens = match &self.class_token {
            Some(cls) => {
                let n = tokens.size()[0];
                Tensor::cat(&[cls.expand([n, 1, -1], false), tokens], 1)
            }
            None => tokens,
        };
        tokens + &self.position
    }
}

/// One SLL block of a ViT: (the embedding, for the first), transformer blocks, (the final
/// LayerNorm, for the last).
#[derive(Debug)]
pub struct VitBlock {
    embedding: Option<Embedding>,
    layers: Vec<TransformerLayer>,
    final_norm: Option<nn::LayerNorm>,
    width: i64,
    tokens: i64,
    pool: TokenPool,
    flops: (f64, f64),
}

impl Block for VitBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = match &self.embedding {
            Some(e) => e.forward(xs),
            None => xs.shallow_clone(),
        };
        let h = self.layers.iter().fold(h, |h, l| l.forward_t(&h, train));
        match &self.final_norm {
            Some(norm) => norm.forward(&h),
            None => h,
        }
    }

    fn pooling(&self) -> Pooling {
        match self.pool {
            TokenPool::Mean => Pooling::TokenMean,
            TokenPool::Cls => Pooling::ClassToken,
        }
    }

    fn pooled_dim(&self) -> i64 {
        self.width
    }

    fn forward_flops(&self) -> (f64, f64) {
        self.flops
    }

    fn layers(&self) -> Vec<Layer> {
        self.layers.iter().map(|l| l.describe(self.tokens)).collect()
    }
}

/// Builds the ViT of `config` for inputs of `input` shape; an error if the image does not
/// divide into patches.
pub fn build(config: &VitConfig, input: InputShape, device: Device) -> Result<Network> {
    let [c, h, w] = input;
    let (p, width) = (config.patch_size, config.width);
    if h % p != 0 || w % p != 0 {
        bail!("config key `model.patch_size` = {p} does not divide the {h}×{w} images");
    }
    let tokens = (h / p) * (w / p) + i64::from(config.class_token);
    let layer_flops = TransformerLayer::flops(tokens, width, config.mlp_ratio);
    let depth = config.depth;
    let mut blocks: Vec<Box<dyn Block>> = vec![];
    let mut stores = vec![];
    let starts: Vec<usize> = (0..depth).step_by(config.block_size).collect();
    for (b, &start) in starts.iter().enumerate() {
        let store = nn::VarStore::new(device);
        let path = Network::block_path(&store, b);
        let end = (start + config.block_size).min(depth);
        let mut flops = layer_flops * (end - start) as f64;
        let mut first = 2.0 * tokens as f64 * (width * 3 * width) as f64;
        let embedding = (b == 0).then(|| {
            let e = &path / "embedding";
            let patch = match config.patch_embed {
                PatchEmbed::Conv => PatchProjection::Conv(nn::conv2d(
                    &e / "patch",
                    c,
                    width,
                    p,
                    nn::ConvConfig {
                        stride: p,
                        ..Default::default()
                    },
                )),
                PatchEmbed::Linear => PatchProjection::Linear(linear(&e / "patch", c * p * p, width)),
            };
            let init = nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            };
            first = 2.0 * ((h / p) * (w / p) * c * p * p * width) as f64;
            flops += first;
            Embedding {
                patch,
                position: e.var("position", &[1, tokens, width], init),
                class_token: config
                    .class_token
                    .then(|| e.var("class_token", &[1, 1, width], nn::Init::Const(0.0))),
                patch_size: p,
            }
        });
        let layers = (start..end)
            .map(|i| {
                TransformerLayer::new(
                    &path / format!("layer{}", i - start + 1),
                    width,
                    config.heads,
                    config.mlp_ratio,
                    config.dropout,
                )
            })
            .collect();
        let final_norm =
            (end == depth).then(|| nn::layer_norm(&path / "final_norm", vec![width], Default::default()));
        blocks.push(Box::new(VitBlock {
            embedding,
            layers,
            final_norm,
            width,
            tokens,
            pool: config.token_pool,
            flops: (flops, first),
        }));
        stores.push(store);
    }
    Ok(Network {
        blocks,
        stores,
        input_pooling: Pooling::Grid(config.pool_grid),
        input_dim: c * config.pool_grid * config.pool_grid,
    })
}

#[cfg(test)]
mod tests;
