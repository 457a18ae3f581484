//! `sll bench` subcommands and their options, converted into the benches' specs.

use crate::bench::epochs::EpochBenchSpec;
use crate::bench::memory::{MemoryMethod, MemorySpec};
use crate::bench::step::StepBenchSpec;
use crate::config::{Method, DEFAULT_PRESET};
use clap::{Args, Subcommand};
use std::path::PathBuf;

/// `sll bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Time full training steps on random data (samples/s, objective share, GFLOP/s).
    Step(StepArgs),
    /// Training memory against depth: parameters, gradients, optimizer state, activations.
    Memory(MemoryArgs),
    /// Counted FLOPs of a training step per block (layers, head, projection, divergence)
    /// next to the measured GFLOP/s.
    Flops(StepArgs),
    /// One (method, depth) of `bench memory`, measured in this process (its child).
    #[command(hide = true)]
    MemoryOne(MemoryOneArgs),
    /// Samples/s of the thread pipeline against sequential training (1 thread, and all
    /// cores), alternating rounds on random data.
    Pipeline(PipelineArgs),
    /// Real training of a preset on its real data, epoch by epoch, next to the step
    /// bench for the same model, method, batch and threads (steady state vs epoch 1).
    Epochs(EpochsArgs),
}

/// `sll bench epochs` options.
#[derive(Debug, Args)]
pub struct EpochsArgs {
    /// Preset name or config file.
    #[arg(long, default_value = DEFAULT_PRESET)]
    pub config: String,
    /// Epochs of the real run (epoch 1, then the steady state).
    #[arg(long, default_value_t = 15)]
    pub epochs: usize,
    /// Intra-op threads of the run and the step bench (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Where the preset's data is.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Rounds of the step bench (the median counts).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Keep the run in this (new) directory instead of a temporary one.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Override any config key, for the run and the step bench (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

/// `sll bench pipeline` options: those of `bench step`, plus the stages.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Pipeline stages (0 = one per block); each runs 1 intra-op thread.
    #[arg(long, default_value_t = 2)]
    pub stages: usize,
    #[command(flatten)]
    pub bench: StepArgs,
}

/// `sll bench memory` options.
#[derive(Debug, Args)]
pub struct MemoryArgs {
    /// `mlp`, `cnn`, `vit` (the mnist-vit preset) or a preset name (its depth key is varied).
    #[arg(long, default_value = "mlp")]
    pub model: String,
    /// Depths to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,4,8,16,32")]
    pub depths: Vec<usize>,
    /// Methods to measure, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "sll,local,bp,bp-checkpoint"
    )]
    pub methods: Vec<MemoryMethod>,
    /// Minibatch size [default: 128 for mlp, 64 for cnn].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Intra-op threads (0 = libtorch's default).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print one JSON object per (method, depth) instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also draw memory against depth per method into this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Override any config key: `--set objective.d0=256` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

/// `sll bench memory-one` options (internal).
#[derive(Debug, Args)]
pub struct MemoryOneArgs {
    /// Model.
    #[arg(long)]
    pub model: String,
    /// Method.
    #[arg(long, value_enum)]
    pub method: MemoryMethod,
    /// Depth.
    #[arg(long)]
    pub depth: usize,
    /// Minibatch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Intra-op threads.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Config overrides.
    #[arg(long = "set")]
    pub sets: Vec<String>,
}

/// `sll bench step` and `sll bench flops` options.
#[derive(Debug, Args)]
pub struct StepArgs {
    /// `mlp`, `cnn` (the reference models of bench/reference/), `vit` (mnist-vit) or a preset name.
    #[arg(long, default_value = "mlp")]
    pub model: String,
    /// Training method.
    #[arg(long, value_enum, default_value = "sll")]
    pub method: Method,
    /// Minibatch size [default: 128 for mlp, 64 for cnn].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Timed steps per round [default: 20; bench pipeline: 100, each of its rounds
    /// filling and draining the pipeline].
    #[arg(long)]
    pub steps: Option<usize>,
    /// Rounds (the median round counts; rounds of the compared runs alternate).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Untimed warm-up steps.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Intra-op threads (0 = libtorch's default; bench pipeline: of its wide sequential
    /// baseline, 0 = the number of cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Arithmetic of the timed steps: fp32, bf16 (mixed precision) or auto (bf16 where
    /// the machine has it natively).
    #[arg(long, value_enum, default_value = "fp32")]
    pub precision: crate::config::Precision,
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// Override any config key: `--set objective.d0=256` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

impl StepArgs {
    /// What these options ask to time; `steps` unless `--steps` is given.
    pub(super) fn spec(&self, steps: usize) -> StepBenchSpec {
        StepBenchSpec {
            model: self.model.clone(),
            method: self.method,
            batch_size: self.batch_size,
            steps: self.steps.unwrap_or(steps),
            rounds: self.rounds,
            warmup: self.warmup,
            threads: self.threads,
            sets: std::iter::once(format!("train.precision=\"{}\"", self.precision))
                .chain(self.sets.iter().cloned())
                .collect(),
        }
    }
}

impl EpochsArgs {
    /// What these options ask to train and time.
    pub(super) fn spec(&self) -> EpochBenchSpec {
        EpochBenchSpec {
            config: self.config.clone(),
            epochs: self.epochs,
            threads: self.threads,
            data_dir: self.data_dir.clone(),
            sets: self.sets.clone(),
            rounds: self.rounds,
            out: self.out.clone(),
        }
    }
}

impl MemoryArgs {
    /// One measurement per (method, depth), methods outermost.
    pub(super) fn specs(&self) -> Vec<MemorySpec> {
        let mut specs = vec![];
        for &method in &self.methods {
            for &depth in &self.depths {
                specs.push(MemorySpec {
                    model: self.model.clone(),
                    method,
                    depth,
                    batch_size: self.batch_size,
                    threads: self.threads,
                    sets: self.sets.clone(),
                });
            }
        }
        specs
    }
}

impl MemoryOneArgs {
    /// The one measurement these options ask for.
    pub(super) fn spec(&self) -> MemorySpec {
        MemorySpec {
            model: self.model.clone(),
            method: self.method,
            depth: self.depth,
            batch_size: self.batch_size,
            threads: self.threads,
            sets: self.sets.clone(),
        }
    }
}
