//! `sll sweep` options, converted into the library's [`SweepOptions`].

use crate::sweep::SweepOptions;
use clap::Args;
use std::path::PathBuf;

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
