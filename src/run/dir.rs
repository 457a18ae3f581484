//! The folder of one run: `config.toml`, `metrics.jsonl`, `summary.json`,
//! `model.safetensors` and `state.safetensors`, each written atomically.

use super::metrics::EpochMetrics;
use super::summary::Summary;
use crate::config::Config;
use crate::io::write_atomic;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The folder of one run.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates the folder of a new run; refuses one that exists and is not empty, so
    /// that nothing already there is overwritten.
    pub fn create(path: &Path) -> Result<Self> {
        if let Ok(mut entries) = std::fs::read_dir(path) {
            if entries.next().is_some() {
                let what = if path.join("config.toml").exists() {
                    format!(
                        "already holds a run (continue it with `sll train --resume {}`)",
                        path.display()
                    )
                } else {
                    "is not empty".to_string()
                };
                bail!(
                    "--out {} {what}; choose another --out (nothing was written)",
                    path.display()
                );
            }
        } else if path.exists() {
            bail!("--out {} is not a folder", path.display());
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create run directory {}", path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The folder of an existing run (`--resume`), with the temporary files a killed
    /// writer may have left removed.
    pub fn reopen(path: &Path) -> Result<Self> {
        if !path.join("config.toml").is_file() {
            bail!(
                "--resume {}: no config.toml there; not a run directory",
                path.display()
            );
        }
        crate::io::remove_stale_temporaries(path)?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the checkpoint goes.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.path.join("model.safetensors")
    }

    /// Where the resumable training state goes.
    pub fn state_path(&self) -> PathBuf {
        self.path.join(super::state::STATE_FILE)
    }

    /// Writes the fully resolved config.
    pub fn write_config(&self, config: &Config) -> Result<()> {
        write_atomic(&self.path.join("config.toml"), config.to_toml().as_bytes())
    }

    /// Writes `metrics.jsonl`: one JSON line per epoch of `history` (the whole file
    /// anew, atomically, so that it never holds a torn line).
    pub fn write_metrics(&self, history: &[EpochMetrics]) -> Result<()> {
        let mut text = String::new();
        for metrics in history {
            text.push_str(&serde_json::to_string(metrics)?);
            text.push('\n');
        }
        write_atomic(&self.path.join("metrics.jsonl"), text.as_bytes())
    }

    /// Writes `summary.json`.
    pub fn write_summary(&self, summary: &Summary) -> Result<()> {
        write_atomic(
            &self.path.join("summary.json"),
            serde_json::to_string_pretty(summary)?.as_bytes(),
        )
    }
}
