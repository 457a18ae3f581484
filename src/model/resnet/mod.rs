//! Residual networks (He et al. 2016) from basic blocks: x ↦ ReLU(F(x) + S(x)) with
//! F = conv 3×3 → BN → ReLU → conv 3×3 → BN and S the identity, or a strided 1×1
//! conv → BN where the width or resolution changes.
//!
//! `model.stages` lists the residual blocks per stage and `model.channels` their widths;
//! every stage after the first halves the resolution in its first residual block:
//! - CIFAR ResNet-20: `stages = [3, 3, 3]`, `channels = [16, 32, 64]`, `stem = "cifar"`;
//! - CIFAR ResNet-32: `stages = [5, 5, 5]`, `channels = [16, 32, 64]`, `stem = "cifar"`;
//! - ResNet-18: `stages = [2, 2, 2, 2]`, `channels = [64, 128, 256, 512]`
//!   (`stem = "imagenet"` for ImageNet-sized inputs, `"cifar"` for 32×32).
//!
//! One SLL block is `block_size` consecutive residual blocks; the stem belongs to the
//! first. Each block's output is average-pooled to a `pool_grid`×`pool_grid` grid for
//! its local head and its projection.

use super::cnn::{channels_last_layout, conv, ConvShape};
use super::kind::{ensure, join, validate_block_size, validate_conv, ModelKind, Norm, NormInit, MAX_LAYERS};
use super::{Block, InputShape, Network, Pooling};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

/// Input stem of a ResNet.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// conv 3×3, stride 1 (32×32 inputs).
    Cifar,
    /// conv 7×7 stride 2, then max-pool 3×3 stride 2 (ImageNet-sized inputs).
    Imagenet,
}

/// `[model]` with `kind = "resnet"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ResnetConfig {
    /// Residual blocks per stage (ResNet-20: [3, 3, 3]; ResNet-18: [2, 2, 2, 2]).
    pub stages: Vec<usize>,
    /// The width of each stage.
    pub channels: Vec<i64>,
    /// The input stem, `cifar` (conv 3×3) or `imagenet` (conv 7×7 stride 2, max-pool).
    pub stem: Stem,
    /// Feature maps are average-pooled to this k×k grid for heads and projections.
    pub pool_grid: i64,
    /// Keep activations and conv weights channels-last (faster convolutions on CPU).
    pub channels_last: bool,
    /// Normalisation after each conv: `none` or `batch`.
    pub norm: Norm,
    /// Initial scales γ of batch norms: `uniform` (U(0, 1), tch's default) or `ones`
    /// (PyTorch's). Auxiliary heads keep `uniform`.
    pub norm_init: NormInit,
    /// Residual blocks per block (one local objective per block).
    pub block_size: usize,
    /// Split the network's units (the stem and every residual block) into this many
    /// contiguous modules of near-equal unit counts, as InfoPro does (ResNet-32: 16
    /// units; K = 16 gives the stem a module of its own); 0 = group by `block_size`.
    pub modules: usize,
}

impl Default for ResnetConfig {
    fn default() -> Self {
        Self {
            stages: vec![3, 3, 3],
            channels: vec![64, 128, 256],
            stem: Stem::Cifar,
            pool_grid: 2,
            channels_last: true,
            norm: Norm::None,
            norm_init: NormInit::Uniform,
            block_size: 1,
            modules: 0,
        }
    }
}

impl ModelKind for ResnetConfig {
    fn name(&self) -> &'static str {
        "resnet"
    }

    fn validate(&self, side: usize, _crop: usize) -> Result<()> {
        ensure(
            !self.stages.is_empty() && self.stages.iter().all(|n| *n > 0),
            "model.stages",
            || "must be a non-empty list of positive block counts".into(),
        )?;
        ensure(self.stages.len() == self.channels.len(), "model.channels", || {
            format!(
                "must give one width per ResNet stage ({} stages in model.stages, {} widths)",
                self.stages.len(),
                self.channels.len()
            )
        })?;
        validate_conv("resnet", &self.channels, self.norm, self.pool_grid, side)?;
        let residual = self.stages.iter().fold(0usize, |a, &s| a.saturating_add(s));
        ensure(residual <= MAX_LAYERS, "model.stages", || {
            format!("holds {residual} residual blocks; at most {MAX_LAYERS}")
        })?;
        validate_block_size(self.block_size, residual, "residual blocks")?;
        ensure(self.modules <= residual + 1, "model.modules", || {
            format!(
                "= {} exceeds the model's {} units (the stem and {residual} residual blocks)",
                self.modules,
                residual + 1
            )
        })
    }

    fn build(&self, input: InputShape, device: Device) -> Result<Network> {
        Ok(build(self, input, device))
    }

    fn layers(&self) -> String {
        format!(
            "resnet {} blocks of widths {} ({} stem)",
            join(&self.stages, "-"),
            join(&self.channels, "-"),
            match self.stem {
                Stem::Cifar => "cifar",
                Stem::Imagenet => "imagenet",
            }
        )
    }

    fn grouping(&self) -> String {
        if self.modules > 0 {
            format!("{} modules", self.modules)
        } else {
            format!("{} per block", self.block_size)
        }
    }

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn first_error(&self, table: toml::Value) -> Option<(String, String)> {
        super::kind::first_error::<Self>(table)
    }
}

/// A convolution followed by batch norm (when the network has it).
#[derive(Debug)]
struct ConvNorm {
    conv: nn::Conv2D,
    norm: Option<nn::BatchNorm>,
}

impl ConvNorm {
    /// Convs feeding a batch norm have no bias (the norm's shift replaces it).
    fn new(path: nn::Path, shape: ConvShape, config: &ResnetConfig) -> Self {
        let batch_norm = config.norm == Norm::Batch;
        Self {
            conv: conv(&path / "conv", shape, !batch_norm, config.channels_last),
            norm: batch_norm.then(|| {
                nn::batch_norm2d(
                    &path / "norm",
                    shape.c_out,
                    super::batch_norm_config(config.norm_init),
                )
            }),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = xs.apply(&self.conv);
        match &self.norm {
            Some(bn) => h.apply_t(bn, train),
            None => h,
        }
    }
}

/// The input stem: conv 3×3 → BN → ReLU (`cifar`), or conv 7×7 stride 2 → BN → ReLU →
/// max-pool 3×3 stride 2 (`imagenet`).
#[derive(Debug)]
struct StemLayer {
    layer: ConvNorm,
    max_pool: bool,
}

impl StemLayer {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = self.layer.forward_t(xs, train).relu();
        if self.max_pool {
            h.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
        } else {
            h
        }
    }
}

/// One basic residual block: ReLU(F(x) + S(x)).
#[derive(Debug)]
struct BasicBlock {
    first: ConvNorm,
    second: ConvNorm,
    /// `None` = identity shortcut.
    shortcut: Option<ConvNorm>,
}

impl BasicBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = self.first.forward_t(xs, train).relu();
        let h = self.second.forward_t(&h, train);
        let s = match &self.shortcut {
            Some(s) => s.forward_t(xs, train),
            None => xs.shallow_clone(),
        };
        (h + s).relu()
    }
}

/// One SLL block of a ResNet: (the stem, for the first) and `block_size` residual blocks.
#[derive(Debug)]
pub struct ResidualBlock {
    stem: Option<StemLayer>,
    residual: Vec<BasicBlock>,
    channels: i64,
    grid: i64,
    channels_last: bool,
    flops: (f64, f64),
}

impl Block for ResidualBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = if self.channels_last {
            channels_last_layout(xs)
        } else {
            xs.shallow_clone()
        };
        if let Some(stem) = &self.stem {
            h = stem.forward_t(&h, train);
        }
        self.residual.iter().fold(h, |h, b| b.forward_t(&h, train))
    }

    fn pooling(&self) -> Pooling {
        Pooling::Grid(self.grid)
    }

    fn pooled_dim(&self) -> i64 {
        self.channels * self.grid * self.grid
    }

    fn forward_flops(&self) -> (f64, f64) {
        self.flops
    }

    fn layers(&self) -> Vec<super::Layer> {
        let stem = self.stem.as_ref().map(|s| super::Layer::Conv {
            channels: s.layer.conv.ws.size()[0],
        });
        stem.into_iter()
            .chain(self.residual.iter().map(|b| super::Layer::Residual {
                channels: b.second.conv.ws.size()[0],
            }))
            .collect()
    }
}

/// One module of the network: whether it holds the stem, and the range of residual
/// blocks (0-based, input to output) it holds.
pub type UnitGroup = (bool, std::ops::Range<usize>);

/// How the stem and the `residual` blocks are grouped into modules: with
/// `model.modules = K > 0`, the 1 + `residual` units split into K contiguous groups of
/// near-equal size (module g holds units ⌊g·U/K⌋ … ⌊(g+1)·U/K⌋ − 1, unit 0 the stem);
/// otherwise `block_size` residual blocks per module, the stem with the first.
pub fn unit_groups(config: &ResnetConfig, residual: usize) -> Vec<UnitGroup> {
    if config.modules > 0 {
        let units = residual + 1;
        let k = config.modules.min(units);
        (0..k)
            .map(|g| {
                let (start, end) = (g * units / k, (g + 1) * units / k);
                (start == 0, start.saturating_sub(1)..end - 1)
            })
            .collect()
    } else {
        let size = config.block_size.max(1);
        (0..residual.div_ceil(size))
            .map(|b| (b == 0, b * size..((b + 1) * size).min(residual)))
            .collect()
    }
}

/// Spatial size after a conv of `kernel` (padding kernel/2) with `stride`.
fn conv_out(size: i64, kernel: i64, stride: i64) -> i64 {
    (size + 2 * (kernel / 2) - kernel) / stride + 1
}

impl ResnetConfig {
    /// (width, stride) of every residual block, input to output: each stage after the
    /// first halves the resolution in its first block.
    pub fn plan(&self) -> Vec<(i64, i64)> {
        self.stages
            .iter()
            .zip(&self.channels)
            .enumerate()
            .flat_map(|(s, (&n, &c))| (0..n).map(move |r| (c, if s > 0 && r == 0 { 2 } else { 1 })))
            .collect()
    }
}

/// Builds the ResNet of `config` for inputs of `input` shape.
pub fn build(config: &ResnetConfig, input: InputShape, device: Device) -> Network {
    let [c_in, mut height, mut width] = input;
    let plan = config.plan();
    let mut blocks: Vec<Box<dyn Block>> = vec![];
    let mut stores = vec![];
    let mut channels = c_in;
    for (b, (with_stem, range)) in unit_groups(config, plan.len()).into_iter().enumerate() {
        let chunk = &plan[range];
        let store = nn::VarStore::new(device);
        let path = Network::block_path(&store, b);
        let mut flops = 0.0;
        let mut first_flops = None;
        let mut count = |f: f64, first: bool| {
            flops += f;
            if first && first_flops.is_none() {
                first_flops = Some(f);
            }
        };
        let stem = with_stem.then(|| {
            let (kernel, stride, max_pool) = match config.stem {
                Stem::Cifar => (3, 1, false),
                Stem::Imagenet => (7, 2, true),
            };
            let shape = ConvShape {
                c_in: channels,
                c_out: config.channels[0],
                kernel,
                stride,
            };
            (height, width) = (conv_out(height, kernel, stride), conv_out(width, kernel, stride));
            count(shape.flops(height, width), true);
            if max_pool {
                (height, width) = (conv_out(height, 3, 2), conv_out(width, 3, 2));
            }
            channels = config.channels[0];
            StemLayer {
                layer: ConvNorm::new(&path / "stem", shape, config),
                max_pool,
            }
        });
        let mut residual = vec![];
        for (r, &(c_out, stride)) in chunk.iter().enumerate() {
            let rpath = &path / format!("residual{}", r + 1);
            let shape = |c_in, c_out, kernel, stride| ConvShape {
                c_in,
                c_out,
                kernel,
                stride,
            };
            let first = shape(channels, c_out, 3, stride);
            let second = shape(c_out, c_out, 3, 1);
            let projection = (stride != 1 || channels != c_out).then(|| shape(channels, c_out, 1, stride));
            (height, width) = (conv_out(height, 3, stride), conv_out(width, 3, stride));
            count(first.flops(height, width), true);
            count(second.flops(height, width), false);
            if let Some(p) = projection {
                count(p.flops(height, width), false);
            }
            residual.push(BasicBlock {
                first: ConvNorm::new(&rpath / "conv1", first, config),
                second: ConvNorm::new(&rpath / "conv2", second, config),
                shortcut: projection.map(|p| ConvNorm::new(&rpath / "shortcut", p, config)),
            });
            channels = c_out;
        }
        let first_flops = first_flops.unwrap_or(0.0);
        blocks.push(Box::new(ResidualBlock {
            stem,
            residual,
            channels,
            grid: config.pool_grid,
            channels_last: config.channels_last,
            flops: (flops, first_flops),
        }));
        stores.push(store);
    }
    Network {
        blocks,
        stores,
        input_pooling: Pooling::Grid(config.pool_grid),
        input_dim: c_in * config.pool_grid * config.pool_grid,
    }
}

#[cfg(test)]
mod tests;
