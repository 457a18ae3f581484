//! Local rules: the loss one block trains on, as plug-ins.
//!
//! A [`LocalRule`] sees one block's *unpooled* output h_i (with its graph), the labels
//! and whatever the block below passed on, and returns its named loss terms, the
//! tensor whose gradient trains the block ([`LocalLoss::total`]) and what it passes to
//! the next block. Its classifier head gives the block's logits. The trainers
//! (sequential, thread pipeline, MPI pipeline) and the benches hold blocks' rules
//! behind this trait only; no gradient ever leaves a block, whatever the rule.
//!
//! | `--method` | file | loss of block i |
//! |---|---|---|
//! | `sll` | [`sll`] | CE(head(h_i), y) + β·D_B(q_i, sg(q_{i−1})) |
//! | `local` | [`local`] | CE(head(h_i), y) |
//! | `dgl` | [`dgl`] | CE(conv auxiliary net(h_i), y) |
//! | `infopro` | [`infopro`] | λ_CE,i·CE(aux net(h_i), y) + λ_rec,i·‖decoder(h_i) − x‖² |
//! | `predsim` | [`predsim`] | (1−β)·CE(pooled head(h_i), y) + β·‖S(conv(h_i)) − S(y)‖² |
//!
//! Adding a rule: a file here with a `build` function returning [`Rules`], and one arm
//! in [`build`] (and a `Method` variant in `config`). See docs/method.md, "Local rules".

pub mod auglocal;
pub mod dgl;
pub mod head;
pub mod infopro;
pub mod local;
pub mod momentum;
pub mod predsim;
pub mod sll;
pub mod terms;

use crate::config::{Config, HeadKind, Method};

use crate::model::{Network, Pooling};
use crate::objective::Dropout;
use anyhow::Result;
use head::{Head, OutputShape};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Debug;
use tch::{nn, Device, Tensor};

/// The loss of one block on one minibatch.
pub struct LocalLoss {
    /// The tensor whose gradient trains the block (its value may differ from the sum
    /// of the weighted terms when a gradient is fused).
    pub total: Tensor,
    /// The rule's terms, unweighted, as scalar tensors, in [`LocalRule::term_names`]
    /// order (the first is always the head's cross-entropy, `prediction`).
    pub terms: Vec<Tensor>,
    /// What the next block receives (detached by the trainer), if anything.
    pub passes_on: Option<Tensor>,
}

/// The local loss of one block.
pub trait LocalRule: Debug + Send {
    /// Names of the loss terms (metrics columns), `prediction` first.
    fn term_names(&self) -> &'static [&'static str];
    /// The loss of block output `h` (unpooled, with its graph) for labels `y`, given
    /// what the block below passed on (for the first block: [`InputMessage`]'s).
    fn loss(&self, h: &Tensor, y: &Tensor, passed: Option<&Tensor>, train: bool) -> LocalLoss;
    /// Inference logits of the block's head (`None` for a block without one).
    fn logits(&self, h: &Tensor) -> Option<Tensor>;
    /// Whether the block has a classifier head (BP's inner blocks have none).
    fn has_head(&self) -> bool {
        true
    }
    /// Moves what lives outside the block's var store (fixed projections) to `device`.
    fn set_device(&mut self, _device: Device) {}
    /// The rule's dropout stream, whose position a checkpoint records.
    fn dropout(&self) -> Option<&Dropout> {
        None
    }
    /// The seed of the rule's fixed projection (recorded in checkpoints).
    fn projection_seed(&self) -> Option<u64> {
        None
    }
    /// Forward FLOPs per example of what the rule adds to the block.
    fn flops(&self) -> RuleFlops {
        RuleFlops::default()
    }
    /// After the next block's step: a momentum head's EMA copy follows it.
    fn follow_next(&self) {}
}

/// Forward FLOPs per example of a rule's parts (`sll bench flops`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RuleFlops {
    /// Trainable heads, auxiliary nets, decoders, similarity maps.
    pub trainable: f64,
    /// The fixed projection (as `Projection::flops_per_example`).
    pub projection: f64,
    /// dim(u) when the divergence D_B is computed (its element-wise work).
    pub divergence_dim: Option<f64>,
}

/// What the first block receives as "passed on from below", computed from the input
/// minibatch by the thread that feeds it in (SLL: log q_0; InfoPro: the input itself).
pub trait InputMessage: Debug + Send {
    /// The message for input `x`.
    fn message(&self, x: &Tensor, train: bool) -> Option<Tensor>;
    /// The input's dropout stream, if it has one.
    fn dropout(&self) -> Option<&Dropout> {
        None
    }
    /// The seed of the input's projection (recorded in checkpoints).
    fn projection_seed(&self) -> Option<u64> {
        None
    }
    /// Forward FLOPs per example of the input's projection (0 without one).
    fn projection_flops(&self) -> f64 {
        0.0
    }
}

/// No message: the first block's rule gets `None`.
#[derive(Debug)]
pub struct NoMessage;

impl InputMessage for NoMessage {
    fn message(&self, _x: &Tensor, _train: bool) -> Option<Tensor> {
        None
    }
}

/// One rule per block, and the first block's message.
#[derive(Debug)]
pub struct Rules {
    /// The rule of each block.
    pub blocks: Vec<Box<dyn LocalRule>>,
    /// What the first block receives.
    pub input: Box<dyn InputMessage>,
}

/// What a rule is built from: the block's place, shape and var store.
pub struct BlockSpec<'a> {
    /// 0-based block index.
    pub index: usize,
    /// The block's root path (`block<i+1>` in its own var store).
    pub path: nn::Path<'a>,
    /// How the block's output is pooled (model.pool_grid, token pooling).
    pub pooling: Pooling,
    /// dim(pool(h_i)).
    pub pooled_dim: i64,
    /// The shape of one output h_i.
    pub shape: OutputShape,
    /// The block's layers, input to output (what AugLocal heads copy).
    pub layers: Vec<crate::model::Layer>,
}

/// Everything the rules of a network are built from.
pub struct RuleContext<'a> {
    /// The run's config (objective settings, seed); `objective` as the method trains.
    pub config: &'a Config,
    /// The objective settings in force.
    pub objective: &'a crate::config::ObjectiveConfig,
    /// Number of classes.
    pub classes: i64,
    /// One per block, input to output.
    pub blocks: Vec<BlockSpec<'a>>,
    /// How the input is pooled, and its pooled size (SLL's q_0).
    pub input_pooling: Pooling,
    /// dim(pool(x)).
    pub input_dim: i64,
    /// The shape of one input example.
    pub input_shape: [i64; 3],
    /// The device of the input.
    pub device: Device,
    /// For momentum heads: per block i, the two copies of block i+1 and block i+1's
    /// own variables (taken when block i's head is built).
    pub next_copies: RefCell<Vec<Option<NextCopies>>>,
}

/// The copies of block i+1 that block i's momentum head takes: two blocks with their
/// var stores, and block i+1's own variables.
pub type NextCopies = ([momentum::BlockCopy; 2], HashMap<String, Tensor>);

impl RuleContext<'_> {
    /// The head `kind` of block `b` (under `block<i>.head`); with momentum heads, built
    /// for the next block's output and reading the next block's copies first.
    pub fn head(&self, b: &BlockSpec<'_>, kind: HeadKind) -> Result<Head> {
        let path = &b.path / "head";
        let next = match self.next_copies.borrow_mut().get_mut(b.index) {
            Some(copies) if self.objective.momentum_head => copies.take(),
            _ => None,
        };
        let reads = if next.is_some() {
            &self.blocks[b.index + 1]
        } else {
            b
        };
        let plan = match kind {
            HeadKind::Auglocal => Some(self.aux_plan(reads.index)?),
            _ => None,
        };
        let head = Head::new(
            path.clone(),
            kind,
            &reads.shape,
            reads.pooling,
            reads.pooled_dim,
            self.classes,
            self.objective.head_hidden,
            plan.as_ref(),
        )?;
        Ok(match next {
            Some((copies, real)) => head.reading(momentum::NextModule::new(
                &path,
                &real,
                b.index + 1,
                copies,
                self.objective.head_momentum,
            )?),
            None => head,
        })
    }

    /// What block `index`'s AugLocal head copies of the blocks after it.
    pub fn aux_plan(&self, index: usize) -> Result<auglocal::Plan> {
        let layers: Vec<Vec<crate::model::Layer>> = self.blocks.iter().map(|b| b.layers.clone()).collect();
        auglocal::plan(&layers, index, self.objective.aux_depth, self.objective.aux_taper)
    }
}

/// The rules of `method` for every block of `network` (`bp`: a head on the last block
/// only, the network's classifier).
pub fn build(ctx: &RuleContext<'_>, method: Method) -> Result<Rules> {
    match method {
        Method::Sll => sll::build(ctx),
        Method::Local => local::build(ctx, false),
        Method::Bp => local::build(ctx, true),
        Method::Dgl => dgl::build(ctx),
        Method::Infopro => infopro::build(ctx),
        Method::Predsim => predsim::build(ctx),
    }
}

/// The per-example shape of every block's output for inputs of `input` shape, from
/// one inference-mode pass of a zero example (no randomness drawn, nothing updated).
pub fn output_shapes(network: &Network, input: [i64; 3], device: Device) -> Vec<OutputShape> {
    tch::no_grad(|| {
        let mut h = Tensor::zeros([1, input[0], input[1], input[2]], (tch::Kind::Float, device));
        network
            .blocks
            .iter()
            .zip(&network.stores)
            .map(|(block, store)| {
                h = block.forward_t(&h.to_device(store.device()), false);
                OutputShape::of(&h.size()[1..])
            })
            .collect()
    })
}

/// Cross-entropy of `logits` for labels `y`.
pub fn cross_entropy(logits: &Tensor, y: &Tensor) -> Tensor {
    logits.cross_entropy_for_logits(y)
}
