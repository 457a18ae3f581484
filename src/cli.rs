//! The `sll` command line: `train`, `eval`, `predict`, `fetch`, `bench`, `report`, `sweep`.
//!
//! The doc comments of the argument structs are clap's `--help` texts, written for the
//! terminal (`[default: ...]`, `<name>`), not as rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use crate::bench::epochs::EpochBenchSpec;
use crate::bench::memory::{self, MemoryMethod, MemorySpec};
use crate::bench::step::StepBenchSpec;
use crate::checkpoint;
use crate::config::{Config, Method, Pipeline, DEFAULT_PRESET};
use crate::data;
use crate::io::{absolute, safe_name};
use crate::predict::TrainedRun;
use crate::report::compare::{self, RunRecord};
use crate::report::Summary;
use crate::sweep::SweepOptions;
use crate::train;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Stochastic Layer-wise Learning: train networks block by block, each with its own
/// local loss, no gradient crossing a block (arXiv 2505.05181).
#[derive(Debug, Parser)]
#[command(name = "sll", version, about)]
pub struct Cli {
    /// What to do (default: train the default preset).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a network (default preset: mnist-mlp with SLL).
    Train(TrainArgs),
    /// Re-evaluate a finished run from its checkpoint.
    Eval(EvalArgs),
    /// Classify image files (PNG, JPEG) or a dataset split with a finished run.
    Predict(PredictArgs),
    /// Download a dataset's official files and verify their checksums.
    Fetch(FetchArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Compare finished runs: final accuracy, time to accuracy, peak memory; plot them.
    Report(ReportArgs),
    /// Train a grid of runs (resumable: run it again to continue) and tabulate them.
    Sweep(SweepArgs),
}

/// `sll sweep` options (see `crate::sweep`).
#[derive(Debug, Args)]
pub struct SweepArgs {
    /// Sweep folder: sweep.toml, runs/<name>/, logs/<name>.log, results.{md,csv,png}.
    #[arg(long)]
    pub out: PathBuf,
    /// TOML file: `config = "preset"`, a `[set]` table for every run, a `[grid]` table
    /// of dotted config keys and arrays of values.
    #[arg(long, value_name = "GRID.toml")]
    pub grid_file: Option<PathBuf>,
    /// A varied key and its values, e.g. `train.method=sll,local` or
    /// `model.hidden=[64,64],[128,128]` (repeatable: the runs are the cartesian product).
    #[arg(long = "grid", value_name = "SECTION.KEY=V1,V2,...")]
    pub grid: Vec<String>,
    /// Override a config key in every run (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
    /// Base config file or preset name [default: mnist-mlp].
    #[arg(long, value_name = "PRESET|FILE")]
    pub config: Option<String>,
    /// Data folder of the runs [default: that of `sll train`].
    #[arg(long)]
    pub data_dir: Option<String>,
    /// Runs trained at once (each a child process).
    #[arg(long, default_value_t = 1)]
    pub jobs: usize,
    /// Intra-op threads of each new run [default: the cores divided by --jobs].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Train only the points with one of these values of a grid key, e.g.
    /// `--only model.modules=16` (repeatable: every one must match); the others wait
    /// for a later invocation and keep their place in the results.
    #[arg(long = "only", value_name = "SECTION.KEY=V1,V2,...")]
    pub only: Vec<String>,
    /// Print the planned runs (new, to resume, finished, diverged) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Train nothing: rebuild results.md, results.csv and results.png from the runs.
    #[arg(
        long,
        conflicts_with_all = ["grid_file", "grid", "sets", "config", "data_dir", "jobs", "threads", "dry_run", "only"]
    )]
    pub report_only: bool,
    /// Grid key on the x axis of results.png [default: model.modules if varied, else the
    /// first numeric grid key].
    #[arg(long = "x", value_name = "KEY")]
    pub x: Option<String>,
}

impl From<SweepArgs> for SweepOptions {
    fn from(args: SweepArgs) -> Self {
        SweepOptions {
            out: args.out,
            grid_file: args.grid_file,
            grid: args.grid,
            sets: args.sets,
            config: args.config,
            data_dir: args.data_dir,
            jobs: args.jobs,
            threads: args.threads,
            only: args.only,
            dry_run: args.dry_run,
            report_only: args.report_only,
            x: args.x,
        }
    }
}

/// `sll report` options.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directories written by `sll train`.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Accuracy thresholds in percent, comma-separated [default: the three highest of
    /// 50,60,70,80,85,90,95,97,98,99 that some run reached].
    #[arg(long, value_delimiter = ',')]
    pub thresholds: Vec<f64>,
    /// Also draw the learning curves (accuracy by epoch and by wall time) into this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

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
    /// Print one JSON object instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// Override any config key: `--set objective.d0=256` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

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
        conflicts_with_all = ["config", "method", "seed", "data_dir", "out", "threads", "pipeline", "stages", "replicas", "stage_devices", "device", "sets"]
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
    /// Override any config key: `--set objective.d0=256` (repeatable).
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    pub sets: Vec<String>,
}

/// `sll eval` options.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run directory written by `sll train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Data folder, if not the one recorded in the run's config.
    #[arg(long)]
    pub data_dir: Option<String>,
}

/// `sll predict` options.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Run directory written by `sll train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Image files to classify (PNG or JPEG; centre-cropped to a square and resized to
    /// the run's input, grey-scale for MNIST-like runs).
    pub files: Vec<PathBuf>,
    /// Classify the first `--first` examples of this split of the run's dataset instead
    /// (`test` or `train`).
    #[arg(long, conflicts_with = "files")]
    pub split: Option<String>,
    /// Examples of `--split` to classify.
    #[arg(long, default_value_t = 10, requires = "split")]
    pub first: usize,
    /// Classes to print per input, most probable first.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// One JSON object per input instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// Data folder, if not the one recorded in the run's config (for `--split`, and
    /// an image folder's class names).
    #[arg(long)]
    pub data_dir: Option<String>,
}

/// `sll fetch` options.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Dataset name (mnist, fashion-mnist, cifar10, cifar100, imagenette).
    pub dataset: String,
    /// Folder to put `<dataset>/` in.
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Base URL to download from instead of the official mirror.
    #[arg(long)]
    pub mirror: Option<String>,
}

/// Parses the command line and runs it.
pub fn main() -> Result<()> {
    match Cli::parse().command {
        None => train_command(TrainArgs::default()).map(|_| ()),
        Some(Command::Train(args)) => train_command(args).map(|_| ()),
        Some(Command::Eval(args)) => eval_command(&args).map(|_| ()),
        Some(Command::Predict(args)) => predict_command(&args),
        Some(Command::Fetch(args)) => {
            data::fetch::fetch(&args.dataset, &args.data_dir, args.mirror.as_deref())
        }
        Some(Command::Bench(BenchCommand::Step(args))) => bench_step_command(&args),
        Some(Command::Bench(BenchCommand::Pipeline(args))) => bench_pipeline_command(&args),
        Some(Command::Bench(BenchCommand::Epochs(args))) => {
            let result = crate::bench::epochs::run(&EpochBenchSpec {
                config: args.config,
                epochs: args.epochs,
                threads: args.threads,
                data_dir: args.data_dir,
                sets: args.sets,
                rounds: args.rounds,
                out: args.out,
            })?;
            if args.json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                result.print();
            }
            Ok(())
        }
        Some(Command::Bench(BenchCommand::Flops(args))) => {
            let result = crate::bench::flops::run(&step_spec(&args, 20))?;
            if args.json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                result.print();
            }
            Ok(())
        }
        Some(Command::Report(args)) => report_command(&args),
        Some(Command::Sweep(args)) => crate::sweep::command(&args.into()),
        Some(Command::Bench(BenchCommand::Memory(args))) => bench_memory_command(&args),
        Some(Command::Bench(BenchCommand::MemoryOne(args))) => {
            let spec = MemorySpec {
                model: args.model,
                method: args.method,
                depth: args.depth,
                batch_size: args.batch_size,
                threads: args.threads,
                sets: args.sets,
            };
            println!("{}", serde_json::to_string(&memory::measure(&spec)?)?);
            Ok(())
        }
    }
}

fn report_command(args: &ReportArgs) -> Result<()> {
    let runs = args
        .runs
        .iter()
        .map(|dir| RunRecord::load(dir))
        .collect::<Result<Vec<_>>>()?;
    if let Some(bad) = args.thresholds.iter().find(|t| !(0.0..=100.0).contains(*t)) {
        anyhow::bail!("--thresholds takes percentages in [0, 100], not {bad}");
    }
    let thresholds = if args.thresholds.is_empty() {
        compare::default_thresholds(&runs)
    } else {
        args.thresholds.iter().map(|t| t / 100.0).collect()
    };
    println!("{}", compare::table(&runs, &thresholds)?);
    if let Some(path) = &args.plot {
        crate::report::plot::learning_curves(&runs, path)?;
        println!("learning curves: {}", path.display());
    }
    Ok(())
}

fn bench_pipeline_command(args: &PipelineArgs) -> Result<()> {
    let spec = step_spec(&args.bench, 100);
    let result = crate::bench::pipeline::run(&spec, args.stages)?;
    if args.bench.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        result.print();
    }
    Ok(())
}

fn bench_memory_command(args: &MemoryArgs) -> Result<()> {
    if args.depths.is_empty() || args.methods.is_empty() {
        anyhow::bail!("--depths and --methods must each name at least one value");
    }
    let mut results = vec![];
    for &method in &args.methods {
        for &depth in &args.depths {
            let spec = MemorySpec {
                model: args.model.clone(),
                method,
                depth,
                batch_size: args.batch_size,
                threads: args.threads,
                sets: args.sets.clone(),
            };
            let result = memory::run_isolated(&spec)?;
            if args.json {
                println!("{}", serde_json::to_string(&result)?);
            } else {
                eprintln!("measured {} at depth {depth}", method.name());
            }
            results.push(result);
        }
    }
    if !args.json {
        memory::print_table(&results);
    }
    if let Some(path) = &args.plot {
        crate::report::plot::memory_vs_depth(&results, path)?;
    }
    Ok(())
}

/// What `args` ask to time; `steps` unless `--steps` is given.
fn step_spec(args: &StepArgs, steps: usize) -> StepBenchSpec {
    StepBenchSpec {
        model: args.model.clone(),
        method: args.method,
        batch_size: args.batch_size,
        steps: args.steps.unwrap_or(steps),
        rounds: args.rounds,
        warmup: args.warmup,
        threads: args.threads,
        sets: args.sets.clone(),
    }
}

fn bench_step_command(args: &StepArgs) -> Result<()> {
    let result = crate::bench::step::run(&step_spec(args, 20))?;
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        result.print();
    }
    Ok(())
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
    flag("data.dir", args.data_dir.as_ref().map(|d| format!("{d:?}")));
    Config::load(Some(args.config.as_deref().unwrap_or(DEFAULT_PRESET)), &sets)
}

/// `sll train`: trains and returns the run directory and its summary (`None` on MPI
/// ranks other than 0, which leave the run directory to rank 0).
pub fn train_command(args: TrainArgs) -> Result<(PathBuf, Option<Summary>)> {
    if let Some(dir) = &args.resume {
        train::interrupt::install();
        let summary = train::resume(dir, args.epochs)?;
        println!("run directory: {}", dir.display());
        return Ok((dir.clone(), Some(summary)));
    }
    let mut config = resolve_train_config(&args)?;
    // A run reads its data from wherever it is started again (`--resume`, `sll eval`).
    config.data.dir = absolute(&config.data.dir);
    let out = args.out.clone().unwrap_or_else(|| {
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
        let name = format!("{stamp}-{}-{}", config.preset, config.train.method);
        PathBuf::from("runs").join(safe_name(&name))
    });
    if config.train.pipeline != Pipeline::Mpi {
        train::interrupt::install();
    }
    let summary = train::run_rank(config, &out)?;
    if summary.is_some() {
        println!("run directory: {}", out.display());
    }
    Ok((out, summary))
}

/// `sll predict`: the run's final classifier on image files or a dataset split, the
/// top classes of each input with their probabilities.
fn predict_command(args: &PredictArgs) -> Result<()> {
    if args.files.is_empty() && args.split.is_none() {
        anyhow::bail!("give image files to classify, or --split test|train");
    }
    let run = TrainedRun::load(&args.run, args.data_dir.as_deref())?;
    let predictions = match &args.split {
        Some(split) => run.classify_split(split, args.first, args.top)?,
        None => run.classify_files(&args.files, args.top)?,
    };
    for p in &predictions {
        if args.json {
            let top: Vec<_> = p
                .top
                .iter()
                .map(|&(c, prob)| serde_json::json!({"class": run.class_name(c), "index": c, "probability": prob}))
                .collect();
            let label = p
                .label
                .map(|l| serde_json::json!({"class": run.class_name(l), "index": l}));
            println!(
                "{}",
                serde_json::json!({"input": p.input, "label": label, "top": top})
            );
        } else {
            let top: Vec<String> = p
                .top
                .iter()
                .map(|&(c, prob)| format!("{} ({:.2} %)", run.class_name(c), 100.0 * prob))
                .collect();
            let label = p
                .label
                .map_or(String::new(), |l| format!(" (label {})", run.class_name(l)));
            println!("{}{label}: {}", p.input, top.join(", "));
        }
    }
    Ok(())
}

/// `sll eval`: rebuilds the run's model from `config.toml`, loads `model.safetensors`,
/// evaluates it on the test set and compares with `summary.json`: an error when the
/// weights hold a NaN or an infinity, or when the accuracy differs from the recorded one.
pub fn eval_command(args: &EvalArgs) -> Result<train::model::Evaluation> {
    let run = &args.run;
    let TrainedRun {
        mut config,
        model,
        device,
        ..
    } = TrainedRun::load(run, args.data_dir.as_deref())?;
    let (_, test) = train::prepare_data(&mut config, device)?;
    let weights = run.join("model.safetensors");
    let eval = model.evaluate(&test, config.data.eval_batch_size);
    for (i, a) in eval.block_accuracy.iter().enumerate() {
        if let Some(a) = a {
            println!("block {} head accuracy: {:.2}%", i + 1, 100.0 * a);
        }
    }
    println!(
        "test accuracy: {:.2}% ({} test examples)",
        100.0 * eval.accuracy,
        test.len()
    );
    let epoch: Option<usize> = checkpoint::read_metadata(&weights)?
        .get("epoch")
        .and_then(|e| e.parse().ok());
    let recorded = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<crate::report::EpochMetrics>(line).ok())
        .find(|m| Some(m.epoch) == epoch);
    if let Some(recorded) = recorded {
        if recorded.test_accuracy != eval.accuracy {
            anyhow::bail!(
                "{}: re-evaluated test accuracy {:.4}% differs from the {:.4}% recorded after epoch {} in metrics.jsonl",
                run.display(),
                100.0 * eval.accuracy,
                100.0 * recorded.test_accuracy,
                recorded.epoch
            );
        }
        println!(
            "recorded test accuracy after epoch {}: {:.2}% (identical)",
            recorded.epoch,
            100.0 * recorded.test_accuracy
        );
    }
    Ok(eval)
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use crate::config::PRESETS;
    use clap::CommandFactory;

    /// `sll train --help` names every shipped preset, so the list cannot fall behind.
    #[test]
    fn train_help_names_every_preset() {
        let cli = Cli::command();
        let train = cli.find_subcommand("train").expect("train subcommand");
        let config = train
            .get_arguments()
            .find(|a| a.get_id() == "config")
            .expect("--config");
        let help = config.get_long_help().or(config.get_help()).unwrap();
        let help = help.to_string();
        for (name, _) in PRESETS {
            assert!(
                help.split(|c: char| !(c.is_alphanumeric() || c == '-'))
                    .any(|w| w == *name),
                "--config help does not name preset {name}: {help}"
            );
        }
    }
}
