//! `summary.json`: how a run ended and what it reached.

use crate::config::Config;
use crate::heap::peak_rss_bytes;
use crate::learner::{Evaluation, Model};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tch::Device;

/// The libtorch version `tch` 0.24 binds.
pub const LIBTORCH_VERSION: &str = "2.11.0";
/// The `summary.json` of the run in `dir`, if it has a readable one.
pub fn read_summary(dir: &Path) -> Option<Summary> {
    let text = crate::io::read_text(&dir.join("summary.json")).ok()?;
    serde_json::from_str(&text).ok()
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
    /// When the test accuracy first reached each of [`super::time_to_accuracy::THRESHOLDS`] (those reached).
    #[serde(default)]
    pub time_to_accuracy: Vec<super::time_to_accuracy::TimeToAccuracy>,
    /// Trainable parameters (blocks and heads).
    pub parameters: i64,
    /// Counted FLOPs of one training step per example (blocks, heads, auxiliary nets,
    /// projections: `sll bench flops`'s count); absent in runs written before it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_flops_per_example: Option<f64>,
    /// Image files left out because they do not decode (`data.bad_files = "skip"`),
    /// each as `path: reason`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_files: Vec<String>,
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
            train_flops_per_example: Some(crate::learner::flops::count(model).per_step(1)),
            skipped_files: config.data.skipped.clone(),
            backend: format!("tch 0.24 / libtorch {LIBTORCH_VERSION} ({device:?})"),
            threads: tch::get_num_threads(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}
