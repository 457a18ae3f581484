//! `sll sweep`: a grid of runs that survives the end of a session.
//!
//! A sweep folder `DIR` holds `sweep.toml` (the base config, the `--set` pairs applied to
//! every run and the grid: config keys and the values each takes), one run directory
//! per grid point in `runs/<name>` (exactly what `sll train` writes there), the output
//! of each run's training in `logs/<name>.log`, and the results: `results.md`,
//! `results.csv` and `results.png`.
//!
//! Every invocation plans each grid point from what its run directory holds: none yet
//! (a new run), a finished summary (skipped), a diverged one (a result: not retried),
//! anything else (continued with `sll train --resume`). So `sll sweep --out DIR` again
//! continues a sweep that was interrupted, killed or left behind by a session that
//! ended, and does nothing more once every run is finished. The grid of a folder never
//! changes: later invocations may repeat it (it must then be identical) or leave it out.
//!
//! Runs are child processes of the same binary, in the sweep's own process group, so
//! that Ctrl-C reaches them as it reaches the sweep: each writes its checkpoint and
//! stops, and the sweep waits for them. A lock on `sweep.lock`, inherited by the
//! children, keeps a second sweep out of the folder while any of them lives.
//!
//! The parts, in the order an invocation goes through them: `grid` (config keys, their
//! values and the points they span), `definition` (the request of the command line and
//! a grid file, settled into the folder's `sweep.toml`), `naming` (a run directory name
//! per point), `plan` (what each run directory holds and so what is done with it),
//! `execution` (the runs as child processes, their interrupts and outcomes), `results`
//! (`results.md`, `results.csv`) and `plot` (`results.png`).

mod definition;
mod execution;
mod grid;
mod naming;
mod plan;
mod plot;
mod results;
#[cfg(test)]
mod tests;

pub use definition::{parse_grid_file, request, Request, Sweep, MAX_RUNS, SWEEP_FILE};
pub use grid::{parse_grid_arg, parse_value, plain, product, split_values, Axis, VARIANT};
pub use naming::run_names;
pub use plan::{points, state, Point, State};
pub use results::{csv, markdown, row, Row};

use crate::io::write_atomic;
use anyhow::{anyhow, bail, Context, Result};
use std::path::PathBuf;

/// What one invocation of `sll sweep` asks for (its command-line options).
#[derive(Debug, Clone, PartialEq)]
pub struct SweepOptions {
    /// Sweep folder: `sweep.toml`, `runs/<name>/`, `logs/<name>.log`, the results.
    pub out: PathBuf,
    /// A grid file: `config`, `data_dir`, `[set]`, `[grid]` and `exclude`.
    pub grid_file: Option<PathBuf>,
    /// Varied keys and their values, each `section.key=v1,v2,...`.
    pub grid: Vec<String>,
    /// `section.key=value` applied to every run.
    pub sets: Vec<String>,
    /// Base config: a preset name or a config file (`None`: the grid file's, else the
    /// default preset).
    pub config: Option<String>,
    /// Data folder of new runs (`None`: the grid file's, else `sll train`'s default).
    pub data_dir: Option<String>,
    /// Runs trained at once (at least 1).
    pub jobs: usize,
    /// Intra-op threads of each new run (`None`: the cores divided by `jobs`).
    pub threads: Option<usize>,
    /// `section.key=v1,v2,...`: train only the points with one of these values of
    /// each key; the others are left for a later invocation.
    pub only: Vec<String>,
    /// Print the plan and write nothing.
    pub dry_run: bool,
    /// Train nothing: rebuild the results from the runs.
    pub report_only: bool,
    /// Grid key on the x axis of `results.png` (`None`: `model.modules` if varied,
    /// else the first numeric grid key).
    pub x: Option<String>,
}

/// `sll sweep`: settles the sweep in `options.out`, plans each grid point from its run
/// directory, trains those left to train (or prints the plan) and writes the results.
pub fn command(options: &SweepOptions) -> Result<()> {
    let dir = &options.out;
    if options.report_only {
        let sweep = Sweep::read(dir)?
            .ok_or_else(|| anyhow!("{} holds no {SWEEP_FILE}: not a sweep folder", dir.display()))?;
        return write_results(&sweep, dir, options.x.as_deref());
    }
    if options.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let (sweep, new) = Sweep::settle(request(options)?, Sweep::read(dir)?, dir)?;
    if let Some(x) = &options.x {
        plot::x_axis(&sweep.grid, Some(x))?;
    }
    let threads = plan::threads(options);
    let plan = plan::plan(&sweep, dir, &options.only)?;
    plan::check_configs(&sweep, &plan, threads)?;
    if options.dry_run {
        return plan::dry_run(&sweep, dir, &plan, threads);
    }
    std::fs::create_dir_all(dir.join("runs"))
        .with_context(|| format!("cannot create {}", dir.join("runs").display()))?;
    let _lock = execution::lock(dir)?;
    if new {
        write_atomic(&dir.join(SWEEP_FILE), sweep.to_toml()?.as_bytes())?;
    }
    let outcomes = execution::run(&sweep, dir, &plan, options.jobs, threads)?;
    if let Err(e) = write_results(&sweep, dir, options.x.as_deref()) {
        eprintln!("warning: cannot write the results: {}", crate::one_line_error(&e));
    }
    execution::conclude(&outcomes, dir)
}

/// Writes `results.md`, `results.csv` and (with a numeric grid key) `results.png`.
pub fn write_results(sweep: &Sweep, dir: &std::path::Path, x: Option<&str>) -> Result<()> {
    let rows: Vec<Row> = plan::points(sweep, dir).iter().map(row).collect();
    crate::io::write_atomic(&dir.join("results.md"), markdown(sweep, &rows).as_bytes())?;
    crate::io::write_atomic(&dir.join("results.csv"), csv(sweep, &rows).as_bytes())?;
    let png = dir.join("results.png");
    match plot::draw(sweep, &rows, x, &png)? {
        Some(why) => println!(
            "results: {}, {} ({why}: {} not drawn)",
            dir.join("results.md").display(),
            dir.join("results.csv").display(),
            png.display()
        ),
        None => println!(
            "results: {}, {}, {}",
            dir.join("results.md").display(),
            dir.join("results.csv").display(),
            png.display()
        ),
    }
    Ok(())
}
