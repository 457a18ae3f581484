//! `results.png`: test accuracy against a numeric grid key, one line per combination of
//! the other keys' values.

use super::definition::Sweep;
use super::grid::{describe_grid, plain, Axis};
use super::naming::short_key;
use super::results::Row;
use anyhow::{anyhow, bail, Result};
use std::path::Path;
use toml::Value;

/// Whether every value of `axis` is a number.
fn numeric(axis: &Axis) -> bool {
    axis.values
        .iter()
        .all(|v| matches!(v, Value::Integer(_) | Value::Float(_)))
}

/// The grid axis the plot's x is: `x` if given (a numeric grid key), else
/// `model.modules` if varied and numeric, else the first numeric axis; `None`: none.
pub(super) fn x_axis(grid: &[Axis], x: Option<&str>) -> Result<Option<usize>> {
    if let Some(x) = x {
        let i = grid.iter().position(|a| a.key == x).ok_or_else(|| {
            anyhow!(
                "--x {x}: not a grid key (the grid varies {})",
                describe_grid(grid)
            )
        })?;
        if !numeric(&grid[i]) {
            bail!("--x {x}: its values are not all numbers");
        }
        return Ok(Some(i));
    }
    Ok(grid
        .iter()
        .position(|a| a.key == "model.modules" && numeric(a))
        .or_else(|| grid.iter().position(numeric)))
}

/// The plot's lines: one per combination of the other axes' values (in grid order),
/// each the finished runs' (x, test accuracy %) sorted by x.
pub(super) fn plot_series(sweep: &Sweep, rows: &[Row], x: usize) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut series: Vec<(String, Vec<(f64, f64)>)> = vec![];
    for r in rows {
        let label: Vec<String> = sweep
            .grid
            .iter()
            .zip(&r.values)
            .enumerate()
            .filter(|(i, _)| *i != x)
            .map(|(_, (a, v))| format!("{}={}", short_key(&a.key, &sweep.grid), plain(v)))
            .collect();
        let label = if label.is_empty() {
            "test accuracy".to_string()
        } else {
            label.join(", ")
        };
        let i = match series.iter().position(|(l, _)| *l == label) {
            Some(i) => i,
            None => {
                series.push((label, vec![]));
                series.len() - 1
            }
        };
        let xv = match &r.values[x] {
            Value::Integer(i) => *i as f64,
            Value::Float(f) => *f,
            _ => continue,
        };
        if let (true, Some(acc)) = (r.status == "finished", r.test) {
            series[i].1.push((xv, 100.0 * acc));
        }
    }
    for (_, pts) in &mut series {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    series.retain(|(_, pts)| !pts.is_empty());
    series
}

/// Draws `results.png` at `png` from `rows`, against the grid key `x` (see [`x_axis`]);
/// `Some(why)` where there is nothing to draw.
pub(super) fn draw(sweep: &Sweep, rows: &[Row], x: Option<&str>, png: &Path) -> Result<Option<String>> {
    Ok(match x_axis(&sweep.grid, x)? {
        None => Some("no numeric grid key".to_string()),
        Some(x) => {
            let series = plot_series(sweep, rows, x);
            if series.is_empty() {
                Some("no finished run to plot".to_string())
            } else {
                let key = &sweep.grid[x].key;
                crate::report::plot::sweep_accuracy(
                    &series,
                    key,
                    &format!("test accuracy against {key}"),
                    png,
                )?;
                None
            }
        }
    })
}
