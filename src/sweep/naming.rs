//! Run names: one readable directory name per grid point, a function of the grid alone.

use super::grid::Axis;
use crate::io::safe_name;
use std::collections::HashSet;
use toml::Value;

/// A value as it goes into a run's name: strings bare, arrays joined by `x`
/// (`[64, 64]` → `64x64`), numbers as TOML writes them.
fn value_label(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(value_label).collect::<Vec<_>>().join("x"),
        Value::Table(t) if t.is_empty() => "base".to_string(),
        Value::Table(t) => t
            .iter()
            .map(|(k, v)| format!("{}-{}", k.rsplit('.').next().unwrap_or(k), value_label(v)))
            .collect::<Vec<_>>()
            .join("_"),
        v => v.to_string(),
    }
}

/// How a grid key is named in run names and legends: its last part (`method` for
/// `train.method`), or the whole key where another grid key has the same last part.
pub(super) fn short_key(key: &str, grid: &[Axis]) -> String {
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let short = last(key);
    if grid.iter().filter(|a| last(&a.key) == short).count() > 1 {
        key.to_string()
    } else {
        short
    }
}

/// The run directory name of each point: `<key>-<value>` per axis joined by `_`
/// (`method-sll_beta-0.3`), sanitised with [`safe_name`]; a name that is taken already
/// (two values that sanitise alike) gets `-2`, `-3`, ... in grid order. A function of
/// the grid alone, so the same grid gives the same names in every session.
pub fn run_names(grid: &[Axis], points: &[Vec<Value>]) -> Vec<String> {
    let keys: Vec<String> = grid.iter().map(|a| short_key(&a.key, grid)).collect();
    let mut used = HashSet::new();
    points
        .iter()
        .map(|point| {
            let parts: Vec<String> = keys
                .iter()
                .zip(point)
                .map(|(k, v)| format!("{k}-{}", value_label(v)))
                .collect();
            let base: String = safe_name(&parts.join("_")).chars().take(100).collect();
            let mut name = base.clone();
            let mut n = 2;
            while !used.insert(name.clone()) {
                name = format!("{base}-{n}");
                n += 1;
            }
            name
        })
        .collect()
}
