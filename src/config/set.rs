//! `--set section.key=value`: one override applied to the TOML table of a config.

use anyhow::{anyhow, Result};

/// `s` on one line (TOML parse errors span several).
pub(super) fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Applies one `section.key=value` override to a TOML table.
pub(super) fn apply_set(root: &mut toml::Value, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {set}: expected section.key=value"))?;
    let key = key.trim();
    let raw = raw.trim();
    let value = crate::model::config::setting_value(raw);
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| anyhow!("--set {set}: empty key"))?;
    let mut table = root
        .as_table_mut()
        .ok_or_else(|| anyhow!("config root is not a table"))?;
    for part in parts {
        table = table
            .entry(part)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {set}: `{part}` is not a section"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}
