//! The `[train]` section: method, schedule of blocks, runtime.

use super::HeadKind;
pub use crate::precision::Precision;
use serde::{Deserialize, Serialize};

/// Training method.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Stochastic Layer-wise Learning: local CE + β·Bhattacharyya per block.
    Sll,
    /// Greedy local cross-entropy only, through a linear head (SLL with β = 0 and the
    /// same head: `--method sll --set objective.beta=0`).
    Local,
    /// End-to-end backpropagation through the same blocks, one head on the last.
    Bp,
    /// DGL (Belilovsky et al. 2020): local CE through a conv auxiliary net per block.
    Dgl,
    /// InfoPro (Wang et al. 2021): local CE and reconstruction of the input per block.
    Infopro,
    /// PredSim (Nøkland & Eidnes 2019): (1−β)·local CE + β·similarity matching.
    Predsim,
}

impl Method {
    /// The head `objective.head = "auto"` resolves to. SLL's is `pooled`, measured
    /// best of five heads at depth (docs/local-rules.md); on vector outputs (MLP, ViT)
    /// it is the linear head.
    pub fn default_head(self) -> HeadKind {
        match self {
            Method::Local | Method::Bp => HeadKind::Linear,
            Method::Sll | Method::Predsim => HeadKind::Pooled,
            Method::Dgl => HeadKind::Conv,
            Method::Infopro => HeadKind::Infopro,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Sll => "sll",
            Method::Local => "local",
            Method::Bp => "bp",
            Method::Dgl => "dgl",
            Method::Infopro => "infopro",
            Method::Predsim => "predsim",
        })
    }
}

/// Train section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// sll, local or bp.
    pub method: Method,
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of everything random: initialisation, shuffling, dropout, projections.
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// `fp32`, `bf16` (mixed: bf16 products and convolutions, fp32 weights, optimizer
    /// state and losses; see `precision`) or `auto` (bf16 where the device has it
    /// natively). A run's config.toml records what `auto` resolved to.
    pub precision: Precision,
    /// Intra-op threads of libtorch (0 = libtorch's default); with a pipeline, the
    /// threads of each stage (0 = the cores shared out among the stages).
    pub threads: usize,
    /// How the blocks of `sll`/`local` are scheduled: one after another, or as a
    /// pipeline of concurrent stages (see `train::pipeline`).
    pub pipeline: Pipeline,
    /// Pipeline stages, each a run of consecutive blocks (0 = one per block).
    pub stages: usize,
    /// The device of each thread-pipeline stage (`cuda:0`, `cuda:1`, ...; empty = every
    /// stage on `train.device`).
    pub stage_devices: Vec<String>,
    /// Data-parallel replicas of each stage of the MPI pipeline (ranks = stages ×
    /// replicas): each trains on its share of every minibatch, gradients averaged
    /// across the stage's replicas before each step.
    pub replicas: usize,
    /// The divergence guard: training stops when a block's loss on a step exceeds this
    /// many times its loss on the run's first step (0 = only non-finite losses stop it).
    pub divergence_factor: f64,
    /// Flush subnormal floating-point numbers to zero in every computing thread (CPU):
    /// much faster once weights drift into subnormals (see `denormals`).
    pub flush_denormals: bool,
    /// Keep freed memory in the process for the next step instead of returning it to
    /// the kernel (glibc's mmap and trim thresholds, see `malloc`): far fewer page
    /// faults per step for convolutional networks.
    pub keep_freed_memory: bool,
}

/// How the blocks are scheduled during training.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pipeline {
    /// Every block trains on a minibatch before the next minibatch starts.
    None,
    /// Stages of consecutive blocks on their own threads, minibatches flowing through
    /// bounded queues: block i trains on minibatch t while block i+1 is on t−1.
    Threads,
    /// One stage per MPI rank (`mpirun -np K sll train ...`, a build with the `mpi`
    /// feature), activations sent rank to rank.
    Mpi,
}

impl std::fmt::Display for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pipeline::None => "none",
            Pipeline::Threads => "threads",
            Pipeline::Mpi => "mpi",
        })
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Sll,
            epochs: 15,
            seed: 0,
            device: "cpu".into(),
            precision: Precision::Auto,
            threads: 0,
            pipeline: Pipeline::None,
            stages: 0,
            stage_devices: vec![],
            replicas: 1,
            divergence_factor: 100.0,
            flush_denormals: true,
            keep_freed_memory: true,
        }
    }
}
