//! Convolutional networks, VGG style: each conv stage is conv 3×3 → (BatchNorm) →
//! ReLU → (2×2 max-pool); `block_size` consecutive stages form one block. A block's
//! feature map is average-pooled to a `pool_grid`×`pool_grid` grid and flattened for
//! its local head and its projection.

use super::kind::{ensure, join, validate_block_size, validate_conv, ModelKind, Norm, NormInit};
use super::{Block, InputShape, Network, Pooling};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Tensor};

/// `[model]` with `kind = "cnn"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CnnConfig {
    /// Output channels of each 3×3 conv stage, input to output.
    pub channels: Vec<i64>,
    /// The (1-based) conv stages followed by a 2×2 max-pool.
    pub pool_after: Vec<usize>,
    /// Feature maps are average-pooled to this k×k grid for heads and projections.
    pub pool_grid: i64,
    /// Keep activations and conv weights channels-last (faster convolutions on CPU).
    pub channels_last: bool,
    /// Normalisation after each conv: `none` or `batch`.
    pub norm: Norm,
    /// Initial scales γ of batch norms: `uniform` (U(0, 1), tch's default) or `ones`
    /// (PyTorch's). Auxiliary heads keep `uniform`.
    pub norm_init: NormInit,
    /// Conv stages per block (one local objective per block).
    pub block_size: usize,
}

impl Default for CnnConfig {
    fn default() -> Self {
        Self {
            channels: vec![64, 128, 256],
            pool_after: vec![2, 3],
            pool_grid: 2,
            channels_last: true,
            norm: Norm::None,
            norm_init: NormInit::Uniform,
            block_size: 1,
        }
    }
}

impl ModelKind for CnnConfig {
    fn name(&self) -> &'static str {
        "cnn"
    }

    fn validate(&self, side: usize, crop: usize) -> Result<()> {
        validate_conv("cnn", &self.channels, self.norm, self.pool_grid, side)?;
        let stages = self.channels.len();
        ensure(
            self.pool_after.iter().all(|s| (1..=stages).contains(s)),
            "model.pool_after",
            || format!("entries must be conv stages, 1..={stages} (1-based)"),
        )?;
        let smallest = side.min(crop);
        let mut pools = self.pool_after.clone();
        pools.sort_unstable();
        pools.dedup();
        let left = smallest.checked_shr(pools.len() as u32).unwrap_or(0);
        ensure(left >= 1, "model.pool_after", || {
            format!(
                "halves the {smallest}x{smallest} inputs {} times, to nothing; at most {} max-pools fit",
                pools.len(),
                smallest.ilog2()
            )
        })?;
        validate_block_size(self.block_size, stages, "conv stages")
    }

    fn build(&self, input: InputShape, device: Device) -> Result<Network> {
        Ok(build(self, input, device))
    }

    fn layers(&self) -> String {
        format!(
            "cnn {} (max-pool after {})",
            join(&self.channels, "-"),
            join(&self.pool_after, ",")
        )
    }

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn first_error(&self, table: toml::Value) -> Option<(String, String)> {
        super::kind::first_error::<Self>(table)
    }
}

/// A k×k convolution (padding k/2) initialised as PyTorch's `nn.Conv2d`:
/// U(−1/√fan_in, 1/√fan_in) for weights (and biases if any), fan_in = c_in·k².
/// With `channels_last` the weight is stored NHWC-strided, which oneDNN runs faster.
pub(crate) fn conv(path: nn::Path, shape: ConvShape, bias: bool, channels_last: bool) -> nn::Conv2D {
    let ConvShape {
        c_in,
        c_out,
        kernel,
        stride,
    } = shape;
    let bound = 1.0 / ((c_in * kernel * kernel) as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let config = nn::ConvConfig {
        stride,
        padding: kernel / 2,
        bias,
        ws_init: init,
        bs_init: init,
        ..Default::default()
    };
    let mut conv = nn::conv2d(path, c_in, c_out, kernel, config);
    if channels_last {
        // Changes the layout of the var store's own weight tensor, in place.
        let weight = channels_last_layout(&conv.ws);
        conv.ws.set_data(&weight);
    }
    conv
}

/// Geometry of one convolution.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvShape {
    pub(crate) c_in: i64,
    pub(crate) c_out: i64,
    pub(crate) kernel: i64,
    pub(crate) stride: i64,
}

impl ConvShape {
    /// Forward FLOPs per example (2 per multiply-add) on an output map of `height`×`width`.
    pub(crate) fn flops(&self, height: i64, width: i64) -> f64 {
        2.0 * (self.c_in * self.kernel * self.kernel * self.c_out * height * width) as f64
    }
}

/// One conv → (norm) → ReLU → (max-pool) stage (computed as conv → (norm) →
/// (max-pool) → ReLU, which is the same function).
#[derive(Debug)]
struct Stage {
    conv: nn::Conv2D,
    batch_norm: Option<nn::BatchNorm>,
    max_pool: bool,
    /// Forward FLOPs per example: 2·c_in·9·c_out·H·W.
    flops: f64,
}

impl Stage {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = xs.apply(&self.conv);
        if let Some(bn) = &self.batch_norm {
            h = h.apply_t(bn, train);
        }
        // max-pool(ReLU(h)) = ReLU(max-pool(h)), the same values and gradients (ReLU
        // keeps the order and the argmax): pooling first runs ReLU and its backward on
        // a quarter of the values.
        if self.max_pool {
            h = h.max_pool2d_default(2);
        }
        h.relu()
    }
}

/// The same values laid out channels-last (NHWC strides, NCHW shape), which oneDNN's
/// convolutions run faster on (docs/performance.md); a no-op if already so.
pub fn channels_last_layout(t: &Tensor) -> Tensor {
    let nhwc = t.permute([0, 2, 3, 1]);
    if nhwc.is_contiguous() {
        t.shallow_clone()
    } else {
        nhwc.contiguous().permute([0, 3, 1, 2])
    }
}

/// A block of consecutive conv stages.
#[derive(Debug)]
pub struct ConvBlock {
    stages: Vec<Stage>,
    channels: i64,
    grid: i64,
    channels_last: bool,
}

impl Block for ConvBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = if self.channels_last {
            channels_last_layout(xs)
        } else {
            xs.shallow_clone()
        };
        self.stages.iter().fold(xs, |h, s| s.forward_t(&h, train))
    }

    fn pooling(&self) -> Pooling {
        Pooling::Grid(self.grid)
    }

    fn pooled_dim(&self) -> i64 {
        self.channels * self.grid * self.grid
    }

    fn forward_flops(&self) -> (f64, f64) {
        (self.stages.iter().map(|s| s.flops).sum(), self.stages[0].flops)
    }

    fn layers(&self) -> Vec<super::Layer> {
        self.stages
            .iter()
            .map(|s| super::Layer::Conv {
                channels: s.conv.ws.size()[0],
            })
            .collect()
    }
}

/// Builds the CNN of `config`: conv widths `channels`, max-pool after the stages listed
/// in `pool_after` (1-based), `block_size` stages per block.
pub fn build(config: &CnnConfig, input: InputShape, device: Device) -> Network {
    let grid = config.pool_grid;
    let mut blocks: Vec<Box<dyn Block>> = vec![];
    let mut stores = vec![];
    let [mut c_in, mut height, mut width] = input;
    let numbered: Vec<(usize, i64)> = config.channels.iter().copied().enumerate().collect();
    for (b, chunk) in numbered.chunks(config.block_size).enumerate() {
        let store = nn::VarStore::new(device);
        let path = Network::block_path(&store, b);
        let mut stages = vec![];
        for (s, &(index, c_out)) in chunk.iter().enumerate() {
            let stage_path = &path / format!("stage{}", s + 1);
            let batch_norm = (config.norm == Norm::Batch).then(|| {
                nn::batch_norm2d(
                    &stage_path / "norm",
                    c_out,
                    super::batch_norm_config(config.norm_init),
                )
            });
            let shape = ConvShape {
                c_in,
                c_out,
                kernel: 3,
                stride: 1,
            };
            let conv = conv(&stage_path / "conv", shape, true, config.channels_last);
            let flops = shape.flops(height, width);
            let max_pool = config.pool_after.contains(&(index + 1));
            stages.push(Stage {
                conv,
                batch_norm,
                max_pool,
                flops,
            });
            c_in = c_out;
            if max_pool {
                (height, width) = (height / 2, width / 2);
            }
        }
        let channels_last = config.channels_last;
        blocks.push(Box::new(ConvBlock {
            stages,
            channels: c_in,
            grid,
            channels_last,
        }));
        stores.push(store);
    }
    Network {
        blocks,
        stores,
        input_pooling: Pooling::Grid(grid),
        input_dim: input[0] * grid * grid,
    }
}
