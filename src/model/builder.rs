//! Networks of your own layers: any `tch::nn::ModuleT` (a `nn::seq_t()`, a struct of
//! yours) becomes a block, without var stores or naming rules to follow by hand.
//!
//! ```no_run
//! use sll::model::Network;
//! use tch::{nn, Device};
//!
//! let network = Network::builder([1, 28, 28], Device::Cpu)
//!     .block(|p| nn::seq_t().add_fn(|x| x.flatten(1, -1)).add(nn::linear(p / "fc", 784, 256, Default::default())).add_fn(|x| x.relu()))
//!     .block(|p| nn::seq_t().add(nn::linear(p / "fc", 256, 256, Default::default())).add_fn(|x| x.relu()))
//!     .build()
//!     .unwrap();
//! ```
//!
//! Each block's closure receives the root path of the block's own var store
//! (`block<i>`); the builder runs one inference pass of a zero example through the
//! blocks to learn each output's shape, which sets its pooling for the local head and
//! the projection: feature maps [C, H, W] pooled to a 2×2 grid, token sequences [T, D]
//! averaged over tokens, vectors used as they are; the input is flattened for SLL's
//! q_0 when the first block gives vectors, pooled to 2×2 otherwise. FLOPs of such
//! blocks are not counted (`sll bench flops` shows 0 for them).

use super::{Block, InputShape, Network, Pooling};
use anyhow::{bail, Result};
use tch::{nn, nn::ModuleT, Device, Kind, Tensor};

/// Grid of the pooling of feature-map blocks built from modules.
pub const MODULE_POOL_GRID: i64 = 2;

/// A block made of a `ModuleT`.
#[derive(Debug)]
struct ModuleBlock {
    module: Box<dyn ModuleT>,
    pooling: Pooling,
    pooled_dim: i64,
}

impl Block for ModuleBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.module.forward_t(xs, train)
    }

    fn pooling(&self) -> Pooling {
        self.pooling
    }

    fn pooled_dim(&self) -> i64 {
        self.pooled_dim
    }

    fn forward_flops(&self) -> (f64, f64) {
        (0.0, 0.0)
    }
}

type MakeBlock = Box<dyn FnOnce(nn::Path) -> Box<dyn ModuleT>>;

/// Builds a [`Network`] from modules, block by block ([`Network::builder`]).
pub struct NetworkBuilder {
    input: InputShape,
    device: Device,
    blocks: Vec<MakeBlock>,
}

impl Network {
    /// A builder of a network for inputs of `input` shape ([C, H, W]) on `device`.
    pub fn builder(input: InputShape, device: Device) -> NetworkBuilder {
        NetworkBuilder {
            input,
            device,
            blocks: vec![],
        }
    }
}

impl NetworkBuilder {
    /// Appends a block: `make` builds its layers under the path it is given.
    pub fn block<M: ModuleT + 'static>(mut self, make: impl FnOnce(nn::Path) -> M + 'static) -> Self {
        self.blocks
            .push(Box::new(move |p| Box::new(make(p)) as Box<dyn ModuleT>));
        self
    }

    /// The network; an error if it has no block or a block's output is empty.
    pub fn build(self) -> Result<Network> {
        if self.blocks.is_empty() {
            bail!("a network needs at least one block");
        }
        let [c, h, w] = self.input;
        let mut x = Tensor::zeros([1, c, h, w], (Kind::Float, self.device));
        let (mut blocks, mut stores): (Vec<Box<dyn Block>>, Vec<nn::VarStore>) = (vec![], vec![]);
        for (i, make) in self.blocks.into_iter().enumerate() {
            let store = nn::VarStore::new(self.device);
            let module = make(Network::block_path(&store, i));
            let out = tch::no_grad(|| module.forward_t(&x, false));
            let (pooling, pooled_dim) = match out.size().as_slice() {
                [_, c, _, _] => (
                    Pooling::Grid(MODULE_POOL_GRID),
                    c * MODULE_POOL_GRID * MODULE_POOL_GRID,
                ),
                [_, _, d] => (Pooling::TokenMean, *d),
                [_, rest @ ..] if !rest.is_empty() => (Pooling::Flatten, rest.iter().product()),
                shape => bail!(
                    "block {} gives outputs of shape {shape:?}: not a batch of examples",
                    i + 1
                ),
            };
            if pooled_dim <= 0 {
                bail!("block {} gives empty outputs", i + 1);
            }
            blocks.push(Box::new(ModuleBlock {
                module,
                pooling,
                pooled_dim,
            }));
            stores.push(store);
            x = out;
        }
        // The input's pooling (SLL's q_0): flattened when the first block gives vectors
        // (an MLP), a 2×2 grid otherwise.
        let (input_pooling, input_dim) = match blocks[0].pooling() {
            Pooling::Flatten => (Pooling::Flatten, c * h * w),
            _ => (
                Pooling::Grid(MODULE_POOL_GRID),
                c * MODULE_POOL_GRID * MODULE_POOL_GRID,
            ),
        };
        Ok(Network {
            blocks,
            stores,
            input_pooling,
            input_dim,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_pool_by_the_shape_of_their_outputs() {
        let _turn = crate::libtorch_turn();
        let conv = |p: nn::Path, i, o| {
            nn::conv2d(
                p / "conv",
                i,
                o,
                3,
                nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                },
            )
        };
        let net = Network::builder([3, 8, 8], Device::Cpu)
            .block(move |p| conv(p, 3, 4))
            .block(move |p| {
                nn::seq_t()
                    .add(conv(&p / "c", 4, 6))
                    .add_fn(|x| x.flatten(2, 3).transpose(1, 2))
            })
            .block(|p| {
                nn::seq_t().add_fn(|x| x.mean_dim(1, false, None)).add(nn::linear(
                    p / "fc",
                    6,
                    5,
                    Default::default(),
                ))
            })
            .build()
            .unwrap();
        let pooling: Vec<(Pooling, i64)> = net.blocks.iter().map(|b| (b.pooling(), b.pooled_dim())).collect();
        assert_eq!(
            pooling,
            [
                (Pooling::Grid(2), 16),
                (Pooling::TokenMean, 6),
                (Pooling::Flatten, 5)
            ]
        );
        assert_eq!((net.input_pooling, net.input_dim), (Pooling::Grid(2), 12));
        // Each block's variables live in its own store, under `block<i>`.
        let names: Vec<String> = net.stores[1].variables().into_keys().collect();
        assert!(names.iter().all(|n| n.starts_with("block2.")), "{names:?}");
        assert_eq!(
            net.parameter_count(),
            (3 * 9 * 4 + 4) + (4 * 9 * 6 + 6) + (6 * 5 + 5)
        );
        // An MLP's input is flattened for q_0.
        let mlp = Network::builder([1, 4, 4], Device::Cpu)
            .block(|p| {
                nn::seq_t()
                    .add_fn(|x| x.flatten(1, -1))
                    .add(nn::linear(p / "fc", 16, 3, Default::default()))
            })
            .build()
            .unwrap();
        assert_eq!((mlp.input_pooling, mlp.input_dim), (Pooling::Flatten, 16));
        let e = Network::builder([1, 4, 4], Device::Cpu).build().unwrap_err();
        assert!(e.to_string().contains("at least one block"), "{e}");
    }
}
