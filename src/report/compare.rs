//! `sll report RUN_DIR...`: several finished runs side by side (method, final
//! accuracy, wall time to accuracy thresholds, peak memory), from their
//! `summary.json` and `metrics.jsonl`.

use crate::run::metrics::EpochMetrics;
use crate::run::summary::Summary;
use crate::run::time_to_accuracy::{time_to_accuracy, wall_times, THRESHOLDS};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A finished run read back from its directory.
#[derive(Debug, Clone)]
pub struct RunRecord {
    /// The run directory.
    pub dir: PathBuf,
    /// Its `summary.json`.
    pub summary: Summary,
    /// Its `metrics.jsonl`, one entry per epoch.
    pub metrics: Vec<EpochMetrics>,
}

impl RunRecord {
    /// Reads `summary.json` and `metrics.jsonl` of the run in `dir`.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("summary.json");
        let text = crate::io::read_text(&path).map_err(|e| anyhow::anyhow!("{e} (is it a finished run?)"))?;
        let summary =
            serde_json::from_str(&text).with_context(|| format!("{} is not a summary", path.display()))?;
        let path = dir.join("metrics.jsonl");
        let text = crate::io::read_text(&path)?;
        let metrics = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .with_context(|| format!("{} line {} is not an epoch", path.display(), i + 1))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            dir: dir.to_path_buf(),
            summary,
            metrics,
        })
    }

    /// The run's name in tables and legends: its directory's last component.
    pub fn label(&self) -> String {
        self.dir.file_name().map_or_else(
            || self.dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    /// Wall seconds since the start of training at the end of each epoch.
    pub fn wall_times(&self) -> Vec<f64> {
        wall_times(&self.metrics)
    }
}

/// The thresholds a table shows when none are given: the three highest of
/// [`THRESHOLDS`] that at least one run reached (or the lowest one).
pub fn default_thresholds(runs: &[RunRecord]) -> Vec<f64> {
    let best = runs
        .iter()
        .flat_map(|r| r.metrics.iter().map(|m| m.test_accuracy))
        .fold(0.0, f64::max);
    let reached: Vec<f64> = THRESHOLDS.iter().copied().filter(|&t| t <= best).collect();
    match reached.len() {
        0 => vec![THRESHOLDS[0]],
        n => reached[n.saturating_sub(3)..].to_vec(),
    }
}

/// The side-by-side table of `runs`: method, final accuracy, wall time to each of
/// `thresholds` (percent; "-" where never reached), training time, peak RSS.
pub fn table(runs: &[RunRecord], thresholds: &[f64]) -> Result<String> {
    if runs.is_empty() {
        bail!("no run directories given");
    }
    let mut header = vec!["run".to_string(), "method".into(), "final acc".into()];
    header.extend(
        thresholds
            .iter()
            .map(|t| format!("time to {}%", (1e4 * t).round() / 100.0)),
    );
    header.extend(["train s".into(), "peak RSS MiB".into()]);
    let mut rows = vec![header];
    for run in runs {
        let times = time_to_accuracy(&run.metrics, thresholds);
        let mut row = vec![
            run.label(),
            run.summary.method.clone(),
            format!("{:.2}%", 100.0 * run.summary.test_accuracy),
        ];
        row.extend(thresholds.iter().map(|&t| {
            times
                .iter()
                .find(|x| x.threshold == t)
                .map_or("-".to_string(), |x| {
                    format!("{:.1} s (ep {})", x.wall_seconds, x.epoch)
                })
        }));
        row.push(format!("{:.1}", run.summary.train_seconds));
        row.push(format!(
            "{:.0}",
            run.summary.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        ));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let cells: Vec<String> = r
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| {
                    if c == 0 {
                        format!("{cell:<w$}")
                    } else {
                        format!("{cell:>w$}")
                    }
                })
                .collect();
            cells.join("  ")
        })
        .collect();
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loading_a_folder_without_a_run_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = RunRecord::load(dir.path()).unwrap_err();
        assert!(format!("{e:#}").contains("summary.json"), "{e:#}");
    }
}
