//! Reading finished runs: comparing them ([`compare`]) and plotting them ([`plot`]).
//! What a run writes is [`crate::run`]'s ([`crate::run::dir`], [`crate::run::summary`]).

pub mod compare;
pub mod plot;

use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

/// `sll report`: the runs in `dirs` side by side ([`compare::table`]) at `thresholds` (percent;
/// none given: [`compare::default_thresholds`]), their learning curves drawn into `plot`,
/// their accuracy against training FLOPs into `flops_plot`.
pub fn report(
    dirs: &[PathBuf],
    thresholds: &[f64],
    plot: Option<&Path>,
    flops_plot: Option<&Path>,
) -> Result<()> {
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
    if let Some(path) = flops_plot {
        let series: Vec<(String, Vec<(f64, f64)>)> = runs
            .iter()
            .filter_map(|r| {
                let flops = r.summary.train_flops_per_example?;
                Some((r.label(), vec![(flops / 1e6, 100.0 * r.summary.test_accuracy)]))
            })
            .collect();
        if let Some(r) = runs.iter().find(|r| r.summary.train_flops_per_example.is_none()) {
            eprintln!(
                "warning: {} records no FLOPs (written before they were recorded): not in the plot",
                r.dir.display()
            );
        }
        if series.is_empty() {
            bail!("--flops-plot: no run records its training FLOPs");
        }
        plot::sweep_accuracy(
            &series,
            "counted training MFLOP per example and step",
            "test accuracy against training FLOPs",
            path,
        )?;
        println!("accuracy against FLOPs: {}", path.display());
    }
    Ok(())
}
