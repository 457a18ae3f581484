//! What a sweep is: the [`Request`] of the command line and a grid file, and the
//! [`Sweep`] it settles into, which `sweep.toml` holds in the sweep's folder and which
//! never changes afterwards.

use super::grid::{axis, check_key, describe_grid, describe_sets, flatten, flatten_to_keys};
use super::grid::{parse_grid_arg, parse_set, plain, push_set, Axis};
use super::SweepOptions;
use crate::config::DEFAULT_PRESET;
use crate::io::absolute;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use toml::Value;

/// Most runs one sweep may have.
pub const MAX_RUNS: usize = 10_000;

/// The sweep's description in its folder.
pub const SWEEP_FILE: &str = "sweep.toml";

/// What the command line and a grid file ask for (`None` or empty where not given).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// Base config: a preset name or a config file.
    pub config: Option<String>,
    /// Data folder of new runs.
    pub data_dir: Option<String>,
    /// `key = value` applied to every run, in order (a key given twice: the last wins).
    pub sets: Vec<(String, Value)>,
    /// The grid, first axis outermost.
    pub grid: Vec<Axis>,
    /// Grid points left out: a point matching every pair of one entry is not run.
    pub exclude: Vec<Vec<(String, Value)>>,
}

/// A resolved sweep: what `sweep.toml` holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    /// Base config: a preset name, or a config file's absolute path.
    pub config: String,
    /// Data folder of new runs (absolute when it exists); `None`: `sll train`'s default.
    pub data_dir: Option<String>,
    /// Applied to every run, before the grid point's own values.
    pub sets: Vec<(String, Value)>,
    /// The grid, first axis outermost.
    pub grid: Vec<Axis>,
    /// Grid points left out (`exclude = [{ "train.method" = "bp", "model.modules" = 4 }]`).
    pub exclude: Vec<Vec<(String, Value)>>,
}

/// `sweep.toml` and `--grid-file` as TOML.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    config: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_dir: Option<String>,
    #[serde(default)]
    set: toml::Table,
    #[serde(default)]
    grid: toml::Table,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<toml::Table>,
}

/// A grid file (`--grid-file`, or `sweep.toml`): `config = "preset"`, `data_dir`, a
/// `[set]` table applied to every run and a `[grid]` table of arrays; `origin` names
/// it in errors.
pub fn parse_grid_file(text: &str, origin: &str) -> Result<Request> {
    let file: SweepFile = toml::from_str(text).map_err(|e| {
        anyhow!(
            "{origin}: {}",
            e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
        )
    })?;
    let mut pairs = vec![];
    flatten("", &file.set, &mut pairs);
    let mut sets = vec![];
    for (k, v) in pairs {
        check_key(&k, &format!("{origin}: [set]"))?;
        push_set(&mut sets, &k, v);
    }
    let mut pairs = vec![];
    flatten("", &file.grid, &mut pairs);
    let grid = pairs
        .into_iter()
        .map(|(key, v)| match v {
            Value::Array(values) => axis(&key, values, &format!("{origin}: [grid]")),
            v => bail!(
                "{origin}: [grid] `{key}` must be an array of values, not {}",
                plain(&v)
            ),
        })
        .collect::<Result<Vec<Axis>>>()?;
    let mut exclude = vec![];
    for entry in &file.exclude {
        let mut pairs = vec![];
        flatten_to_keys("", entry, &grid, &mut pairs);
        for (key, value) in &pairs {
            let what = format!("{origin}: exclude");
            let Some(axis) = grid.iter().find(|a| a.key == *key) else {
                bail!("{what}: `{key}` is not a [grid] key");
            };
            if !axis.values.contains(value) {
                bail!(
                    "{what}: `{key}` = {} is not one of its [grid] values",
                    plain(value)
                );
            }
        }
        if pairs.is_empty() {
            bail!("{origin}: exclude: an empty entry would leave out every point");
        }
        exclude.push(pairs);
    }
    Ok(Request {
        config: file.config,
        data_dir: file.data_dir,
        sets,
        grid,
        exclude,
    })
}

/// What `options` ask for: the grid file's config, sets and grid, then the flags' (a
/// `--config` must agree with the file's; `--set` pairs come after the file's).
pub fn request(options: &SweepOptions) -> Result<Request> {
    let mut request = match &options.grid_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --grid-file {}", path.display()))?;
            parse_grid_file(&text, &path.display().to_string())?
        }
        None => Request::default(),
    };
    if let Some(config) = &options.config {
        match &request.config {
            Some(c) if resolve_config(c) != resolve_config(config) => {
                bail!("--config {config} differs from config = {c:?} of the grid file; give one of them")
            }
            _ => request.config = Some(config.clone()),
        }
    }
    if options.data_dir.is_some() {
        request.data_dir = options.data_dir.clone();
    }
    for set in &options.sets {
        parse_set(&mut request.sets, set)?;
    }
    for arg in &options.grid {
        let axis = parse_grid_arg(arg)?;
        if request.grid.iter().any(|a| a.key == axis.key) {
            bail!("--grid {arg}: `{}` is varied twice", axis.key);
        }
        request.grid.push(axis);
    }
    Ok(request)
}

/// A `--config`: a file as its absolute path (so that the sweep can be continued from
/// any folder), a preset name as it is.
fn resolve_config(config: &str) -> String {
    let path = Path::new(config);
    if path.is_file() {
        if let Ok(p) = std::fs::canonicalize(path) {
            return p.display().to_string();
        }
    }
    config.to_string()
}

impl Sweep {
    /// The sweep in `dir`, if it has a `sweep.toml`.
    pub fn read(dir: &Path) -> Result<Option<Sweep>> {
        let path = dir.join(SWEEP_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        let r = parse_grid_file(&text, &path.display().to_string())?;
        let config = r
            .config
            .ok_or_else(|| anyhow!("{}: no `config`", path.display()))?;
        if r.grid.is_empty() {
            bail!("{}: an empty [grid]", path.display());
        }
        Ok(Some(Sweep {
            config,
            data_dir: r.data_dir,
            sets: r.sets,
            grid: r.grid,
            exclude: r.exclude,
        }))
    }

    /// `sweep.toml`'s text (itself a valid `--grid-file`).
    pub fn to_toml(&self) -> Result<String> {
        let mut set = toml::Table::new();
        for (k, v) in &self.sets {
            set.insert(k.clone(), v.clone());
        }
        let mut grid = toml::Table::new();
        for a in &self.grid {
            grid.insert(a.key.clone(), Value::Array(a.values.clone()));
        }
        let exclude = self
            .exclude
            .iter()
            .map(|pairs| pairs.iter().cloned().collect::<toml::Table>())
            .collect();
        let file = SweepFile {
            config: Some(self.config.clone()),
            data_dir: self.data_dir.clone(),
            set,
            grid,
            exclude,
        };
        Ok(format!(
            "# Written by `sll sweep` when the sweep started: its base config, the keys set in\n\
             # every run and the grid. Continue the sweep with `sll sweep --out <this folder>`;\n\
             # its grid cannot change.\n{}",
            toml::to_string(&file)?
        ))
    }

    /// The sweep `request` asks for, given the one `dir` holds already (`stored`):
    /// without one, the request (its grid must not be empty); with one, the stored
    /// sweep, provided that the config, sets and grid the request gives (those it
    /// leaves out are taken as stored) are identical to it. A `data_dir` given replaces
    /// the stored one (it only decides where new runs read their data). The flag says
    /// whether the sweep is new.
    pub fn settle(request: Request, stored: Option<Sweep>, dir: &Path) -> Result<(Sweep, bool)> {
        let data_dir = request.data_dir.as_deref().map(absolute);
        let Some(stored) = stored else {
            if request.grid.is_empty() {
                bail!(
                    "{} holds no sweep yet: give the grid (--grid section.key=v1,v2,... or --grid-file GRID.toml)",
                    dir.display()
                );
            }
            if let Some((key, _)) = request
                .sets
                .iter()
                .find(|(k, _)| request.grid.iter().any(|a| a.key == *k))
            {
                bail!("`{key}` is both set in every run (--set) and varied (--grid); give it once");
            }
            let sweep = Sweep {
                config: resolve_config(request.config.as_deref().unwrap_or(DEFAULT_PRESET)),
                data_dir,
                sets: request.sets,
                grid: request.grid,
                exclude: request.exclude,
            };
            let runs = sweep
                .grid
                .iter()
                .try_fold(1usize, |n, a| n.checked_mul(a.values.len()));
            if runs.is_none_or(|n| n > MAX_RUNS) {
                bail!("the grid has more than {MAX_RUNS} points; split the sweep");
            }
            return Ok((sweep, true));
        };
        let file = dir.join(SWEEP_FILE);
        let refuse = |what: &str, theirs: String, ours: String| -> Result<(Sweep, bool)> {
            bail!(
                "{} was started with another {what} ({theirs}) than the one given ({ours}); a sweep's grid, sets and config cannot change: give the same ones (or none) to continue it, or choose another --out",
                file.display()
            )
        };
        if !request.grid.is_empty() && request.grid != stored.grid {
            return refuse("grid", describe_grid(&stored.grid), describe_grid(&request.grid));
        }
        if !request.exclude.is_empty() && request.exclude != stored.exclude {
            return refuse(
                "exclude list",
                format!("{:?}", stored.exclude),
                format!("{:?}", request.exclude),
            );
        }
        if !request.sets.is_empty() && request.sets != stored.sets {
            return refuse(
                "--set list",
                describe_sets(&stored.sets),
                describe_sets(&request.sets),
            );
        }
        if let Some(config) = &request.config {
            let config = resolve_config(config);
            if config != stored.config {
                return refuse("config", stored.config.clone(), config);
            }
        }
        let data_dir = data_dir.or(stored.data_dir.clone());
        Ok((Sweep { data_dir, ..stored }, false))
    }
}
