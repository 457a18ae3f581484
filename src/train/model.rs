//! A network together with the local objectives of its blocks: what is trained,
//! checkpointed and evaluated.

use super::sequential::LocalBlock;
use crate::config::{Config, Method, ObjectiveConfig, Prior};
use crate::data::{ordered_batches, Dataset};
use crate::model::{Block, InputShape, Network, Pooling};
use crate::objective::{self, BlockObjective, Dropout, Projection, PROTOTYPE_SEED_INDEX};
use anyhow::Result;
use tch::{Device, Kind, Tensor};

/// The network, one [`BlockObjective`] per block, and the fixed pieces of the
/// divergence term (q_0's projection, the label targets).
#[derive(Debug)]
pub struct Model {
    /// The blocks and their var stores.
    pub network: Network,
    /// Head and projection of each block.
    pub objectives: Vec<BlockObjective>,
    /// R_0, the projection of the pooled input for q_0 (`prior = previous`).
    pub input_projection: Option<Projection>,
    /// The dropout before R_0.
    input_dropout: Dropout,
    /// log t_y for every class ([K, d0], `prior = label`).
    pub label_targets: Option<Tensor>,
    /// The objective settings in force (β = 0 for `local` and `bp`).
    pub objective: ObjectiveConfig,
    /// How the model is trained.
    pub method: Method,
}

/// The priors of a minibatch that depend on no block: log q_0 of the input and the
/// label targets log t_y.
pub struct InputPrior<'a> {
    projection: Option<&'a Projection>,
    dropout: &'a Dropout,
    pooling: Pooling,
    tau: f64,
    label_targets: Option<&'a Tensor>,
}

impl InputPrior<'_> {
    /// log q_0(x) (`prior = previous`), advancing the input's dropout stream.
    pub fn log_posterior(&self, x: &Tensor, train: bool) -> Option<Tensor> {
        self.projection.map(|r| {
            let u0 = self.pooling.apply(x);
            objective::posterior(r, &u0, self.dropout, self.tau, train)
        })
    }

    /// log t_y for labels `y` (`prior = label`).
    pub fn label_prior(&self, y: &Tensor) -> Option<Tensor> {
        self.label_targets.map(|t| t.index_select(0, y))
    }
}

/// A [`Model`] taken apart for a pipeline (see [`Model::pipeline_parts`]).
pub struct PipelineParts<'a> {
    /// What the feeding thread computes for each minibatch.
    pub input: InputPrior<'a>,
    /// f_1 … f_L.
    pub blocks: &'a mut [Box<dyn Block>],
    /// The objective of each block.
    pub objectives: &'a mut [BlockObjective],
    /// The prior of every block's divergence term.
    pub prior: Prior,
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

/// The objective settings a method trains with: `local` and `bp` have no divergence.
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
    /// Initialisation draws from libtorch's generator (seed it first); projections are
    /// drawn from their own seeds, derived from `config.train.seed`.
    pub fn new(config: &Config, classes: i64, input: InputShape, device: Device) -> Result<Self> {
        crate::model::footprint::check(config, classes, input, device)?;
        config.validate_for_classes(classes)?;
        let network = Network::new(&config.model, input, device)?;
        let objective = effective_objective(config);
        let method = config.train.method;
        let seed = config.train.seed;
        let last = network.len() - 1;
        let objectives = network
            .blocks
            .iter()
            .enumerate()
            .map(|(i, block)| {
                let path = Network::block_path(&network.stores[i], i);
                let with_head = method != Method::Bp || i == last;
                let seed = objective::projection_seed(seed, i + 1);
                BlockObjective::new(&path, &objective, block.pooled_dim(), classes, seed, with_head)
            })
            .collect();
        let input_projection =
            (objective.has_divergence() && objective.prior == Prior::Previous).then(|| {
                Projection::new(
                    &objective,
                    network.input_dim,
                    objective::projection_seed(seed, 0),
                    device,
                )
            });
        let label_targets = (objective.has_divergence() && objective.prior == Prior::Label).then(|| {
            let prototype_seed = objective::projection_seed(seed, PROTOTYPE_SEED_INDEX);
            objective::label_targets(
                classes,
                objective.d0,
                objective.tau,
                objective.label_smoothing,
                prototype_seed,
                device,
            )
        });
        let input_dropout = Dropout::new(objective.dropout, objective::projection_seed(seed, 0));
        Ok(Self {
            network,
            objectives,
            input_projection,
            input_dropout,
            label_targets,
            objective,
            method,
        })
    }

    /// Seeds of every projection: the input's first (if any), then each block's.
    pub fn projection_seeds(&self) -> Vec<Option<u64>> {
        std::iter::once(self.input_projection.as_ref().map(|p| p.seed))
            .chain(
                self.objectives
                    .iter()
                    .map(|o| o.projection.as_ref().map(|p| p.seed)),
            )
            .collect()
    }

    /// Every dropout stream of the objectives: the input's, then each block's.
    pub fn dropout_streams(&self) -> Vec<&Dropout> {
        std::iter::once(&self.input_dropout)
            .chain(self.objectives.iter().map(|o| o.dropout()))
            .collect()
    }

    /// The prior each block's divergence starts from for a minibatch: log q_0 of the
    /// input (`previous`), or nothing (then each block's prior is set by the trainer).
    pub fn input_log_posterior(&self, x: &Tensor, train: bool) -> Option<Tensor> {
        self.input_prior().log_posterior(x, train)
    }

    /// log t_y, the prior of every block for labels `y` (`prior = label`).
    pub fn label_prior(&self, y: &Tensor) -> Option<Tensor> {
        self.input_prior().label_prior(y)
    }

    fn input_prior(&self) -> InputPrior<'_> {
        InputPrior {
            projection: self.input_projection.as_ref(),
            dropout: &self.input_dropout,
            pooling: self.network.input_pooling,
            tau: self.objective.tau,
            label_targets: self.label_targets.as_ref(),
        }
    }

    /// What the local step of block `i` reads.
    pub fn local_block(&self, i: usize) -> LocalBlock<'_> {
        LocalBlock {
            index: i,
            block: self.network.blocks[i].as_ref(),
            objective: &self.objectives[i],
            prior: self.objective.prior,
        }
    }

    /// The model split for a pipeline: the block-independent priors, read by the thread
    /// that feeds minibatches in, and every block with its objective, borrowed mutably
    /// so that disjoint runs of blocks can move to stage threads (a `Tensor` may move
    /// between threads but not be shared by them).
    pub fn pipeline_parts(&mut self) -> PipelineParts<'_> {
        PipelineParts {
            input: InputPrior {
                projection: self.input_projection.as_ref(),
                dropout: &self.input_dropout,
                pooling: self.network.input_pooling,
                tau: self.objective.tau,
                label_targets: self.label_targets.as_ref(),
            },
            blocks: &mut self.network.blocks,
            objectives: &mut self.objectives,
            prior: self.objective.prior,
        }
    }

    /// Moves block `i` (parameters, buffers, head and projection) to `device`.
    pub fn place_block(&mut self, i: usize, device: Device) {
        self.network.stores[i].set_device(device);
        self.objectives[i].set_device(device);
    }

    /// Per-block logits on x (`None` for blocks without a head), inference mode, on
    /// x's device (blocks placed on other devices get their input moved there).
    pub fn block_logits(&self, x: &Tensor) -> Vec<Option<Tensor>> {
        tch::no_grad(|| {
            let mut h = x.shallow_clone();
            let mut out = vec![];
            let blocks = self.network.blocks.iter().zip(&self.objectives);
            for (store, (block, objective)) in self.network.stores.iter().zip(blocks) {
                h = block.forward_t(&h.to_device(store.device()), false);
                let u = block.pooling().apply(&h);
                out.push(
                    objective
                        .has_head()
                        .then(|| objective.logits(&u).to_device(x.device())),
                );
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
            .objectives
            .iter()
            .zip(&correct)
            .map(|(o, c)| o.has_head().then(|| *c as f64 / n))
            .collect();
        Evaluation {
            accuracy: block_accuracy.last().copied().flatten().unwrap_or(0.0),
            block_accuracy,
            ensemble_accuracy: ensemble_correct as f64 / n,
        }
    }
}
