//! Run configuration: one section per concern, defaults next to each field.
//!
//! A run is described by a TOML file (a preset in `configs/` or the user's own),
//! overridden by `--set section.key=value` pairs and a few CLI flags. Unknown keys and
//! bad values are rejected with the dotted name of the key; impossible combinations
//! are rejected by [`Config::validate`]. The fully resolved config (seeds included) is
//! written to every run directory.

mod kind;
mod objective;
mod optim;
mod presets;
mod set;
mod train;
mod validate;
mod values;

pub use crate::data::DataConfig;
pub use crate::model::kind::{MAX_CHANNELS, MAX_LAYERS, MAX_MLP_RATIO, MAX_WIDTH};
pub use crate::model::{Activation, ModelConfig, Norm, NormInit, PatchEmbed, Stem, TokenPool};
pub use objective::{HeadKind, ObjectiveConfig, Prior, ProjectionInput, ProjectionKind};
pub use optim::{OptimConfig, OptimizerKind, Schedule};
pub use presets::{preset, DEFAULT_PRESET, PRESETS};
pub use train::{Method, Pipeline, Precision, TrainConfig};
pub use validate::{max_threads, MAX_BATCH, MAX_EPOCHS, MAX_IMAGE_SIZE};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use set::{apply_set, one_line};
use std::path::Path;

/// Everything a run needs, section by section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the preset this config came from (used in run directory names).
    #[serde(default = "default_preset_name")]
    pub preset: String,
    /// Which data, how it is batched and normalised.
    #[serde(default)]
    pub data: DataConfig,
    /// The network: a sequence of blocks.
    #[serde(default)]
    pub model: ModelConfig,
    /// The SLL local objective (projection, dropout, posterior, divergence, head).
    #[serde(default)]
    pub objective: ObjectiveConfig,
    /// One optimizer and learning-rate schedule per block (one in total for `bp`).
    #[serde(default)]
    pub optim: OptimConfig,
    /// Training method, length, seed, device.
    #[serde(default)]
    pub train: TrainConfig,
}

fn default_preset_name() -> String {
    "custom".into()
}

impl Config {
    /// Parses a run's config (its `config.toml`) from TOML text; `origin` names it in
    /// error messages. Model keys of other kinds than the run's, which builds before
    /// per-kind model configs wrote, are ignored.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config> {
        let mut value: toml::Value =
            toml::from_str(text).map_err(|e| anyhow!("{origin}: {}", one_line(&e.to_string())))?;
        kind::forget_other_kinds(&mut value);
        // Runs written before `objective.head` existed trained the linear head, which
        // `auto` no longer means for every method.
        if let Some(objective) = value.get_mut("objective").and_then(|o| o.as_table_mut()) {
            objective
                .entry("head")
                .or_insert_with(|| toml::Value::String("linear".into()));
        }
        // Runs written before `train.precision` existed trained in fp32.
        if let Some(train) = value.get_mut("train").and_then(|t| t.as_table_mut()) {
            train
                .entry("precision")
                .or_insert_with(|| toml::Value::String("fp32".into()));
        }
        Self::from_value(value, origin)
    }

    fn from_value(mut value: toml::Value, origin: &str) -> Result<Config> {
        kind::settle(&mut value);
        let config: Config = serde_path_to_error::deserialize(value.clone()).map_err(|e| {
            let path = e.path().to_string();
            let why = one_line(&e.into_inner().to_string());
            // The tagged parse of `[model]` names only `model`; the kind's own parse
            // names the key at fault.
            let (path, why) = match kind::explain(&value) {
                Some((inner, why)) if path == "model" => (inner, one_line(&why)),
                _ => (path, why),
            };
            // toml's messages end with " in `<key>`", which the prefix says already.
            let why = match why.rfind(" in `") {
                Some(at) if why.ends_with('`') => why[..at].to_string(),
                _ => why,
            };
            anyhow!("{origin}: key `{path}`: {why}")
        })?;
        let mut config: Config = config;
        if config.objective.head == HeadKind::Auto {
            config.objective.head = config.train.method.default_head();
        }
        Ok(config)
    }

    /// Loads `source` (a file path or a preset name; the default preset when `None`) and
    /// applies `sets` (`section.key=value`, value in TOML syntax or a bare string).
    ///
    /// For `local` and `bp`, which have no divergence term, the result has
    /// `objective.beta = 0` and `objective.prior = "none"`, and objective keys in `sets`
    /// that the method ignores get a one-line warning on stderr.
    pub fn load(source: Option<&str>, sets: &[String]) -> Result<Config> {
        Self::load_warning(source, sets, true)
    }

    /// [`Config::load`] without the warning about ignored objective keys, for callers
    /// that choose the method themselves (the benchmarks' baselines).
    pub fn load_quietly(source: Option<&str>, sets: &[String]) -> Result<Config> {
        Self::load_warning(source, sets, false)
    }

    fn load_warning(source: Option<&str>, sets: &[String], warn: bool) -> Result<Config> {
        let (text, origin) = match source {
            None => (
                preset(DEFAULT_PRESET).unwrap().to_string(),
                DEFAULT_PRESET.to_string(),
            ),
            Some(s) if Path::new(s).is_file() => (
                std::fs::read_to_string(s).with_context(|| format!("cannot read config {s}"))?,
                s.to_string(),
            ),
            Some(s) if Path::new(s).exists() && preset(s).is_none() => {
                bail!("config {s}: not a regular file (a FIFO, a device or a folder cannot be read as a config)")
            }
            Some(s) => match preset(s) {
                Some(text) => (text.to_string(), s.to_string()),
                None => bail!(
                    "config {s}: no such file, and not a preset name (presets: {})",
                    PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
                ),
            },
        };
        let mut value: toml::Value =
            toml::from_str(&text).map_err(|e| anyhow!("{origin}: {}", one_line(&e.to_string())))?;
        let kind_before = kind::settle(&mut value);
        for set in sets {
            apply_set(&mut value, set)?;
        }
        let given: Vec<String> = sets
            .iter()
            .filter_map(|s| {
                s.split_once('=')?
                    .0
                    .trim()
                    .strip_prefix("model.")
                    .map(str::to_string)
            })
            .collect();
        kind::after_change(&mut value, kind_before.as_deref(), &given);
        let mut config = Self::from_value(value, &origin)?;
        config.validate()?;
        config.drop_unused_objective(warn.then_some(sets));
        Ok(config)
    }

    /// `local` and `bp` have no divergence term: records β = 0 and prior = "none", the
    /// values they train with (see `learner::effective_objective`), so that a run's
    /// `config.toml` says what was trained. With `sets`, warns on one line about the
    /// objective keys among them that such a method ignores (a preset's or a file's own
    /// values are not warned about).
    fn drop_unused_objective(&mut self, sets: Option<&[String]>) {
        if self.train.method == Method::Sll {
            return;
        }
        let mut ignored = vec!["objective.beta", "objective.prior"];
        if self.objective.head != HeadKind::Projection {
            // A projection head still uses the projection, its dropout and τ.
            ignored.extend([
                "objective.d0",
                "objective.tau",
                "objective.dropout",
                "objective.projection",
            ]);
        }
        let given = |key: &&str| {
            sets.unwrap_or_default()
                .iter()
                .any(|s| s.split_once('=').is_some_and(|(k, _)| k.trim() == *key))
        };
        let given: Vec<&str> = ignored.into_iter().filter(given).collect();
        if !given.is_empty() {
            eprintln!(
                "warning: method `{}` has no divergence term, so --set {} {} no effect (the run records objective.beta = 0 and objective.prior = \"none\")",
                self.train.method,
                given.join(", "),
                if given.len() == 1 { "has" } else { "have" }
            );
        }
        self.objective.beta = 0.0;
        self.objective.prior = Prior::None;
    }

    /// Checks what depends on the dataset (known only once it is loaded).
    pub fn validate_for_classes(&self, classes: i64) -> Result<()> {
        if self.objective.head == HeadKind::Projection && self.objective.d0 != classes {
            bail!(
                "config key `objective.head` = \"projection\" needs `objective.d0` = number of classes ({classes}), got {}",
                self.objective.d0
            );
        }
        Ok(())
    }

    /// The config as TOML text (what `config.toml` of a run holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises")
    }
}

#[cfg(test)]
mod tests;
