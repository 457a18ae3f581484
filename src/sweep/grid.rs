//! The grid: dotted config keys and their values as `--grid`, `--set` and grid files
//! write them, the points they span, and how values read in messages.

use anyhow::{anyhow, bail, Context, Result};
use toml::Value;

/// One varied config key and the values it takes, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Dotted config key, e.g. `train.method`.
    pub key: String,
    /// Its values, each a TOML value as `--set` would parse it.
    pub values: Vec<Value>,
}

/// The grid key whose values are tables of config keys set together, so that one
/// sweep can vary one setting at a time: `variant = [{}, { "objective.beta" = 0 }, ...]`
/// (`{}`: the base config).
pub const VARIANT: &str = "variant";

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
pub(super) fn check_key(key: &str, what: &str) -> Result<()> {
    let ok = key
        .split('.')
        .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "_-".contains(c)));
    if !ok {
        bail!("{what}: `{key}` is not a config key (section.key)");
    }
    Ok(())
}

/// An axis with `values`, refusing an empty list and a value given twice.
pub(super) fn axis(key: &str, values: Vec<Value>, what: &str) -> Result<Axis> {
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
pub(super) fn flatten(prefix: &str, table: &toml::Table, out: &mut Vec<(String, Value)>) {
    flatten_to_keys(prefix, table, &[], out);
}

/// [`flatten`], stopping at grid keys (whose values may be tables: `variant`).
pub(super) fn flatten_to_keys(
    prefix: &str,
    table: &toml::Table,
    grid: &[Axis],
    out: &mut Vec<(String, Value)>,
) {
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
pub(super) fn push_set(sets: &mut Vec<(String, Value)>, key: &str, value: Value) {
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
pub(super) fn parse_set(sets: &mut Vec<(String, Value)>, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {set}: expected section.key=value"))?;
    check_key(key.trim(), &format!("--set {set}"))?;
    push_set(sets, key.trim(), parse_value(raw));
    Ok(())
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

/// A value without TOML's quotes around strings (tables and CSV cells, messages).
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// `grid` as `key=v1,v2 × key=...` (messages).
pub(super) fn describe_grid(grid: &[Axis]) -> String {
    grid.iter()
        .map(|a| {
            let values: Vec<String> = a.values.iter().map(plain).collect();
            format!("{}={}", a.key, values.join(","))
        })
        .collect::<Vec<_>>()
        .join(" × ")
}

/// `sets` as `key=value, ...` (messages, results).
pub(super) fn describe_sets(sets: &[(String, Value)]) -> String {
    if sets.is_empty() {
        return "none".into();
    }
    sets.iter()
        .map(|(k, v)| format!("{k}={}", plain(v)))
        .collect::<Vec<_>>()
        .join(", ")
}
