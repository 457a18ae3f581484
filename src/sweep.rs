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

use crate::cli::SweepArgs;
use crate::config::{Config, DEFAULT_PRESET};
use crate::io::{absolute, safe_name, write_atomic};
use crate::report::{EpochMetrics, RunStatus, Summary};
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::SystemTime;
use toml::Value;

/// Most runs one sweep may have.
pub const MAX_RUNS: usize = 10_000;

/// The sweep's description in its folder.
pub const SWEEP_FILE: &str = "sweep.toml";

/// One varied config key and the values it takes, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Dotted config key, e.g. `train.method`.
    pub key: String,
    /// Its values, each a TOML value as `--set` would parse it.
    pub values: Vec<Value>,
}

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

// ---------------------------------------------------------------------------------
// Grid parsing and naming
// ---------------------------------------------------------------------------------

/// A value as `--set` reads it: TOML if it parses as a TOML value (numbers, booleans,
/// arrays, quoted strings), else the bare string.
pub fn parse_value(raw: &str) -> Value {
    let raw = raw.trim();
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()))
}

/// Splits `v1,v2,...` at the commas outside brackets, braces and quotes
/// (`[64,64],[128,128]` is two values; so is `"a,b",c`).
pub fn split_values(list: &str) -> Result<Vec<String>> {
    let mut values = vec![];
    let mut current = String::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in list.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '[' | '{' => depth += 1,
                ']' | '}' => {
                    depth = depth
                        .checked_sub(1)
                        .ok_or_else(|| anyhow!("`{list}`: `{c}` closes nothing"))?
                }
                ',' if depth == 0 => {
                    values.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            },
        }
        current.push(c);
    }
    if let Some(q) = quote {
        bail!("`{list}`: unclosed {q}");
    }
    if depth > 0 {
        bail!("`{list}`: unclosed bracket");
    }
    values.push(current);
    let values: Vec<String> = values.into_iter().map(|v| v.trim().to_string()).collect();
    if values.iter().any(String::is_empty) {
        bail!("`{list}`: an empty value");
    }
    Ok(values)
}

/// Checks a dotted config key: non-empty parts of letters, digits, `_` and `-`.
fn check_key(key: &str, what: &str) -> Result<()> {
    let ok = key
        .split('.')
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)));
    if !ok {
        bail!("{what}: `{key}` is not a config key (section.key)");
    }
    Ok(())
}

/// The grid key whose values are tables of config keys set together, so that one
/// sweep can vary one setting at a time: `variant = [{}, { "objective.beta" = 0 }, ...]`
/// (`{}`: the base config).
pub const VARIANT: &str = "variant";

/// An axis with `values`, refusing an empty list and a value given twice.
fn axis(key: &str, values: Vec<Value>, what: &str) -> Result<Axis> {
    check_key(key, what)?;
    if key == VARIANT {
        for v in &values {
            let Value::Table(t) = v else {
                bail!(
                    "{what}: every `{VARIANT}` value is a table of config keys, not {}",
                    plain(v)
                );
            };
            let mut pairs = vec![];
            flatten("", t, &mut pairs);
            for (k, _) in pairs {
                check_key(&k, what)?;
                if !k.contains('.') {
                    bail!("{what}: `{VARIANT}` sets `{k}`, not a section.key");
                }
            }
        }
    }
    if values.is_empty() {
        bail!("{what}: `{key}` has no values");
    }
    for (i, v) in values.iter().enumerate() {
        if values[..i].contains(v) {
            bail!("{what}: `{key}` lists {} twice", plain(v));
        }
    }
    Ok(Axis {
        key: key.to_string(),
        values,
    })
}

/// One `--grid key=v1,v2,...`.
pub fn parse_grid_arg(arg: &str) -> Result<Axis> {
    let what = format!("--grid {arg}");
    let (key, list) = arg
        .split_once('=')
        .ok_or_else(|| anyhow!("{what}: expected section.key=value1,value2,..."))?;
    let values = split_values(list)
        .with_context(|| what.clone())?
        .iter()
        .map(|v| parse_value(v))
        .collect();
    axis(key.trim(), values, &what)
}

/// Flattens nested tables into dotted keys (`[grid] train.method = [...]` and
/// `"train.method" = [...]` are the same key).
fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, Value)>) {
    flatten_to_keys(prefix, table, &[], out);
}

/// [`flatten`], stopping at grid keys (whose values may be tables: `variant`).
fn flatten_to_keys(prefix: &str, table: &toml::Table, grid: &[Axis], out: &mut Vec<(String, Value)>) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Table(t) if !grid.iter().any(|a| a.key == key) => flatten_to_keys(&key, t, grid, out),
            v => out.push((key, v.clone())),
        }
    }
}

/// Adds `key = value` to `sets` (a table value as one pair per key inside it); a key
/// given again replaces the earlier value and moves to the end.
fn push_set(sets: &mut Vec<(String, Value)>, key: &str, value: Value) {
    let mut pairs = vec![];
    match value {
        Value::Table(t) => flatten(key, &t, &mut pairs),
        v => pairs.push((key.to_string(), v)),
    }
    for (k, v) in pairs {
        sets.retain(|(old, _)| *old != k);
        sets.push((k, v));
    }
}

/// One `--set key=value`.
fn parse_set(sets: &mut Vec<(String, Value)>, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {set}: expected section.key=value"))?;
    check_key(key.trim(), &format!("--set {set}"))?;
    push_set(sets, key.trim(), parse_value(raw));
    Ok(())
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

/// What `args` ask for: the grid file's config, sets and grid, then the flags' (a
/// `--config` must agree with the file's; `--set` pairs come after the file's).
pub fn request(args: &SweepArgs) -> Result<Request> {
    let mut request = match &args.grid_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --grid-file {}", path.display()))?;
            parse_grid_file(&text, &path.display().to_string())?
        }
        None => Request::default(),
    };
    if let Some(config) = &args.config {
        match &request.config {
            Some(c) if resolve_config(c) != resolve_config(config) => {
                bail!("--config {config} differs from config = {c:?} of the grid file; give one of them")
            }
            _ => request.config = Some(config.clone()),
        }
    }
    if args.data_dir.is_some() {
        request.data_dir = args.data_dir.clone();
    }
    for set in &args.sets {
        parse_set(&mut request.sets, set)?;
    }
    for arg in &args.grid {
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

/// A value without TOML's quotes around strings (tables and CSV cells, messages).
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

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
fn short_key(key: &str, grid: &[Axis]) -> String {
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let short = last(key);
    if grid.iter().filter(|a| last(&a.key) == short).count() > 1 {
        key.to_string()
    } else {
        short
    }
}

/// The grid's points in order: the cartesian product, first axis outermost (it varies
/// slowest), each point one value per axis.
pub fn product(grid: &[Axis]) -> Vec<Vec<Value>> {
    let mut points = vec![vec![]];
    for axis in grid {
        points = points
            .into_iter()
            .flat_map(|p: Vec<Value>| {
                axis.values.iter().map(move |v| {
                    let mut q = p.clone();
                    q.push(v.clone());
                    q
                })
            })
            .collect();
    }
    points
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

// ---------------------------------------------------------------------------------
// The sweep's folder: sweep.toml and its consistency
// ---------------------------------------------------------------------------------

/// `grid` as `key=v1,v2 × key=...` (messages).
fn describe_grid(grid: &[Axis]) -> String {
    grid.iter()
        .map(|a| {
            let values: Vec<String> = a.values.iter().map(plain).collect();
            format!("{}={}", a.key, values.join(","))
        })
        .collect::<Vec<_>>()
        .join(" × ")
}

/// `sets` as `key=value, ...` (messages, results).
fn describe_sets(sets: &[(String, Value)]) -> String {
    if sets.is_empty() {
        return "none".into();
    }
    sets.iter()
        .map(|(k, v)| format!("{k}={}", plain(v)))
        .collect::<Vec<_>>()
        .join(", ")
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

// ---------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------

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
fn complete(summary: &Summary) -> bool {
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
    match crate::report::read_summary(dir) {
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

/// `--threads` of new runs: the given number, else the cores shared by the jobs.
fn threads(args: &SweepArgs) -> usize {
    args.threads.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / args.jobs.max(1)).max(1)
    })
}

/// The `sll train` arguments of a point: a new run, or `--resume` of its directory.
fn train_args(sweep: &Sweep, point: &Point, threads: usize, state: &State) -> Vec<String> {
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
fn check_configs(sweep: &Sweep, plan: &[(Point, State)], threads: usize) -> Result<()> {
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

// ---------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------

/// Interrupts (SIGINT, SIGTERM, SIGHUP) the sweep received.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

fn interrupts() -> usize {
    INTERRUPTS.load(Ordering::SeqCst)
}

/// Handles interrupts: the first stops the sweep from starting runs (the running ones,
/// in its process group, get the terminal's signal themselves and stop at their next
/// step with a checkpoint); each further one is passed on to the running children, so
/// that a signal sent to the sweep alone reaches them too (a child that gets a second
/// one exits at once, keeping its last checkpoint).
fn install_interrupt(running: Arc<Mutex<Vec<u32>>>) {
    let handler = move || {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\nsweep: interrupt: starting no more runs; the running ones write their checkpoints and stop (interrupt again to pass it on to them)");
        } else {
            eprintln!("\nsweep: interrupt: passing it on to the running runs");
            for &pid in running.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
            }
        }
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        eprintln!("warning: cannot handle Ctrl-C ({e}); an interrupt will end the sweep at once (the runs keep their checkpoints)");
    }
}

/// Takes `dir/sweep.lock` for this sweep and the runs it starts (they inherit it), so
/// that a second sweep of the same folder is refused while any of them lives.
fn lock(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("sweep.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let fd = file.as_raw_fd();
    // SAFETY: flock and fcntl act on a descriptor this function owns.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "{} is in use by another `sll sweep` (or by runs it started that still train); wait for it to end",
            dir.display()
        );
    }
    // Inherited by the children: the lock lasts while any of them lives.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    Ok(file)
}

/// How a run ended in this invocation.
#[derive(Debug)]
enum Outcome {
    /// Finished before this invocation.
    Skipped,
    /// Diverged before this invocation (not retried).
    DivergedBefore,
    /// Trained to its end now.
    Trained,
    /// Diverged now.
    Diverged,
    /// Stopped by an interrupt (its checkpoint kept).
    Interrupted,
    /// Not started because of an interrupt.
    NotStarted,
    /// Failed, with why.
    Failed(String),
    /// Outside this invocation's `--only`.
    Held,
}

/// `accuracy` as `12.34%`.
fn percent(accuracy: f64) -> String {
    format!("{:.2}%", 100.0 * accuracy)
}

/// The run's accuracies in one phrase.
fn accuracies(s: &Summary) -> String {
    format!(
        "{}/{} epochs, test {}, averaged heads {}, {:.2} min",
        s.epochs_completed,
        s.epochs,
        percent(s.test_accuracy),
        percent(s.ensemble_test_accuracy),
        s.train_seconds / 60.0
    )
}

/// The last line of `log` if it is an error line.
fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    line.starts_with("error:").then(|| line.to_string())
}

/// Starts the training of `point` as a child process writing to its log.
fn start(exe: &Path, args: &[String], point: &Point, state: &State) -> Result<Child> {
    if matches!(state, State::New) {
        // Temporaries a write killed before the first file left: `sll train --out`
        // takes only an empty (or no) folder.
        if point.dir.is_dir() {
            crate::io::remove_stale_temporaries(&point.dir)?;
        }
    }
    let folder = point.log.parent().expect("logs/NAME.log");
    std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&point.log)
        .with_context(|| format!("cannot open {}", point.log.display()))?;
    use std::io::Write;
    writeln!(
        log,
        "=== {}: sll {}",
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S"),
        args.join(" ")
    )
    .with_context(|| format!("cannot write {}", point.log.display()))?;
    let err = log.try_clone()?;
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

/// When the run's `summary.json` was last written (`None`: it has none).
fn summary_time(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir.join("summary.json"))
        .and_then(|m| m.modified())
        .ok()
}

/// What a child's exit means, from its exit status and the summary it wrote (one
/// written `before` it started is a previous attempt's).
fn outcome(point: &Point, status: std::io::Result<ExitStatus>, before: Option<SystemTime>) -> Outcome {
    let fresh = summary_time(&point.dir).is_some_and(|t| Some(t) != before);
    let summary = if fresh {
        crate::report::read_summary(&point.dir)
    } else {
        None
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("cannot wait for it: {e}")),
    };
    match summary {
        Some(s) if complete(&s) && status.success() => Outcome::Trained,
        Some(s) if s.status == RunStatus::Diverged => Outcome::Diverged,
        Some(s) if s.status == RunStatus::Interrupted => Outcome::Interrupted,
        _ if interrupts() > 0 => Outcome::Interrupted,
        _ => Outcome::Failed(format!(
            "{status}{}",
            last_error(&point.log).map_or_else(String::new, |e| format!(": {e}"))
        )),
    }
}

/// `sll sweep`.
pub fn command(args: &SweepArgs) -> Result<()> {
    let dir = &args.out;
    if args.report_only {
        let sweep = Sweep::read(dir)?
            .ok_or_else(|| anyhow!("{} holds no {SWEEP_FILE}: not a sweep folder", dir.display()))?;
        return write_results(&sweep, dir, args.x.as_deref());
    }
    if args.jobs == 0 {
        bail!("--jobs must be at least 1");
    }
    let (sweep, new) = Sweep::settle(request(args)?, Sweep::read(dir)?, dir)?;
    if let Some(x) = &args.x {
        x_axis(&sweep.grid, Some(x))?;
    }
    let threads = threads(args);
    let only = only_filter(&sweep, &args.only)?;
    let points = points(&sweep, dir);
    let plan: Vec<(Point, State)> = points
        .into_iter()
        .map(|p| {
            let s = match state(&p.dir) {
                State::New | State::Resume(_) if !only(&p) => State::Held,
                s => s,
            };
            (p, s)
        })
        .collect();
    check_configs(&sweep, &plan, threads)?;
    let n = plan.len();
    if args.dry_run {
        return dry_run(&sweep, dir, &plan, threads);
    }
    std::fs::create_dir_all(dir.join("runs"))
        .with_context(|| format!("cannot create {}", dir.join("runs").display()))?;
    let _lock = lock(dir)?;
    if new {
        write_atomic(&dir.join(SWEEP_FILE), sweep.to_toml()?.as_bytes())?;
    }
    println!(
        "sweep {}: {n} runs ({}), {} at a time, {threads} thread(s) each",
        dir.display(),
        describe_grid(&sweep.grid),
        args.jobs
    );
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let running: Arc<Mutex<Vec<u32>>> = Arc::default();
    install_interrupt(running.clone());
    let tag = |i: usize| format!("[{}/{n}] {}", i + 1, plan[i].0.name);
    let mut outcomes: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    let mut queue = VecDeque::new();
    for (i, (_, state)) in plan.iter().enumerate() {
        match state {
            State::Finished(s) => {
                println!("{}: skipped, finished already ({})", tag(i), accuracies(s));
                outcomes[i] = Some(Outcome::Skipped);
            }
            State::Diverged(s) => {
                println!(
                    "{}: diverged earlier after {} epochs; not retried (a result, not a failure)",
                    tag(i),
                    s.epochs_completed
                );
                outcomes[i] = Some(Outcome::DivergedBefore);
            }
            State::Blocked(why) => {
                println!("{}: failed: {why}", tag(i));
                outcomes[i] = Some(Outcome::Failed(why.clone()));
            }
            State::Held => outcomes[i] = Some(Outcome::Held),
            State::New | State::Resume(_) => queue.push_back(i),
        }
    }
    let (tx, rx) = mpsc::channel();
    let mut pids: HashMap<usize, u32> = HashMap::new();
    loop {
        while pids.len() < args.jobs && interrupts() == 0 {
            let Some(i) = queue.pop_front() else { break };
            let (point, state) = &plan[i];
            let train = train_args(&sweep, point, threads, state);
            let before = interrupts();
            let started = summary_time(&point.dir);
            match start(&exe, &train, point, state) {
                Ok(mut child) => {
                    let pid = child.id();
                    running.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
                    if interrupts() != before {
                        // Started as the interrupt came: it may have missed it.
                        // SAFETY: kill has no memory-safety preconditions.
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
                    }
                    pids.insert(i, pid);
                    let what = match state {
                        State::Resume(why) => format!("resuming ({why})"),
                        _ => "started".to_string(),
                    };
                    println!("{}: {what}; log {}", tag(i), point.log.display());
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let status = child.wait();
                        let _ = tx.send((i, status, started));
                    });
                }
                Err(e) => {
                    let why = crate::one_line_error(&e);
                    println!("{}: failed to start: {why}", tag(i));
                    outcomes[i] = Some(Outcome::Failed(why));
                }
            }
        }
        if pids.is_empty() {
            break;
        }
        let (i, status, started) = rx.recv().expect("a waiting thread per child");
        if let Some(pid) = pids.remove(&i) {
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|&p| p != pid);
        }
        let point = &plan[i].0;
        let result = outcome(point, status, started);
        let summary = crate::report::read_summary(&point.dir);
        let line = match (&result, &summary) {
            (Outcome::Trained, Some(s)) => format!("finished: {}", accuracies(s)),
            (Outcome::Diverged, Some(s)) => format!(
                "diverged after {} epochs ({}); a result, not a failure",
                s.epochs_completed,
                s.stopped.as_deref().unwrap_or("divergence guard")
            ),
            (Outcome::Interrupted, _) => "interrupted; its last checkpoint is kept".to_string(),
            (Outcome::Failed(why), _) => format!("failed: {why}; log {}", point.log.display()),
            (other, _) => format!("{other:?}"),
        };
        println!("{}: {line}", tag(i));
        outcomes[i] = Some(result);
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::NotStarted))
        .collect();
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let trained = count(|o| matches!(o, Outcome::Trained));
    let skipped = count(|o| matches!(o, Outcome::Skipped));
    let diverged = count(|o| matches!(o, Outcome::Diverged | Outcome::DivergedBefore));
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    let interrupted = count(|o| matches!(o, Outcome::Interrupted));
    let not_started = count(|o| matches!(o, Outcome::NotStarted));
    let held = count(|o| matches!(o, Outcome::Held));
    if let Err(e) = write_results(&sweep, dir, args.x.as_deref()) {
        eprintln!("warning: cannot write the results: {}", crate::one_line_error(&e));
    }
    println!(
        "sweep: {n} runs: {trained} trained, {skipped} skipped (finished already), {diverged} diverged (results, not failures), {failed} failed, {interrupted} interrupted, {not_started} not started{}",
        if held > 0 { format!(", {held} left for later (outside --only)") } else { String::new() }
    );
    let again = format!("sll sweep --out {}", dir.display());
    if interrupts() > 0 || interrupted + not_started > 0 {
        bail!(
            "sweep interrupted: {interrupted} run(s) stopped with their checkpoints, {not_started} not started{}; continue it with `{again}`",
            if failed > 0 { format!(", {failed} failed") } else { String::new() }
        );
    }
    if failed > 0 {
        bail!(
            "{failed} of {n} runs failed (their logs are in {}); `{again}` retries them",
            dir.join("logs").display()
        );
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
fn dry_run(sweep: &Sweep, dir: &Path, plan: &[(Point, State)], threads: usize) -> Result<()> {
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

// ---------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------

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
    };
    if let Some(s) = crate::report::read_summary(&point.dir) {
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

/// Whether every value of `axis` is a number.
fn numeric(axis: &Axis) -> bool {
    axis.values
        .iter()
        .all(|v| matches!(v, Value::Integer(_) | Value::Float(_)))
}

/// The grid axis the plot's x is: `x` if given (a numeric grid key), else
/// `model.modules` if varied and numeric, else the first numeric axis; `None`: none.
fn x_axis(grid: &[Axis], x: Option<&str>) -> Result<Option<usize>> {
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
fn plot_series(sweep: &Sweep, rows: &[Row], x: usize) -> Vec<(String, Vec<(f64, f64)>)> {
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

/// Writes `results.md`, `results.csv` and (with a numeric grid key) `results.png`.
pub fn write_results(sweep: &Sweep, dir: &Path, x: Option<&str>) -> Result<()> {
    let rows: Vec<Row> = points(sweep, dir).iter().map(row).collect();
    write_atomic(&dir.join("results.md"), markdown(sweep, &rows).as_bytes())?;
    write_atomic(&dir.join("results.csv"), csv(sweep, &rows).as_bytes())?;
    let png = dir.join("results.png");
    let note = match x_axis(&sweep.grid, x)? {
        None => Some("no numeric grid key".to_string()),
        Some(x) => {
            let series = plot_series(sweep, &rows, x);
            if series.is_empty() {
                Some("no finished run to plot".to_string())
            } else {
                let key = &sweep.grid[x].key;
                crate::report::plot::sweep_accuracy(
                    &series,
                    key,
                    &format!("test accuracy against {key}"),
                    &png,
                )?;
                None
            }
        }
    };
    match note {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    #[test]
    fn values_split_outside_brackets_and_quotes() {
        assert_eq!(split_values("sll,local, bp").unwrap(), ["sll", "local", "bp"]);
        assert_eq!(
            split_values("[64,64],[128, 128]").unwrap(),
            ["[64,64]", "[128, 128]"]
        );
        assert_eq!(
            split_values(r#""a,b",'c,d',"e\",f""#).unwrap(),
            [r#""a,b""#, "'c,d'", r#""e\",f""#]
        );
        assert_eq!(
            split_values("{ flip = true, crop_padding = 4 },{}").unwrap(),
            ["{ flip = true, crop_padding = 4 }", "{}"]
        );
        assert!(split_values("[1,2").is_err());
        assert!(split_values("1],2").is_err());
        assert!(split_values("\"a,b").is_err());
        assert!(split_values("1,,2").is_err());
        assert!(split_values("").is_err());
    }

    #[test]
    fn grid_args_parse_like_set_values() {
        let a = parse_grid_arg("objective.beta=0,0.3,1,3").unwrap();
        assert_eq!(a.key, "objective.beta");
        assert_eq!(
            a.values,
            [
                Value::Integer(0),
                Value::Float(0.3),
                Value::Integer(1),
                Value::Integer(3)
            ]
        );
        let a = parse_grid_arg("model.hidden=[64,64],[128,128]").unwrap();
        let arr = |w: i64| Value::Array(vec![Value::Integer(w), Value::Integer(w)]);
        assert_eq!(a.values, [arr(64), arr(128)]);
        let a = parse_grid_arg(r#"train.method=sll,"local",bp"#).unwrap();
        assert_eq!(a.values, [s("sll"), s("local"), s("bp")]);
        assert!(parse_grid_arg("train.method").is_err());
        assert!(parse_grid_arg("train.seed=1,1").is_err());
        assert!(parse_grid_arg("=1,2").is_err());
        assert!(parse_grid_arg("train..seed=1").is_err());
    }

    #[test]
    fn the_product_varies_the_first_key_slowest() {
        let grid = [
            parse_grid_arg("train.method=sll,local").unwrap(),
            parse_grid_arg("train.seed=0,1,2").unwrap(),
        ];
        let points = product(&grid);
        assert_eq!(points.len(), 6);
        let names = run_names(&grid, &points);
        assert_eq!(
            names,
            [
                "method-sll_seed-0",
                "method-sll_seed-1",
                "method-sll_seed-2",
                "method-local_seed-0",
                "method-local_seed-1",
                "method-local_seed-2"
            ]
        );
        assert_eq!(product(&[]), vec![Vec::<Value>::new()]);
    }

    #[test]
    fn names_are_stable_readable_and_unique() {
        let grid = [
            parse_grid_arg("train.method=sll").unwrap(),
            parse_grid_arg("objective.beta=0.3,1e-3").unwrap(),
            parse_grid_arg("model.hidden=[64,64],[128]").unwrap(),
        ];
        let names = run_names(&grid, &product(&grid));
        assert_eq!(
            names,
            [
                "method-sll_beta-0.3_hidden-64x64",
                "method-sll_beta-0.3_hidden-128",
                "method-sll_beta-0.001_hidden-64x64",
                "method-sll_beta-0.001_hidden-128"
            ]
        );
        assert_eq!(names, run_names(&grid, &product(&grid)));
        // Keys with the same last part are named in full.
        let grid = [
            parse_grid_arg("model.dropout=0,0.1").unwrap(),
            parse_grid_arg("objective.dropout=0.2").unwrap(),
        ];
        assert_eq!(
            run_names(&grid, &product(&grid))[1],
            "model.dropout-0.1_objective.dropout-0.2"
        );
        // Values that sanitise alike, and path-like values, stay apart and inside runs/.
        let grid = [parse_grid_arg(r#"data.dir="a b","a_b","../x","a/b""#).unwrap()];
        let names = run_names(&grid, &product(&grid));
        assert_eq!(names, ["dir-a_b", "dir-a_b-2", "dir-.._x", "dir-a_b-3"]);
        assert!(names.iter().all(|n| !n.contains('/')));
        let unique: HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn grid_files_parse_dotted_and_quoted_keys() {
        let text = r#"
config = "mnist-mlp"
[set]
data.train_subset = 1000
"model.hidden" = [64, 64]
[grid]
train.method = ["sll", "local"]
"objective.beta" = [0, 0.3]
"#;
        let r = parse_grid_file(text, "g.toml").unwrap();
        assert_eq!(r.config.as_deref(), Some("mnist-mlp"));
        assert_eq!(
            r.sets,
            [
                ("data.train_subset".to_string(), Value::Integer(1000)),
                (
                    "model.hidden".to_string(),
                    Value::Array(vec![Value::Integer(64), Value::Integer(64)])
                )
            ]
        );
        let keys: Vec<&str> = r.grid.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["train.method", "objective.beta"]);
        assert_eq!(r.grid[0].values, [s("sll"), s("local")]);
        let e = parse_grid_file("[grid]\n\"train.seed\" = 3\n", "g.toml").unwrap_err();
        assert!(e.to_string().contains("must be an array"), "{e}");
        let e = parse_grid_file("[grid]\n\"train.seed\" = []\n", "g.toml").unwrap_err();
        assert!(e.to_string().contains("no values"), "{e}");
        let e = parse_grid_file("grids = 1\n", "g.toml").unwrap_err();
        assert!(e.to_string().contains("g.toml"), "{e}");
    }

    fn sweep_of(grid: &[&str], sets: &[&str]) -> Request {
        let mut r = Request::default();
        for g in grid {
            r.grid.push(parse_grid_arg(g).unwrap());
        }
        for set in sets {
            parse_set(&mut r.sets, set).unwrap();
        }
        r
    }

    #[test]
    fn sweep_toml_round_trips_and_the_grid_cannot_change() {
        let dir = Path::new("/nonexistent-sweep");
        let request = sweep_of(
            &[
                "train.method=sll,local",
                "model.hidden=[64,64],[32]",
                "objective.beta=0.3,1",
            ],
            &["data.train_subset=1000", "data.augment={flip=true}"],
        );
        let (sweep, new) = Sweep::settle(request.clone(), None, dir).unwrap();
        assert!(new);
        assert_eq!(sweep.config, DEFAULT_PRESET);
        assert_eq!(sweep.sets[1].0, "data.augment.flip");
        let text = sweep.to_toml().unwrap();
        let back = parse_grid_file(&text, "sweep.toml").unwrap();
        assert_eq!(back.grid, sweep.grid);
        assert_eq!(back.sets, sweep.sets);
        assert_eq!(back.config.as_deref(), Some(DEFAULT_PRESET));
        // The same grid, or none, continues it.
        let (again, new) = Sweep::settle(request, Some(sweep.clone()), dir).unwrap();
        assert!(!new);
        assert_eq!(again, sweep);
        let (again, _) = Sweep::settle(Request::default(), Some(sweep.clone()), dir).unwrap();
        assert_eq!(again, sweep);
        // Another grid, other sets or another config are refused.
        let other = sweep_of(&["train.method=sll,bp"], &[]);
        let e = Sweep::settle(other, Some(sweep.clone()), dir).unwrap_err();
        assert!(e.to_string().contains("another grid"), "{e}");
        let other = sweep_of(&[], &["data.train_subset=2000"]);
        let e = Sweep::settle(other, Some(sweep.clone()), dir).unwrap_err();
        assert!(e.to_string().contains("--set"), "{e}");
        let other = Request {
            config: Some("cifar10-vgg".into()),
            ..Request::default()
        };
        let e = Sweep::settle(other, Some(sweep), dir).unwrap_err();
        assert!(e.to_string().contains("config"), "{e}");
        // A new sweep needs a grid; a key cannot be both set and varied.
        assert!(Sweep::settle(Request::default(), None, dir).is_err());
        let both = sweep_of(&["train.seed=0,1"], &["train.seed=3"]);
        assert!(Sweep::settle(both, None, dir).is_err());
    }

    #[test]
    fn the_plot_axis_is_a_numeric_key() {
        let grid = [
            parse_grid_arg("train.method=sll,local").unwrap(),
            parse_grid_arg("train.seed=0,1").unwrap(),
            parse_grid_arg("objective.beta=0,0.5").unwrap(),
        ];
        assert_eq!(x_axis(&grid, None).unwrap(), Some(1));
        assert_eq!(x_axis(&grid, Some("objective.beta")).unwrap(), Some(2));
        assert!(x_axis(&grid, Some("train.method")).is_err());
        assert!(x_axis(&grid, Some("model.depth")).is_err());
        assert_eq!(x_axis(&grid[..1], None).unwrap(), None);
    }

    #[test]
    fn run_directories_are_planned_from_what_they_hold() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        assert!(matches!(state(&run), State::New));
        std::fs::create_dir(&run).unwrap();
        assert!(matches!(state(&run), State::New));
        // Only a temporary a killed write left: still new.
        std::fs::write(run.join(format!("{}1-config.toml", crate::io::TEMP_PREFIX)), "x").unwrap();
        assert!(matches!(state(&run), State::New));
        std::fs::write(run.join("notes.txt"), "x").unwrap();
        assert!(matches!(state(&run), State::Blocked(_)));
        std::fs::write(run.join("config.toml"), "x").unwrap();
        assert!(matches!(state(&run), State::Resume(_)));
        std::fs::write(dir.path().join("file"), "x").unwrap();
        assert!(matches!(state(&dir.path().join("file")), State::Blocked(_)));
    }

    #[test]
    fn the_plot_has_a_line_per_other_value_and_only_finished_runs() {
        let dir = tempfile::tempdir().unwrap();
        let request = sweep_of(&["train.method=sll,local", "objective.beta=0,0.5,1"], &[]);
        let (sweep, _) = Sweep::settle(request, None, dir.path()).unwrap();
        let mut rows: Vec<Row> = points(&sweep, dir.path()).iter().map(row).collect();
        for (i, r) in rows.iter_mut().enumerate() {
            r.status = if i == 1 { "interrupted" } else { "finished" }.into();
            r.test = Some(0.5 + 0.01 * i as f64);
        }
        let series = plot_series(&sweep, &rows, 1);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].0, "method=sll");
        assert_eq!(series[0].1.len(), 2);
        assert_eq!(
            series[1].1.iter().map(|p| p.0).collect::<Vec<_>>(),
            [0.0, 0.5, 1.0]
        );
        let path = dir.path().join("results.png");
        crate::report::plot::sweep_accuracy(&series, "objective.beta", "t", &path).unwrap();
        let picture = image::open(&path).unwrap().to_rgb8();
        assert_eq!(picture.dimensions(), crate::report::plot::ONE_PANEL_SIZE);
    }

    #[test]
    fn results_list_every_point_in_grid_order() {
        let dir = tempfile::tempdir().unwrap();
        let request = sweep_of(&["train.method=sll,local", "train.seed=0,1"], &[]);
        let (sweep, _) = Sweep::settle(request, None, dir.path()).unwrap();
        let rows: Vec<Row> = points(&sweep, dir.path()).iter().map(row).collect();
        let md = markdown(&sweep, &rows);
        let lines: Vec<&str> = md
            .lines()
            .skip_while(|l| !l.starts_with("| run "))
            .take_while(|l| l.starts_with('|'))
            .filter(|l| l.starts_with("| "))
            .collect();
        assert_eq!(lines.len(), 5, "{md}");
        // Two grid keys: the matrix follows, one line per seed, blank cells (nothing ran).
        assert!(md.contains("`train.method` across, `train.seed` down"), "{md}");
        assert!(md.trim_end().ends_with("| 1 |  |  |"), "{md}");
        assert!(
            lines[1].starts_with("| method-sll_seed-0 | sll | 0 | not started |"),
            "{md}"
        );
        assert!(lines[4].starts_with("| method-local_seed-1 |"), "{md}");
        let csv = csv(&sweep, &rows);
        assert_eq!(
            csv.lines().next().unwrap(),
            "run,train.method,train.seed,status,epochs,test acc %,avg heads acc %,train min"
        );
        assert_eq!(csv.lines().count(), 5);
    }
}
