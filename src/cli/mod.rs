//! The `sll` command line: `train`, `eval`, `predict`, `fetch`, `bench`, `report`, `sweep`.
//!
//! The doc comments of the argument structs are clap's `--help` texts, written for the
//! terminal (`[default: ...]`, `<name>`), not as rustdoc markup.
//!
//! The argument structs live by command (`train`, `runs`: eval, predict and report,
//! `bench`, `sweep`); each command is one call into the library.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod bench;
mod runs;
mod sweep;
mod train;

pub use bench::{BenchCommand, EpochsArgs, MemoryArgs, MemoryOneArgs, PipelineArgs, StepArgs};
pub use runs::{eval_command, EvalArgs, PredictArgs, ReportArgs};
pub use sweep::SweepArgs;
pub use train::{resolve_train_config, train_command, TrainArgs};

use crate::bench::{epochs, flops, memory, pipeline, step};
use crate::{data, predict};
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
    /// Write an image folder once at a training size (shorter side), so that runs
    /// decode small images.
    Prepare(PrepareArgs),
}

/// `sll prepare` options.
#[derive(Debug, Args)]
pub struct PrepareArgs {
    /// The image folder (`train/<class>/`, `val/<class>/`).
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Side the shorter side of each image is brought down to.
    #[arg(long)]
    pub size: u32,
    /// Folder to write (new or empty) [default: `<data-dir>-<size>px`].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Files that do not decode: `error` (name the file and its class) or `skip`.
    #[arg(long, default_value = "error")]
    pub bad_files: crate::data::BadFiles,
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
        Some(Command::Predict(args)) => predict::print_predictions(
            &args.run,
            args.data_dir.as_deref(),
            &args.inputs()?,
            args.top,
            args.json,
        ),
        Some(Command::Fetch(args)) => {
            data::fetch::fetch(&args.dataset, &args.data_dir, args.mirror.as_deref())
        }
        Some(Command::Bench(command)) => bench_command(command),
        Some(Command::Report(args)) => crate::report::report(
            &args.runs,
            &args.thresholds,
            args.plot.as_deref(),
            args.flops_plot.as_deref(),
        ),
        Some(Command::Sweep(args)) => crate::sweep::command(&args.into()),
        Some(Command::Prepare(args)) => prepare(&args),
    }
}

/// `sll prepare` (see [`crate::data::resized::prepare_folder`]).
fn prepare(args: &PrepareArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(|| {
        let name = args
            .data_dir
            .file_name()
            .map_or_else(|| "images".into(), |n| n.to_string_lossy().into_owned());
        args.data_dir.with_file_name(format!("{name}-{}px", args.size))
    });
    let prepared = crate::data::resized::prepare_folder(&args.data_dir, &out, args.size, args.bad_files)?;
    println!(
        "prepared {} images at {} px (shorter side) in {}{}; train with --data-dir {}",
        prepared.written,
        args.size,
        out.display(),
        match prepared.skipped.len() {
            0 => String::new(),
            n => format!(", {n} left out (the first: {})", prepared.skipped[0]),
        },
        out.display()
    );
    Ok(())
}

/// `sll bench ...`.
fn bench_command(command: BenchCommand) -> Result<()> {
    match command {
        BenchCommand::Step(args) => show(&step::run(&args.spec(20))?, args.json, |r| r.print()),
        BenchCommand::Memory(args) => memory::run_all(&args.specs(), args.json, args.plot.as_deref()),
        BenchCommand::Flops(args) => show(&flops::run(&args.spec(20))?, args.json, |r| r.print()),
        BenchCommand::MemoryOne(args) => {
            println!("{}", serde_json::to_string(&memory::measure(&args.spec())?)?);
            Ok(())
        }
        BenchCommand::Pipeline(args) => show(
            &pipeline::run(&args.bench.spec(100), args.stages)?,
            args.bench.json,
            |r| r.print(),
        ),
        BenchCommand::Epochs(args) => show(&epochs::run(&args.spec())?, args.json, |r| r.print()),
    }
}

/// Prints a bench's result: one JSON object with `--json`, else its text.
fn show<T: serde::Serialize>(result: &T, json: bool, text: impl FnOnce(&T)) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(result)?);
    } else {
        text(result);
    }
    Ok(())
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
