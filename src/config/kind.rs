//! The `[model]` table before it is typed: the kind it names (`mlp` when it names
//! none), and the keys that a change of kind, or a run directory written before each
//! kind had a config of its own, leaves behind.

use crate::model::ModelConfig;

/// The name of `model.kind` when the table gives none.
const DEFAULT_KIND: &str = "mlp";

/// The `[model]` table of `root`, if there is one.
fn table(root: &mut toml::Value) -> Option<&mut toml::Table> {
    root.get_mut("model")?.as_table_mut()
}

/// `model.kind` of `root`, made explicit (`mlp` when unset); `None` without a
/// `[model]` table or with a kind that is not a string (left to the typed parse).
pub(super) fn settle(root: &mut toml::Value) -> Option<String> {
    let model = table(root)?;
    let kind = model
        .entry("kind")
        .or_insert_with(|| toml::Value::String(DEFAULT_KIND.into()));
    kind.as_str().map(str::to_string)
}

/// The keys of the config of the kind named `kind` (`None` for an unknown kind).
pub(super) fn keys_of(kind: &str) -> Option<Vec<String>> {
    let config = ModelConfig::default_of(kind)?;
    let value = toml::Value::try_from(&config).ok()?;
    Some(value.as_table()?.keys().cloned().collect())
}

/// Every key of any kind's config.
fn every_key() -> Vec<String> {
    crate::model::config::KINDS
        .iter()
        .flat_map(|kind| keys_of(kind).unwrap_or_default())
        .collect()
}

/// Removes from `[model]` the keys its kind does not have, if `drop(key)` says so.
fn retain(root: &mut toml::Value, drop: impl Fn(&str) -> bool) {
    let Some(kind) = settle(root) else { return };
    let Some(keys) = keys_of(&kind) else { return };
    if let Some(model) = table(root) {
        model.retain(|key, _| keys.iter().any(|k| k == key) || !drop(key));
    }
}

/// After `--set model.kind=…` changed the kind from `before`: drops the keys of the
/// file's or preset's `[model]` that the new kind does not have (those given with
/// `--set`, `given`, stay, and are errors if the kind lacks them).
pub(super) fn after_change(root: &mut toml::Value, before: Option<&str>, given: &[String]) {
    let now = settle(root);
    if now.as_deref() != before {
        retain(root, |key| !given.iter().any(|g| g == key));
    }
}

/// For a run's own `config.toml`: drops the keys of other kinds that builds before
/// per-kind configs wrote into every `[model]` (a key no kind has stays: an error).
pub(super) fn forget_other_kinds(root: &mut toml::Value) {
    let every = every_key();
    retain(root, |key| every.iter().any(|k| k == key));
}

/// Why the `[model]` table of `root` does not parse, with the key at fault named
/// (`model.hidden`), where the kind is known: the tagged parse names only `model`.
pub(super) fn explain(root: &toml::Value) -> Option<(String, String)> {
    let mut model = root.get("model")?.as_table()?.clone();
    let kind = model.remove("kind")?;
    let config = ModelConfig::default_of(kind.as_str()?)?;
    let (path, why) = config.kind().first_error(toml::Value::Table(model))?;
    let path = if path.is_empty() || path == "." {
        "model".to_string()
    } else {
        format!("model.{path}")
    };
    Some((path, why))
}
