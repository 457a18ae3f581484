//! How `sll train` starts its runs: a new run in its run directory (by default one
//! named after the time, the preset and the method), or an interrupted run continued
//! from its last checkpoint.

use crate::config::{Config, Pipeline};
use crate::io::{absolute, safe_name};
use crate::run::summary::Summary;
use anyhow::Result;
use std::path::{Path, PathBuf};

/// Trains `config` in the run directory `out` (`None`: `runs/<timestamp>-<preset>-<method>`),
/// interrupts handled (but under MPI); returns the run directory and its summary
/// (`None` on MPI ranks other than 0, which leave the run directory to rank 0).
pub fn new_run(mut config: Config, out: Option<PathBuf>) -> Result<(PathBuf, Option<Summary>)> {
    // A run reads its data from wherever it is started again (`--resume`, `sll eval`).
    config.data.dir = absolute(&config.data.dir);
    let out = out.unwrap_or_else(|| {
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
        let name = format!("{stamp}-{}-{}", config.preset, config.train.method);
        PathBuf::from("runs").join(safe_name(&name))
    });
    if config.train.pipeline != Pipeline::Mpi {
        crate::run::interrupt::install();
    }
    let summary = crate::run::run_rank(config, &out)?;
    if summary.is_some() {
        println!("run directory: {}", out.display());
    }
    Ok((out, summary))
}

/// Continues the interrupted run in `dir` from its last checkpoint, with the run's own
/// config (`epochs`: a longer run), interrupts handled; returns `dir` and the summary.
pub fn resume(dir: &Path, epochs: Option<usize>) -> Result<(PathBuf, Option<Summary>)> {
    crate::run::interrupt::install();
    let summary = crate::run::resume(dir, epochs)?;
    println!("run directory: {}", dir.display());
    Ok((dir.to_path_buf(), Some(summary)))
}
