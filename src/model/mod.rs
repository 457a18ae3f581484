//! Networks as sequences of blocks.
//!
//! A [`Block`] is whatever one local objective trains: one Linear+activation layer of
//! an MLP (or `block_size` of them), a conv stage, a residual block, a
//! transformer block. The trainers and the objective only see a block's output and
//! its [`Pooling`]; each block's parameters live in a var store of its own, so a
//! block can have its own optimizer, thread or device.

pub mod builder;
pub mod cnn;
pub mod config;
pub mod kind;
pub mod layer;
pub mod mlp;
pub mod resnet;
pub mod vit;

pub use builder::NetworkBuilder;
pub use cnn::CnnConfig;
pub use config::ModelConfig;
pub use kind::{Activation, ModelKind, Norm, NormInit};
pub use layer::Layer;
pub use mlp::MlpConfig;
pub use resnet::{ResnetConfig, Stem};
pub use vit::{PatchEmbed, TokenPool, VitConfig};

use anyhow::Result;
use tch::{nn, Device, Tensor};

/// How a block's output h_i is reduced to the vector u_i = pool(h_i) that the local
/// head and the projection see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Vectors: u = h, flattened to [N, features].
    Flatten,
    /// Feature maps: adaptive average pooling to a k×k grid, then flattened.
    Grid(i64),
    /// Token sequences [N, T, D]: the mean over tokens.
    TokenMean,
    /// Token sequences [N, T, D]: the first (class) token.
    ClassToken,
}

impl Pooling {
    /// u = pool(h).
    pub fn apply(self, h: &Tensor) -> Tensor {
        match self {
            Pooling::Flatten => h.flatten(1, -1),
            Pooling::Grid(k) => grid_pool(h, [k, k]),
            Pooling::TokenMean => h.mean_dim(1, false, None),
            Pooling::ClassToken => h.select(1, 0),
        }
    }
}

/// Adaptive average pooling of a feature map to a `grid` (rows × columns), flattened
/// (C, then the grid). The flattened features' gradient arrives NCHW-contiguous; given that,
/// libtorch's pooling backward converts a channels-last map's gradient to NCHW and
/// back (two full-size copies, measured in docs/performance.md). An identity view
/// (`as_strided` with the pooled grid's own channels-last strides) in between makes
/// autograd hand the pooling a channels-last gradient, so that its channels-last
/// kernel runs: the same values, without the copies.
pub fn grid_pool(h: &Tensor, grid: [i64; 2]) -> Tensor {
    let pooled = h.adaptive_avg_pool2d(grid);
    let channels_last =
        pooled.dim() == 4 && grid[0] * grid[1] > 1 && pooled.permute([0, 2, 3, 1]).is_contiguous();
    if channels_last && pooled.requires_grad() {
        pooled
            .as_strided(pooled.size(), pooled.stride(), None)
            .flatten(1, -1)
    } else {
        pooled.flatten(1, -1)
    }
}

/// One trainable unit of the network: f_i in h_i = f_i(sg(h_{i-1})).
pub trait Block: std::fmt::Debug + Send {
    /// h_i = f_i(x); `train` switches dropout/batch-norm behaviour.
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor;
    /// How h_i is pooled for the local head and the projection.
    fn pooling(&self) -> Pooling;
    /// dim(u_i), the length of the pooled output.
    fn pooled_dim(&self) -> i64;
    /// Multiply-add FLOPs (2 per multiply-add) of one example's forward pass through
    /// the block's linear maps and convolutions, as `(total, first layer)`: the first
    /// layer's input gradient is skipped in backward when the block input is detached.
    fn forward_flops(&self) -> (f64, f64);
    /// The block's layers, input to output (what AugLocal's auxiliary nets copy);
    /// empty for a block that does not describe itself.
    fn layers(&self) -> Vec<Layer> {
        vec![]
    }
}

/// The batch-norm settings of the network's layers: scales γ from `init` (tch's U(0, 1)
/// or PyTorch's 1), shifts 0.
pub fn batch_norm_config(init: NormInit) -> nn::BatchNormConfig {
    let mut config = nn::BatchNormConfig::default();
    if init == NormInit::Ones {
        config.ws_init = nn::Init::Const(1.0);
    }
    config
}

/// A linear layer initialised as PyTorch's `nn.Linear` is: weights and biases
/// U(−1/√fan_in, 1/√fan_in). (tch's default Kaiming-ReLU weights are √6 times wider,
/// which trains measurably worse here.)
pub fn linear(path: nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
    let bound = 1.0 / (in_dim as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    nn::linear(
        path,
        in_dim,
        out_dim,
        nn::LinearConfig {
            ws_init: init,
            bs_init: Some(init),
            bias: true,
        },
    )
}

/// Shape of one input example, e.g. [1, 28, 28].
pub type InputShape = [i64; 3];

/// The blocks of a network, each with its own var store (named `block1`, `block2`, ...).
#[derive(Debug)]
pub struct Network {
    /// f_1 … f_L.
    pub blocks: Vec<Box<dyn Block>>,
    /// One var store per block; checkpoint tensor names start with `block<i>.`.
    pub stores: Vec<nn::VarStore>,
    /// How the input x is pooled for q_0.
    pub input_pooling: Pooling,
    /// dim(pool(x)).
    pub input_dim: i64,
}

impl Network {
    /// Builds the network described by `config` for inputs of `input` shape.
    pub fn new(config: &ModelConfig, input: InputShape, device: Device) -> Result<Self> {
        config.kind().build(input, device)
    }

    /// The root path of block `i` (0-based) in its own store: `block<i+1>`.
    pub fn block_path(store: &nn::VarStore, i: usize) -> nn::Path<'_> {
        store.root() / format!("block{}", i + 1)
    }

    /// Number of blocks L.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the network has no block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// All trainable parameter tensors of block `i` (its head included).
    pub fn trainable(&self, i: usize) -> Vec<Tensor> {
        self.stores[i].trainable_variables()
    }

    /// Total count of trainable parameters (blocks and heads).
    pub fn parameter_count(&self) -> i64 {
        self.stores
            .iter()
            .flat_map(|s| s.trainable_variables())
            .map(|t| t.numel() as i64)
            .sum()
    }
}

/// The model config of `settings` (`key=value`, the value in TOML syntax or a bare
/// string, e.g. `kind=resnet`), the kind's defaults for the rest, validated for
/// `side`×`side` inputs.
#[cfg(test)]
pub(crate) fn test_config(settings: &[String], side: usize) -> Result<ModelConfig> {
    let mut table = toml::Table::new();
    for s in settings {
        let (key, raw) = s.split_once('=').expect("key=value");
        let value = config::setting_value(raw);
        table.insert(key.trim_start_matches("model.").to_string(), value);
    }
    let config: ModelConfig = toml::Value::Table(table).try_into()?;
    config.kind().validate(side, side)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_pooling_of_channels_last_maps_is_adaptive_average_pooling() {
        use tch::Kind;
        for kind in [Kind::Float, Kind::BFloat16] {
            let x = Tensor::randn([3, 5, 8, 12], (Kind::Float, Device::Cpu)).to_kind(kind);
            let cl = crate::model::cnn::channels_last_layout(&x);
            for grid in [[1, 1], [2, 2], [4, 4], [2, 3]] {
                let plain = |t: &Tensor| t.adaptive_avg_pool2d(grid).flatten(1, -1);
                assert!(grid_pool(&cl, grid).equal(&plain(&cl)), "{kind:?}, {grid:?}");
                // The same gradient, bit for bit (computed without the layout copies).
                let g = Tensor::randn([3, 5 * grid[0] * grid[1]], (Kind::Float, Device::Cpu)).to_kind(kind);
                let ours = cl.detach().set_requires_grad(true);
                (grid_pool(&ours, grid) * &g).sum(kind).backward();
                let reference = cl.detach().set_requires_grad(true);
                (plain(&reference) * &g).sum(kind).backward();
                assert!(
                    ours.grad().equal(&reference.grad()),
                    "{kind:?}, {grid:?}: gradients differ"
                );
            }
        }
    }
}
