//! The results: one row per grid point read from its run directory alone, written as
//! `results.md` (with a matrix for a two-key grid), `results.csv` and `results.png`.

use super::definition::Sweep;
use super::execution::last_error;
use super::grid::{describe_grid, describe_sets, plain};
use super::plan::{complete, Point};
use crate::run::metrics::EpochMetrics;
use crate::run::summary::RunStatus;
use toml::Value;

/// One row of the results: a grid point and what its run directory holds.
#[derive(Debug, Clone)]
pub struct Row {
    /// The run's name.
    pub name: String,
    /// Its grid values.
    pub values: Vec<Value>,
    /// finished, diverged, interrupted, incomplete, failed or not started.
    pub status: String,
    /// Epochs completed.
    pub epochs: Option<usize>,
    /// Test accuracy of the final classifier, in [0, 1].
    pub test: Option<f64>,
    /// Test accuracy of the averaged heads.
    pub ensemble: Option<f64>,
    /// Training minutes.
    pub minutes: Option<f64>,
    /// Counted training FLOPs per example and step.
    pub flops: Option<f64>,
}

/// The row of `point`, from its run directory (and its log) alone, so that it is the
/// same whenever it is read.
pub fn row(point: &Point) -> Row {
    let mut row = Row {
        name: point.name.clone(),
        values: point.values.clone(),
        status: "not started".into(),
        epochs: None,
        test: None,
        ensemble: None,
        minutes: None,
        flops: None,
    };
    if let Some(s) = crate::run::summary::read_summary(&point.dir) {
        row.status = if s.status == RunStatus::Finished && !complete(&s) {
            "incomplete".into()
        } else {
            s.status.to_string()
        };
        row.epochs = Some(s.epochs_completed);
        if s.epochs_completed > 0 {
            row.test = Some(s.test_accuracy);
            row.ensemble = Some(s.ensemble_test_accuracy);
        }
        row.minutes = Some(s.train_seconds / 60.0);
        row.flops = s.train_flops_per_example;
        return row;
    }
    if point.dir.join("config.toml").is_file() {
        // Killed before it wrote a summary: what its epochs recorded.
        row.status = "incomplete".into();
        let metrics: Vec<EpochMetrics> = std::fs::read_to_string(point.dir.join("metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        row.epochs = Some(metrics.len());
        if let Some(last) = metrics.last() {
            row.test = Some(last.test_accuracy);
            row.ensemble = Some(last.ensemble_test_accuracy);
            row.minutes = Some(metrics.iter().map(|m| m.seconds).sum::<f64>() / 60.0);
        }
    }
    if last_error(&point.log).is_some() {
        row.status = "failed".into();
    }
    row
}

/// The results table: header and one row of cells per run (`digits` after the point).
fn cells(sweep: &Sweep, rows: &[Row], digits: usize) -> Vec<Vec<String>> {
    let mut header = vec!["run".to_string()];
    header.extend(sweep.grid.iter().map(|a| a.key.clone()));
    header.extend([
        "status".into(),
        "epochs".into(),
        "test acc %".into(),
        "avg heads acc %".into(),
        "train min".into(),
        "MFLOP per example".into(),
    ]);
    let number = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.digits$}"));
    let mut table = vec![header];
    for r in rows {
        let mut cells = vec![r.name.clone()];
        cells.extend(r.values.iter().map(plain));
        cells.extend([
            r.status.clone(),
            r.epochs.map_or(String::new(), |e| e.to_string()),
            number(r.test.map(|a| 100.0 * a)),
            number(r.ensemble.map(|a| 100.0 * a)),
            number(r.minutes),
            number(r.flops.map(|f| f / 1e6)),
        ]);
        table.push(cells);
    }
    table
}

/// `results.md`: a sentence on the sweep and a markdown table.
pub fn markdown(sweep: &Sweep, rows: &[Row]) -> String {
    let table = cells(sweep, rows, 2);
    let mut counts: Vec<(String, usize)> = vec![];
    for r in rows {
        match counts.iter_mut().find(|(s, _)| *s == r.status) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.status.clone(), 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let mut text = format!(
        "# Sweep results\n\nConfig `{}`, set in every run: {}; grid: {}.\n{} runs: {}.\n\n",
        sweep.config,
        describe_sets(&sweep.sets),
        describe_grid(&sweep.grid),
        rows.len(),
        counts.join(", ")
    );
    let escape = |c: &str| c.replace('|', "\\|");
    let varied = sweep.grid.len();
    for (i, line) in table.iter().enumerate() {
        let cells: Vec<String> = line.iter().map(|c| escape(c)).collect();
        text.push_str(&format!("| {} |\n", cells.join(" | ")));
        if i == 0 {
            let align: Vec<&str> = (0..line.len())
                .map(|c| if c > varied + 1 { "---:" } else { "---" })
                .collect();
            text.push_str(&format!("|{}|\n", align.join("|")));
        }
    }
    if varied == 2 {
        text.push_str(&pivot(sweep, rows));
    }
    text
}

/// A two-key grid as a matrix: one row per value of the second key, one column per
/// value of the first, each cell the final test accuracy and the training minutes of
/// the run (blank where excluded or not finished).
fn pivot(sweep: &Sweep, rows: &[Row]) -> String {
    let (columns, lines) = (&sweep.grid[0], &sweep.grid[1]);
    let mut text = format!(
        "\nTest accuracy (%) and training minutes, `{}` across, `{}` down:\n\n| {} |",
        columns.key,
        lines.key,
        escape_cell(&lines.key)
    );
    for c in &columns.values {
        text.push_str(&format!(
            " {} = {} |",
            escape_cell(&columns.key),
            escape_cell(&plain(c))
        ));
    }
    text.push_str(&format!("\n|---|{}\n", "---:|".repeat(columns.values.len())));
    for l in &lines.values {
        text.push_str(&format!("| {} |", escape_cell(&plain(l))));
        for c in &columns.values {
            let cell = rows
                .iter()
                .find(|r| r.values[0] == *c && r.values[1] == *l)
                .filter(|r| r.status == "finished")
                .and_then(|r| Some(format!("{:.2} ({:.0} min)", 100.0 * r.test?, r.minutes?)));
            text.push_str(&format!(" {} |", cell.unwrap_or_default()));
        }
        text.push('\n');
    }
    text
}

fn escape_cell(c: &str) -> String {
    c.replace('|', "\\|")
}

/// `results.csv`: the same columns, more digits.
pub fn csv(sweep: &Sweep, rows: &[Row]) -> String {
    let quote = |c: &str| {
        if c.contains([',', '"', '\n']) {
            format!("\"{}\"", c.replace('"', "\"\""))
        } else {
            c.to_string()
        }
    };
    cells(sweep, rows, 4)
        .iter()
        .map(|line| line.iter().map(|c| quote(c)).collect::<Vec<_>>().join(",") + "\n")
        .collect()
}
