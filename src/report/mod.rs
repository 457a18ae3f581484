//! Reading finished runs: comparing them ([`compare`]) and plotting them ([`plot`]).
//! What a run writes is [`crate::run`]'s ([`crate::run::dir`], [`crate::run::summary`]).

pub mod compare;
pub mod plot;

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// `sll report`: the runs in `dirs` side by side ([`compare::table`]) at `thresholds` (percent;
/// none given: [`compare::default_thresholds`]), and their learning curves drawn into `plot`.
pub fn report(dirs: &[PathBuf], thresholds: &[f64], plot: Option<&Path>) -> Result<()> {
    let runs = dirs
        .iter()
        .map(|dir| compare::RunRecord::load(dir))
        .collect::<Result<Vec<_>>>()?;
    if let Some(bad) = thresholds.iter().find(|t| !(0.0..=100.0).contains(*t)) {
        bail!("--thresholds takes percentages in [0, 100], not {bad}");
    }
    let thresholds = if thresholds.is_empty() {
        compare::default_thresholds(&runs)
    } else {
        thresholds.iter().map(|t| t / 100.0).collect()
    };
    println!("{}", compare::table(&runs, &thresholds)?);
    if let Some(path) = plot {
        plot::learning_curves(&runs, path)?;
        println!("learning curves: {}", path.display());
    }
    Ok(())
}
