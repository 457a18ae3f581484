//! The plan of an invocation: the grid points, what each run directory holds and so
//! what is done with it (trained anew, resumed, skipped, left for later), the `sll
//! train` arguments of each run, and `--dry-run`'s listing of it.

use super::definition::{Sweep, SWEEP_FILE};
use super::grid::{describe_grid, describe_sets, flatten, parse_grid_arg, plain, product, Axis, VARIANT};
use super::naming::run_names;
use super::SweepOptions;
use crate::config::Config;
use crate::run::summary::{RunStatus, Summary};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use toml::Value;

/// One grid point.
#[derive(Debug, Clone)]
pub struct Point {
    /// Its run directory's name.
    pub name: String,
    /// One value per grid axis.
    pub values: Vec<Value>,
    /// Its run directory.
    pub dir: PathBuf,
    /// The log of its training.
    pub log: PathBuf,
}

/// Whether a point with `values` on `grid` has every pair of `pairs`.
fn has_all(grid: &[Axis], values: &[Value], pairs: &[(String, Value)]) -> bool {
    pairs.iter().all(|(key, value)| {
        grid.iter()
            .zip(values)
            .any(|(axis, v)| axis.key == *key && v == value)
    })
}

/// The grid points of `sweep` in `dir`, in grid order, without the excluded ones (run
/// names are those of the whole grid, so an exclusion renames nothing).
pub fn points(sweep: &Sweep, dir: &Path) -> Vec<Point> {
    let values = product(&sweep.grid);
    let names = run_names(&sweep.grid, &values);
    names
        .into_iter()
        .zip(values)
        .filter(|(_, values)| !sweep.exclude.iter().any(|e| has_all(&sweep.grid, values, e)))
        .map(|(name, values)| Point {
            dir: dir.join("runs").join(&name),
            log: dir.join("logs").join(format!("{name}.log")),
            name,
            values,
        })
        .collect()
}

/// What a point's run directory holds, and so what this invocation does with it.
#[derive(Debug, Clone)]
pub enum State {
    /// No run yet: train it anew.
    New,
    /// An unfinished run (interrupted, killed, not yet summarised): continue it.
    Resume(String),
    /// All its epochs trained: skip it.
    Finished(Box<Summary>),
    /// Stopped by the divergence guard: a result, not retried.
    Diverged(Box<Summary>),
    /// Something that is not a run is in the way.
    Blocked(String),
    /// Still to train, but outside this invocation's `--only`.
    Held,
}

/// Whether `summary` is of a run that trained all its epochs.
pub(super) fn complete(summary: &Summary) -> bool {
    summary.finished_all(summary.epochs)
}

/// What `dir` holds.
pub fn state(dir: &Path) -> State {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return if dir.exists() {
            State::Blocked(format!("{} is not a folder", dir.display()))
        } else {
            State::New
        };
    };
    if entries.flatten().all(|e| crate::io::is_temporary(&e.file_name())) {
        return State::New;
    }
    match crate::run::summary::read_summary(dir) {
        Some(s) if complete(&s) => State::Finished(Box::new(s)),
        Some(s) if s.status == RunStatus::Diverged => State::Diverged(Box::new(s)),
        Some(s) => State::Resume(format!(
            "{} after {} of {} epochs",
            s.status, s.epochs_completed, s.epochs
        )),
        None if dir.join("config.toml").is_file() => State::Resume("not finished".into()),
        None => State::Blocked(format!(
            "{} holds files but no run (no config.toml); move them away",
            dir.display()
        )),
    }
}

/// The plan of `sweep` in `dir`: each grid point, in grid order, with what its run
/// directory holds; a point still to train that `only` (`--only key=v1,v2 ...`) leaves
/// out is held for a later invocation.
pub(super) fn plan(sweep: &Sweep, dir: &Path, only: &[String]) -> Result<Vec<(Point, State)>> {
    let only = only_filter(sweep, only)?;
    Ok(points(sweep, dir)
        .into_iter()
        .map(|p| {
            let s = match state(&p.dir) {
                State::New | State::Resume(_) if !only(&p) => State::Held,
                s => s,
            };
            (p, s)
        })
        .collect())
}

/// `--threads` of new runs: the given number, else the cores shared by the jobs.
pub(super) fn threads(options: &SweepOptions) -> usize {
    options.threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / options.jobs.max(1)).max(1)
    })
}

/// The `sll train` arguments of a point: a new run, or `--resume` of its directory.
pub(super) fn train_args(sweep: &Sweep, point: &Point, threads: usize, state: &State) -> Vec<String> {
    if matches!(state, State::Resume(_)) {
        return vec!["train".into(), "--resume".into(), point.dir.display().to_string()];
    }
    let mut args = vec!["train".into(), "--config".into(), sweep.config.clone()];
    let sets = run_sets(sweep, point);
    let given = |key: &str| {
        sets.iter()
            .any(|s| s.split_once('=').is_some_and(|(k, _)| k == key))
    };
    let explicit_threads = given("train.threads");
    let explicit_data = given("data.dir");
    for set in sets {
        args.extend(["--set".into(), set]);
    }
    if !explicit_threads {
        args.extend(["--threads".into(), threads.to_string()]);
    }
    if let (Some(d), false) = (&sweep.data_dir, explicit_data) {
        args.extend(["--data-dir".into(), d.clone()]);
    }
    args.extend(["--out".into(), point.dir.display().to_string()]);
    args
}

/// The `--set` pairs of a point: the sweep's, then its grid values.
fn run_sets(sweep: &Sweep, point: &Point) -> Vec<String> {
    let mut pairs = sweep.sets.clone();
    for (axis, value) in sweep.grid.iter().zip(&point.values) {
        match value {
            // A `variant` value is a table of keys set together.
            Value::Table(t) if axis.key == VARIANT => {
                flatten("", t, &mut pairs);
            }
            v => pairs.push((axis.key.clone(), v.clone())),
        }
    }
    pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Checks that every new run's config loads (a bad key or value names the run before
/// anything is started).
pub(super) fn check_configs(sweep: &Sweep, plan: &[(Point, State)], threads: usize) -> Result<()> {
    for (point, state) in plan {
        if matches!(state, State::New) {
            let mut sets = run_sets(sweep, point);
            sets.insert(0, format!("train.threads={threads}"));
            Config::load_quietly(Some(&sweep.config), &sets)
                .with_context(|| format!("run {}", point.name))?;
        }
    }
    Ok(())
}

/// `--only key=v1,v2 ...`: which points this invocation trains (all without one).
fn only_filter(sweep: &Sweep, only: &[String]) -> Result<impl Fn(&Point) -> bool> {
    let mut axes: Vec<Axis> = vec![];
    for arg in only {
        let axis = parse_grid_arg(arg)
            .map_err(|e| anyhow!("--only{}", format!("{e:#}").trim_start_matches("--grid")))?;
        let Some(grid_axis) = sweep.grid.iter().find(|a| a.key == axis.key) else {
            bail!(
                "--only {arg}: `{}` is not a grid key of this sweep ({})",
                axis.key,
                describe_grid(&sweep.grid)
            );
        };
        if let Some(v) = axis.values.iter().find(|v| !grid_axis.values.contains(v)) {
            bail!(
                "--only {arg}: {} is not one of the grid's values of `{}`",
                plain(v),
                axis.key
            );
        }
        axes.push(axis);
    }
    let grid = sweep.grid.clone();
    Ok(move |p: &Point| {
        axes.iter().all(|a| {
            grid.iter()
                .zip(&p.values)
                .any(|(g, v)| g.key == a.key && a.values.contains(v))
        })
    })
}

/// `--dry-run`: the plan, nothing written.
pub(super) fn dry_run(sweep: &Sweep, dir: &Path, plan: &[(Point, State)], threads: usize) -> Result<()> {
    println!(
        "sweep {} ({}): {} runs of config {}, set {}",
        dir.display(),
        if dir.join(SWEEP_FILE).is_file() {
            "started already"
        } else {
            "new"
        },
        plan.len(),
        sweep.config,
        describe_sets(&sweep.sets)
    );
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (i, (point, state)) in plan.iter().enumerate() {
        let (kind, what) = match state {
            State::New => (
                "new",
                format!("new: sll {}", train_args(sweep, point, threads, state).join(" ")),
            ),
            State::Resume(why) => (
                "to resume",
                format!(
                    "resume ({why}): sll {}",
                    train_args(sweep, point, threads, state).join(" ")
                ),
            ),
            State::Finished(s) => ("finished", format!("skip, finished ({})", accuracies(s))),
            State::Diverged(s) => (
                "diverged",
                format!("skip, diverged after {} epochs (not retried)", s.epochs_completed),
            ),
            State::Blocked(why) => ("blocked", format!("blocked: {why}")),
            State::Held => ("later", "left for later (outside --only)".to_string()),
        };
        *counts.entry(kind).or_default() += 1;
        println!("[{}/{}] {}: {what}", i + 1, plan.len(), point.name);
    }
    let mut counts: Vec<String> = counts.into_iter().map(|(k, n)| format!("{n} {k}")).collect();
    counts.sort();
    println!("dry run: {}; nothing was written", counts.join(", "));
    Ok(())
}

/// `accuracy` as `12.34%`.
fn percent(accuracy: f64) -> String {
    format!("{:.2}%", 100.0 * accuracy)
}

/// The run's accuracies in one phrase.
pub(super) fn accuracies(s: &Summary) -> String {
    format!(
        "{}/{} epochs, test {}, averaged heads {}, {:.2} min",
        s.epochs_completed,
        s.epochs,
        percent(s.test_accuracy),
        percent(s.ensemble_test_accuracy),
        s.train_seconds / 60.0
    )
}
