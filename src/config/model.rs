//! The `[model]` section.

use serde::{Deserialize, Serialize};

/// Activation function of a layer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// Gaussian error linear unit.
    Gelu,
}

/// Normalisation layer after each linear map.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// No normalisation.
    None,
    /// LayerNorm over features.
    Layer,
    /// BatchNorm over the batch.
    Batch,
}

/// How the scales γ of the network's batch-norm layers start.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NormInit {
    /// U(0, 1): tch's default, what every run before this setting used.
    Uniform,
    /// 1: PyTorch's default.
    Ones,
}

/// Input stem of a ResNet.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// conv 3×3, stride 1 (32×32 inputs).
    Cifar,
    /// conv 7×7 stride 2, then max-pool 3×3 stride 2 (ImageNet-sized inputs).
    Imagenet,
}

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
    /// Mean over tokens.
    Mean,
    /// The class token.
    Cls,
}

/// Model section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model family (`mlp`, `cnn`).
    pub kind: String,
    /// MLP: width of each hidden layer, input to output.
    pub hidden: Vec<i64>,
    /// CNN: output channels of each 3×3 conv stage, input to output; ResNet: the width
    /// of each stage.
    pub channels: Vec<i64>,
    /// ResNet: residual blocks per stage (ResNet-20: [3, 3, 3]; ResNet-18: [2, 2, 2, 2]).
    pub stages: Vec<usize>,
    /// ResNet: the input stem, `cifar` (conv 3×3) or `imagenet` (conv 7×7 stride 2,
    /// max-pool).
    pub stem: Stem,
    /// CNN: the (1-based) conv stages followed by a 2×2 max-pool.
    pub pool_after: Vec<usize>,
    /// CNN/ResNet: feature maps are average-pooled to this k×k grid for heads and projections.
    pub pool_grid: i64,
    /// CNN/ResNet: keep activations and conv weights channels-last (faster convolutions on CPU).
    pub channels_last: bool,
    /// ViT: side of the square patches.
    pub patch_size: i64,
    /// ViT: patch embedding, `conv` (kernel = stride = patch) or `linear` (on flattened patches).
    pub patch_embed: PatchEmbed,
    /// ViT: token width.
    pub width: i64,
    /// ViT: number of transformer blocks.
    pub depth: usize,
    /// ViT: attention heads (must divide `width`).
    pub heads: i64,
    /// ViT: hidden width of the MLP as a multiple of `width`.
    pub mlp_ratio: f64,
    /// ViT: dropout after attention, in the MLP, and on attention weights (0 = off).
    pub dropout: f64,
    /// ViT: prepend a learned class token.
    pub class_token: bool,
    /// ViT: pooling of tokens for heads and projections, `mean` or `cls` (needs `class_token`).
    pub token_pool: TokenPool,
    /// Activation after each layer.
    pub activation: Activation,
    /// Normalisation after each linear map.
    pub norm: Norm,
    /// Initial scales γ of the network's batch-norm layers: `uniform` (U(0, 1), tch's
    /// default) or `ones` (PyTorch's). Auxiliary heads keep `uniform`.
    pub norm_init: NormInit,
    /// Layers (MLP), conv stages (CNN) or residual blocks (ResNet) grouped into one
    /// block (one local objective per block).
    pub block_size: usize,
    /// ResNet: split the network's units (the stem and every residual block) into this
    /// many contiguous modules of near-equal unit counts, as InfoPro does (ResNet-32:
    /// 16 units; K = 16 gives the stem a module of its own); 0 = group by `block_size`.
    pub modules: usize,
}

impl ModelConfig {
    /// A short description of the architecture, e.g. `mlp 1024-1024-1024` or
    /// `cnn 64-128-256 (max-pool after 2,3)`, followed by the grouping into blocks.
    pub fn describe(&self) -> String {
        let join = |v: Vec<String>, sep: &str| v.join(sep);
        let layers = match self.kind.as_str() {
            "cnn" => format!(
                "cnn {} (max-pool after {})",
                join(self.channels.iter().map(|c| c.to_string()).collect(), "-"),
                join(self.pool_after.iter().map(|c| c.to_string()).collect(), ",")
            ),
            "vit" => format!(
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
            ),
            "resnet" => format!(
                "resnet {} blocks of widths {} ({} stem)",
                join(self.stages.iter().map(|c| c.to_string()).collect(), "-"),
                join(self.channels.iter().map(|c| c.to_string()).collect(), "-"),
                match self.stem {
                    Stem::Cifar => "cifar",
                    Stem::Imagenet => "imagenet",
                }
            ),
            kind => format!(
                "{kind} {}",
                join(self.hidden.iter().map(|c| c.to_string()).collect(), "-")
            ),
        };
        if self.kind == "resnet" && self.modules > 0 {
            return format!("{layers}, {} modules", self.modules);
        }
        format!("{layers}, {} per block", self.block_size)
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            kind: "mlp".into(),
            hidden: vec![1024, 1024, 1024],
            channels: vec![64, 128, 256],
            stages: vec![3, 3, 3],
            stem: Stem::Cifar,
            pool_after: vec![2, 3],
            pool_grid: 2,
            channels_last: true,
            patch_size: 4,
            patch_embed: PatchEmbed::Conv,
            width: 192,
            depth: 6,
            heads: 3,
            mlp_ratio: 2.0,
            dropout: 0.0,
            class_token: false,
            token_pool: TokenPool::Mean,
            activation: Activation::Relu,
            norm: Norm::None,
            norm_init: NormInit::Uniform,
            block_size: 1,
            modules: 0,
        }
    }
}
