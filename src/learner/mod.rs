//! A network together with the local rules of its blocks: what is trained,
//! checkpointed and evaluated.

use crate::config::{Config, Method, ObjectiveConfig, Precision, Prior};
use crate::data::{ordered_batches, Dataset};
use crate::model::{Block, InputShape, Network};
use crate::rules::{self, BlockSpec, InputMessage, LocalRule, RuleContext};
use anyhow::Result;
use tch::{Device, Kind, Tensor};

pub mod flops;
pub mod footprint;

/// The network, one [`LocalRule`] per block, and what the first block receives.
#[derive(Debug)]
pub struct Model {
    /// The blocks and their var stores.
    pub network: Network,
    /// The local rule (head, projection, auxiliary nets) of each block.
    pub rules: Vec<Box<dyn LocalRule>>,
    /// What the first block's rule receives from below (SLL: log q_0; InfoPro: x).
    pub input: Box<dyn InputMessage>,
    /// The objective settings in force (β = 0 for every method but `sll`).
    pub objective: ObjectiveConfig,
    /// How the model is trained.
    pub method: Method,
    /// The arithmetic of its training steps (resolved: `fp32` or `bf16`; evaluation
    /// is always fp32).
    pub precision: Precision,
}

/// A [`Model`] taken apart for a pipeline (see [`Model::pipeline_parts`]).
pub struct PipelineParts<'a> {
    /// What the feeding thread computes for each minibatch.
    pub input: &'a dyn InputMessage,
    /// f_1 … f_L.
    pub blocks: &'a mut [Box<dyn Block>],
    /// The rule of each block.
    pub rules: &'a mut [Box<dyn LocalRule>],
}

/// Test accuracies of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Accuracy of the final classifier (the last block's head), in [0, 1].
    pub accuracy: f64,
    /// Accuracy of each block's head (`None` for blocks without one).
    pub block_accuracy: Vec<Option<f64>>,
    /// Accuracy of the average of all heads' softmaxes.
    pub ensemble_accuracy: f64,
}

/// Everything the local step of block i reads: the block and its rule. Borrowed from
/// a [`Model`] ([`Model::local_block`]) or from the share of it a pipeline stage owns.
#[derive(Clone, Copy)]
pub struct LocalBlock<'a> {
    /// 0-based block index i.
    pub index: usize,
    /// f_i.
    pub block: &'a dyn Block,
    /// The local rule of block i.
    pub rule: &'a dyn LocalRule,
    /// The arithmetic of its step.
    pub precision: Precision,
    /// The rule of block i−1 when its momentum head follows block i (after its step).
    pub previous: Option<&'a dyn LocalRule>,
}

impl<'a> LocalBlock<'a> {
    /// Block `index` (0-based), f_i, and its rule, trained in `precision`.
    pub fn new(index: usize, block: &'a dyn Block, rule: &'a dyn LocalRule, precision: Precision) -> Self {
        Self {
            index,
            block,
            rule,
            precision,
            previous: None,
        }
    }
}

/// What each block's rule is built from: its place, its var store's root, pooling and
/// output shape.
fn block_specs(network: &Network, input: InputShape, device: Device) -> Vec<BlockSpec<'_>> {
    let shapes = rules::output_shapes(network, input, device);
    network
        .blocks
        .iter()
        .zip(shapes)
        .enumerate()
        .map(|(i, (block, shape))| BlockSpec {
            index: i,
            path: Network::block_path(&network.stores[i], i),
            pooling: block.pooling(),
            pooled_dim: block.pooled_dim(),
            shape,
            layers: block.layers(),
        })
        .collect()
}

/// For momentum heads: per block i < L−1, two fresh copies of block i+1 (built from
/// `config.model`) and block i+1's own variables.
fn next_copies(
    config: &Config,
    network: &Network,
    input: InputShape,
    device: Device,
) -> Result<Vec<Option<rules::NextCopies>>> {
    let copy = |network: Network| network.blocks.into_iter().zip(network.stores).skip(1);
    let learnable = copy(Network::new(&config.model, input, device)?);
    let averaged = copy(Network::new(&config.model, input, device)?);
    Ok(learnable
        .zip(averaged)
        .zip(network.stores.iter().skip(1))
        .map(|((a, b), store)| Some(([a, b], store.variables())))
        .collect())
}

/// The objective settings a method trains with: only `sll` has a divergence.
pub fn effective_objective(config: &Config) -> ObjectiveConfig {
    let mut objective = config.objective.clone();
    if config.train.method != Method::Sll {
        objective.beta = 0.0;
        objective.prior = Prior::None;
    }
    objective
}

impl Model {
    /// Builds the model of `config` for `classes` classes and inputs of `input` shape.
    /// Initialisation draws from libtorch's generator (seed it first): the blocks, then
    /// the rules' heads in block order; projections are drawn from their own seeds,
    /// derived from `config.train.seed`.
    pub fn new(config: &Config, classes: i64, input: InputShape, device: Device) -> Result<Self> {
        footprint::check(config, classes, input, device)?;
        config.validate_for_classes(classes)?;
        let network = Network::new(&config.model, input, device)?;
        Self::with_network(config, network, classes, input, device)
    }

    /// The model of `config` around a network built elsewhere (blocks of your own: see
    /// `examples/custom_block.rs`): the rules of `config.train.method` with the heads
    /// and objective of `config`, one per block of `network`.
    pub fn with_network(
        config: &Config,
        network: Network,
        classes: i64,
        input: InputShape,
        device: Device,
    ) -> Result<Self> {
        let objective = effective_objective(config);
        let method = config.train.method;
        let (precision, _) = crate::precision::resolve(config.train.precision, device)?;
        let blocks = block_specs(&network, input, device);
        let next_copies = if objective.momentum_head && method != Method::Bp {
            next_copies(config, &network, input, device)?
        } else {
            vec![]
        };
        let ctx = RuleContext {
            config,
            objective: &objective,
            classes,
            blocks,
            input_pooling: network.input_pooling,
            input_dim: network.input_dim,
            input_shape: input,
            device,
            next_copies: std::cell::RefCell::new(next_copies),
        };
        let built = rules::build(&ctx, method)?;
        drop(ctx);
        Ok(Self {
            network,
            rules: built.blocks,
            input: built.input,
            objective,
            method,
            precision,
        })
    }

    /// A model of `network` whose every block trains with a rule of your own: `rule`
    /// builds block i's from its [`BlockSpec`] (its heads under `spec.path`, the
    /// block's own var store, so the block's optimizer trains them), and no built-in
    /// head is created. Trained block by block (`config.train.method` must not be
    /// `bp`), in `config.train.precision`; the first block receives nothing from below.
    pub fn from_parts(
        config: &Config,
        network: Network,
        input: InputShape,
        device: Device,
        mut rule: impl FnMut(&BlockSpec<'_>) -> Result<Box<dyn LocalRule>>,
    ) -> Result<Self> {
        if config.train.method == Method::Bp {
            anyhow::bail!("config key `train.method` = \"bp\" trains one head through every block; a rule per block needs a local method");
        }
        let (precision, _) = crate::precision::resolve(config.train.precision, device)?;
        let rules = block_specs(&network, input, device)
            .iter()
            .map(&mut rule)
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            network,
            rules,
            input: Box::new(rules::NoMessage),
            objective: effective_objective(config),
            method: config.train.method,
            precision,
        })
    }

    /// Seeds of every projection: the input's first (if any), then each block's.
    pub fn projection_seeds(&self) -> Vec<Option<u64>> {
        std::iter::once(self.input.projection_seed())
            .chain(self.rules.iter().map(|r| r.projection_seed()))
            .collect()
    }

    /// Where every dropout stream stands: the input's, then each block's (0 for a
    /// slot without a stream).
    pub fn dropout_positions(&self) -> Vec<u64> {
        std::iter::once(self.input.dropout())
            .chain(self.rules.iter().map(|r| r.dropout()))
            .map(|d| d.map_or(0, |d| d.position()))
            .collect()
    }

    /// Continues every dropout stream at `positions` (as [`Self::dropout_positions`]
    /// gave them).
    pub fn set_dropout_positions(&self, positions: &[u64]) {
        let streams = std::iter::once(self.input.dropout()).chain(self.rules.iter().map(|r| r.dropout()));
        for (stream, &position) in streams.zip(positions) {
            if let Some(d) = stream {
                d.set_position(position);
            }
        }
    }

    /// Counted FLOPs per example of one training step of each block: forward and
    /// backward (×3) of the block and of its rule's trainable parts, forward and
    /// backward (×2) of its fixed projection. What pipeline stages are balanced by.
    pub fn block_costs(&self) -> Vec<f64> {
        self.network
            .blocks
            .iter()
            .zip(&self.rules)
            .map(|(b, r)| {
                let f = r.flops();
                3.0 * (b.forward_flops().0 + f.trainable) + 2.0 * f.projection
            })
            .collect()
    }

    /// What the first block receives for input `x`.
    pub fn input_message(&self, x: &Tensor, train: bool) -> Option<Tensor> {
        self.input.message(x, train)
    }

    /// What the local step of block `i` reads.
    pub fn local_block(&self, i: usize) -> LocalBlock<'_> {
        let mut part = LocalBlock::new(
            i,
            self.network.blocks[i].as_ref(),
            self.rules[i].as_ref(),
            self.precision,
        );
        if self.objective.momentum_head && i > 0 {
            part.previous = Some(self.rules[i - 1].as_ref());
        }
        part
    }

    /// The model split for a pipeline: the input message, computed by the thread that
    /// feeds minibatches in, and every block with its rule, borrowed mutably so that
    /// disjoint runs of blocks can move to stage threads (a `Tensor` may move between
    /// threads but not be shared by them).
    pub fn pipeline_parts(&mut self) -> PipelineParts<'_> {
        PipelineParts {
            input: self.input.as_ref(),
            blocks: &mut self.network.blocks,
            rules: &mut self.rules,
        }
    }

    /// Moves block `i` (parameters, buffers, head and projection) to `device`.
    pub fn place_block(&mut self, i: usize, device: Device) {
        self.network.stores[i].set_device(device);
        self.rules[i].set_device(device);
    }

    /// Per-block logits on x (`None` for blocks without a head), inference mode, on
    /// x's device (blocks placed on other devices get their input moved there).
    pub fn block_logits(&self, x: &Tensor) -> Vec<Option<Tensor>> {
        tch::no_grad(|| {
            let mut h = x.shallow_clone();
            let mut out = vec![];
            let blocks = self.network.blocks.iter().zip(&self.rules);
            for (store, (block, rule)) in self.network.stores.iter().zip(blocks) {
                h = block.forward_t(&h.to_device(store.device()), false);
                out.push(rule.logits(&h).map(|l| l.to_device(x.device())));
            }
            out
        })
    }

    /// Accuracy of the final classifier, of every block's head and of their average,
    /// on `data` in batches of `batch_size`.
    pub fn evaluate(&self, data: &Dataset, batch_size: usize) -> Evaluation {
        let blocks = self.network.len();
        let mut correct = vec![0i64; blocks];
        let mut ensemble_correct = 0i64;
        for (x, y) in ordered_batches(data, batch_size) {
            let logits = self.block_logits(&x);
            let mut probability_sum: Option<Tensor> = None;
            for (i, l) in logits.iter().enumerate() {
                if let Some(l) = l {
                    correct[i] += l
                        .argmax(-1, false)
                        .eq_tensor(&y)
                        .sum(Kind::Int64)
                        .int64_value(&[]);
                    let p = l.softmax(-1, Kind::Float);
                    probability_sum = Some(match probability_sum {
                        Some(s) => s + p,
                        None => p,
                    });
                }
            }
            if let Some(s) = probability_sum {
                ensemble_correct += s
                    .argmax(-1, false)
                    .eq_tensor(&y)
                    .sum(Kind::Int64)
                    .int64_value(&[]);
            }
        }
        let n = data.len().max(1) as f64;
        let block_accuracy: Vec<Option<f64>> = self
            .rules
            .iter()
            .zip(&correct)
            .map(|(r, c)| r.has_head().then(|| *c as f64 / n))
            .collect();
        Evaluation {
            accuracy: block_accuracy.last().copied().flatten().unwrap_or(0.0),
            block_accuracy,
            ensemble_accuracy: ensemble_correct as f64 / n,
        }
    }
}
