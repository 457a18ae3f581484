//! `sll train` options, and the config they resolve to.

use crate::config::{Config, Method, Pipeline, DEFAULT_PRESET};
use crate::launch;
use crate::run::summary::Summary;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `sll train` options; each overrides the config.
#[derive(Debug, Args, Default)]
pub struct TrainArgs {
    /// Config file, or a preset name: mnist-mlp, mnist-mlp4, fashion-mnist-mlp, mnist-vit, cifar10-vgg,
    /// cifar10-resnet, cifar10-resnet32, cifar10-vit, imagefolder-resnet; the GPU-sized
    /// ones end in -full (cifar10-vgg-full, cifar10-resnet-full, cifar10-resnet32-full,
    /// cifar10-vit-full, imagefolder-resnet-full).
    #[arg(long)]
    pub config: Option<String>,
    /// Training method.
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Number of epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Run seed (initialisation, shuffling, dropout, projections).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Folder holding `<dataset>/<official files>` [default: data].
    #[arg(long)]
    pub data_dir: Option<String>,
    /// Run directory, new or empty [default: `runs/<timestamp>-<preset>-<method>`].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the interrupted run in this directory from its last checkpoint, with
    /// the run's own config.toml (only --epochs may change it: a longer run).
    #[arg(
        long,
        value_name = "RUN_DIR",
        conflicts_with_all = ["config", "method", "seed", "data_dir", "out", "threads", "pipeline", "stages", "replicas", "stage_devices", "device", "precision", "sets"]
    )]
    pub resume: Option<PathBuf>,
    /// Intra-op threads (0 = libtorch's default); per stage with a pipeline.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Block scheduling: none (block after block), threads (concurrent stages) or mpi
    /// (one stage per MPI rank; run under mpirun, build with `--features mpi`).
    #[arg(long, value_enum)]
    pub pipeline: Option<Pipeline>,
    /// Pipeline stages, each a run of consecutive blocks (0 = one per block; with mpi,
    /// the ranks / replicas).
    #[arg(long)]
    pub stages: Option<usize>,
    /// Data-parallel replicas of each MPI stage (ranks = stages × replicas).
    #[arg(long)]
    pub replicas: Option<usize>,
    /// Device of each thread-pipeline stage, e.g. `cuda:0,cuda:1`.
    #[arg(long, value_delimiter = ',')]
    pub stage_devices: Option<Vec<String>>,
    /// Device: cpu, cuda, cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Arithmetic: fp32, bf16 (mixed precision) or auto (bf16 where the device has it
    /// natively) [default: the config's, auto in every preset].
    #[arg(long, value_enum)]
    pub precision: Option<crate::config::Precision>,
    /// Override any config key: `--set objective.d0=256` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

/// The config `sll train` would run with these arguments.
pub fn resolve_train_config(args: &TrainArgs) -> Result<Config> {
    let mut sets = args.sets.clone();
    let mut flag = |key: &str, value: Option<String>| {
        if let Some(v) = value {
            sets.push(format!("{key}={v}"));
        }
    };
    flag("train.method", args.method.map(|m| format!("\"{m}\"")));
    flag("train.epochs", args.epochs.map(|e| e.to_string()));
    flag("train.seed", args.seed.map(|s| s.to_string()));
    flag("train.threads", args.threads.map(|t| t.to_string()));
    flag("train.pipeline", args.pipeline.map(|p| format!("\"{p}\"")));
    flag("train.stages", args.stages.map(|k| k.to_string()));
    flag("train.replicas", args.replicas.map(|r| r.to_string()));
    flag(
        "train.stage_devices",
        args.stage_devices.as_ref().map(|d| format!("{d:?}")),
    );
    flag("train.device", args.device.as_ref().map(|d| format!("{d:?}")));
    flag("train.precision", args.precision.map(|p| format!("\"{p}\"")));
    flag("data.dir", args.data_dir.as_ref().map(|d| format!("{d:?}")));
    Config::load(Some(args.config.as_deref().unwrap_or(DEFAULT_PRESET)), &sets)
}

/// `sll train`: trains (see [`launch::new_run`], [`launch::resume`]) and returns the run
/// directory and its summary (`None` on MPI ranks other than 0, which leave the run
/// directory to rank 0).
pub fn train_command(args: TrainArgs) -> Result<(PathBuf, Option<Summary>)> {
    match &args.resume {
        Some(dir) => launch::resume(dir, args.epochs),
        None => launch::new_run(resolve_train_config(&args)?, args.out.clone()),
    }
}
