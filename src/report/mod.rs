//! What a run leaves behind and prints: the run directory (`config.toml`,
//! `metrics.jsonl`, `summary.json`, `model.safetensors`, `state.safetensors`),
//! per-epoch lines, and the final per-block table.

use crate::config::Config;
use crate::io::write_atomic;
use crate::train::model::{Evaluation, Model};
use crate::train::{BlockLoss, Terms};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tch::Device;

pub mod compare;
pub mod memory;
pub mod plot;

/// The libtorch version `tch` 0.24 binds.
pub const LIBTORCH_VERSION: &str = "2.11.0";

/// Peak resident memory of this process so far, in bytes.
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as u64 * 1024
}

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
        self.path.join(crate::train::state::STATE_FILE)
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

/// The `summary.json` of the run in `dir`, if it has a readable one.
pub fn read_summary(dir: &Path) -> Option<Summary> {
    let text = crate::io::read_text(&dir.join("summary.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Mean training loss terms of one block over an epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockTrainLoss {
    /// 1-based block number.
    pub block: usize,
    /// The rule's mean terms (`prediction`: the head's cross-entropy; SLL's
    /// `divergence`, InfoPro's `reconstruction`, PredSim's `similarity`).
    #[serde(flatten)]
    pub terms: Terms,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Learning rate at the start of the epoch.
    pub learning_rate: f64,
    /// Per-block mean training losses.
    pub train_loss: Vec<BlockTrainLoss>,
    /// Test accuracy of the final classifier.
    pub test_accuracy: f64,
    /// Test accuracy of every block's head (null where a block has none).
    pub block_test_accuracy: Vec<Option<f64>>,
    /// Test accuracy of the averaged heads' softmaxes.
    pub ensemble_test_accuracy: f64,
    /// Training time of this epoch (evaluation excluded).
    pub seconds: f64,
    /// Training throughput of this epoch.
    pub train_samples_per_second: f64,
    /// Wall-clock seconds from the start of training to the end of this epoch's
    /// evaluation (0 in runs written before it was recorded).
    #[serde(default)]
    pub wall_seconds: f64,
}

impl EpochMetrics {
    /// Metrics of an epoch from its summed losses over `steps` steps and its evaluation.
    pub fn new(
        epoch: usize,
        learning_rate: f64,
        sums: &[BlockLoss],
        steps: usize,
        eval: &Evaluation,
        seconds: f64,
        samples: usize,
    ) -> Self {
        let train_loss = sums
            .iter()
            .map(|s| BlockTrainLoss {
                block: s.block + 1,
                terms: s.terms.divided(steps as f64),
            })
            .collect();
        Self {
            epoch,
            learning_rate,
            train_loss,
            test_accuracy: eval.accuracy,
            block_test_accuracy: eval.block_accuracy.clone(),
            ensemble_test_accuracy: eval.ensemble_accuracy,
            seconds,
            train_samples_per_second: samples as f64 / seconds,
            wall_seconds: 0.0,
        }
    }

    /// The line printed after each epoch.
    pub fn one_line(&self, epochs: usize) -> String {
        let blocks: Vec<String> = self
            .block_test_accuracy
            .iter()
            .map(|a| a.map_or("-".into(), |a| format!("{:.2}", 100.0 * a)))
            .collect();
        let losses: Vec<String> = self
            .train_loss
            .iter()
            .map(|l| {
                let values: Vec<String> = l.terms.0.iter().map(|(_, v)| format!("{v:.3}")).collect();
                values.join("/")
            })
            .collect();
        let names: Vec<&str> = self.train_loss.first().map_or(vec![], |l| {
            l.terms
                .0
                .iter()
                .map(|(n, _)| crate::train::short_name(n))
                .collect()
        });
        format!(
            "epoch {}/{epochs}  test {:.2}%  blocks {}  loss {} {}  {:.1}s  {:.0} samples/s",
            self.epoch,
            100.0 * self.test_accuracy,
            blocks.join(" "),
            names.join("/"),
            losses.join(" "),
            self.seconds,
            self.train_samples_per_second
        )
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every epoch trained.
    #[default]
    Finished,
    /// Stopped by Ctrl-C or SIGTERM; `sll train --resume DIR` continues it.
    Interrupted,
    /// Stopped by the divergence guard (a non-finite or exploding loss).
    Diverged,
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunStatus::Finished => "finished",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Diverged => "diverged",
        })
    }
}

/// `summary.json`: the run's outcome and everything needed to compare it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// finished, interrupted or diverged (runs written before it was recorded: finished).
    #[serde(default)]
    pub status: RunStatus,
    /// Epochs evaluated and checkpointed (the accuracies below are those of the last).
    #[serde(default)]
    pub epochs_completed: usize,
    /// Why the run stopped early (interrupted or diverged runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// sll, local or bp.
    pub method: String,
    /// Preset name.
    pub preset: String,
    /// Architecture, e.g. `mlp 1024-1024-1024, 1 per block (3 blocks)`.
    pub model: String,
    /// Dataset name.
    pub dataset: String,
    /// Epochs the run is configured for.
    pub epochs: usize,
    /// Training minibatch size.
    pub batch_size: usize,
    /// Run seed.
    pub seed: u64,
    /// Seeds of the fixed projections (input first, then each block; null where none).
    pub projection_seeds: Vec<Option<u64>>,
    /// Final classifier's test accuracy in [0, 1].
    pub test_accuracy: f64,
    /// Every block head's test accuracy.
    pub block_test_accuracy: Vec<Option<f64>>,
    /// Averaged heads' test accuracy.
    pub ensemble_test_accuracy: f64,
    /// Total training time (evaluation excluded).
    pub train_seconds: f64,
    /// Training throughput over the run.
    pub train_samples_per_second: f64,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: u64,
    /// When the test accuracy first reached each of [`compare::THRESHOLDS`] (those reached).
    #[serde(default)]
    pub time_to_accuracy: Vec<compare::TimeToAccuracy>,
    /// Trainable parameters (blocks and heads).
    pub parameters: i64,
    /// Tensor engine and device.
    pub backend: String,
    /// Intra-op threads used.
    pub threads: i32,
    /// Version of sll.
    pub version: String,
}

impl Summary {
    /// Whether this is the summary of a run that finished `epochs` epochs or more.
    pub fn finished_all(&self, epochs: usize) -> bool {
        self.status == RunStatus::Finished && self.epochs_completed >= epochs
    }

    /// Summary of a run after `epochs_completed` epochs (all of them: finished), the
    /// last with evaluation `eval`.
    pub fn new(
        config: &Config,
        model: &Model,
        eval: &Evaluation,
        epochs_completed: usize,
        train_seconds: f64,
        train_samples: usize,
        device: Device,
    ) -> Self {
        Self {
            status: RunStatus::Finished,
            epochs_completed,
            stopped: None,
            method: config.train.method.to_string(),
            preset: config.preset.clone(),
            model: format!("{} ({} blocks)", config.model.describe(), model.network.len()),
            dataset: config.data.dataset.clone(),
            epochs: config.train.epochs,
            batch_size: config.data.batch_size,
            seed: config.train.seed,
            projection_seeds: model.projection_seeds(),
            test_accuracy: eval.accuracy,
            block_test_accuracy: eval.block_accuracy.clone(),
            ensemble_test_accuracy: eval.ensemble_accuracy,
            train_seconds,
            train_samples_per_second: (train_samples * epochs_completed) as f64 / train_seconds.max(1e-9),
            peak_rss_bytes: peak_rss_bytes(),
            time_to_accuracy: vec![],
            parameters: model.network.parameter_count(),
            backend: format!("tch 0.24 / libtorch {LIBTORCH_VERSION} ({device:?})"),
            threads: tch::get_num_threads(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// Prints the final per-block table: head accuracy and last epoch's loss terms.
pub fn print_final_table(history: &[EpochMetrics], eval: &Evaluation) {
    let last = history.last().expect("at least one epoch");
    let mut names: Vec<String> = vec![];
    for l in &last.train_loss {
        for (n, _) in &l.terms.0 {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let header: Vec<String> = names
        .iter()
        .map(|n| format!("  {:>20}", format!("train {n}")))
        .collect();
    println!("{:>6}  {:>14}{}", "block", "head accuracy", header.concat());
    for (i, accuracy) in eval.block_accuracy.iter().enumerate() {
        let loss = last.train_loss.iter().find(|l| l.block == i + 1);
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                let v = loss.and_then(|l| l.terms.get(n));
                format!("  {:>20}", v.map_or("-".to_string(), |v| format!("{v:.4}")))
            })
            .collect();
        println!(
            "{:>6}  {:>14}{}",
            i + 1,
            accuracy.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a)),
            cells.concat()
        );
    }
    println!(
        "test accuracy (final classifier): {:.2}%   averaged heads: {:.2}%",
        100.0 * eval.accuracy,
        100.0 * eval.ensemble_accuracy
    );
}
