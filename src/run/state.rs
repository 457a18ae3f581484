//! The resumable training state of a run: `state.safetensors` in its run directory.
//!
//! One file holds everything a run needs to continue exactly where it stopped: every
//! weight and buffer of the model (under `model.`), every optimizer's state tensors
//! (Adam's moments, SGD's momentum buffers, under `optim<k>.<j>`), and in its metadata
//! the position of the run ([`Progress`]: epochs done, steps into the next epoch, the
//! loss sums of that partial epoch, the optimizers' step counts, the dropout streams'
//! positions, the divergence guard's references, the history of epoch metrics).
//! Data order and augmentation are functions of (seed, epoch, batch), so they need no
//! state; libtorch's generator is reseeded from (seed, epoch, step) before every
//! sequential step. The same build and thread count therefore give the same weights,
//! bit for bit, whether or not a run was interrupted.
//!
//! It is written with [`crate::io::write_atomic`] before `model.safetensors` and before
//! the epoch's line of `metrics.jsonl`, so neither of those is ever ahead of it.

use super::metrics::EpochMetrics;
use crate::checkpoint::{named_tensors, write_tensors, SavedTensors, PROJECTION_SEEDS_KEY};
use crate::learner::Model;
use crate::rules::terms::BlockLoss;
use crate::train::optim::Optimizer;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::Tensor;

/// File name of the training state in a run directory.
pub const STATE_FILE: &str = "state.safetensors";

/// Metadata key of the [`Progress`] JSON.
const PROGRESS_KEY: &str = "progress";

/// Where a run stands, besides its tensors.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Epochs completed (evaluated and checkpointed).
    pub epoch: usize,
    /// Steps of epoch `epoch + 1` already taken (0 at an epoch boundary; more after
    /// an interrupt).
    pub step: usize,
    /// Per-block loss sums over those steps.
    pub partial_sums: Vec<BlockLoss>,
    /// Training seconds of those steps.
    pub partial_seconds: f64,
    /// Training seconds of the completed epochs.
    pub train_seconds: f64,
    /// Wall-clock seconds of the run so far (all sessions).
    pub wall_seconds: f64,
    /// (steps, rule steps) of every optimizer.
    pub optimizer_steps: Vec<(usize, i64)>,
    /// Masks drawn so far by each dropout stream (the input's, then each block's).
    pub dropout_positions: Vec<u64>,
    /// Each block's first-step loss, the divergence guard's reference.
    pub loss_references: Vec<Option<f64>>,
    /// The metrics of every completed epoch (what `metrics.jsonl` holds).
    pub history: Vec<EpochMetrics>,
}

impl Progress {
    /// At the end of epoch `epoch` (0 = before the first), with the run's times so far,
    /// the divergence guard's references and the metrics of every completed epoch.
    pub fn at_epoch(
        epoch: usize,
        train_seconds: f64,
        wall_seconds: f64,
        loss_references: Vec<Option<f64>>,
        history: Vec<EpochMetrics>,
    ) -> Self {
        Self {
            epoch,
            train_seconds,
            wall_seconds,
            loss_references,
            history,
            ..Self::default()
        }
    }
}

/// Every tensor of the state, by its name in the file (shared with the live ones, so
/// copying into them restores the run).
fn state_tensors(model: &Model, optimizers: &[Optimizer]) -> BTreeMap<String, Tensor> {
    let mut tensors: BTreeMap<String, Tensor> = named_tensors(model)
        .into_iter()
        .map(|(name, t)| (format!("model.{name}"), t))
        .collect();
    for (k, optimizer) in optimizers.iter().enumerate() {
        for (j, t) in optimizer.state().tensors.into_iter().enumerate() {
            tensors.insert(format!("optim{k}.{j}"), t);
        }
    }
    tensors
}

/// Writes the state of `model` and `optimizers` at `progress` to `path`.
pub fn save(path: &Path, model: &Model, optimizers: &[Optimizer], progress: &Progress) -> Result<()> {
    let mut progress = progress.clone();
    progress.optimizer_steps = optimizers
        .iter()
        .map(|o| {
            let s = o.state();
            (s.step, s.rule_step)
        })
        .collect();
    progress.dropout_positions = model.dropout_positions();
    let metadata: HashMap<String, String> = [
        (PROGRESS_KEY.to_string(), serde_json::to_string(&progress)?),
        (
            PROJECTION_SEEDS_KEY.to_string(),
            serde_json::to_string(&model.projection_seeds())?,
        ),
        ("sll_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ]
    .into();
    write_tensors(&state_tensors(model, optimizers), metadata, path)
}

/// Restores `model` and `optimizers` (built from the run's config) from `path` and
/// returns where the run stands.
pub fn load(path: &Path, model: &Model, optimizers: &mut [Optimizer]) -> Result<Progress> {
    let file = SavedTensors::read(path)?;
    file.check_seeds(model)?;
    let progress: Progress = serde_json::from_str(file.meta(PROGRESS_KEY)?)
        .map_err(|e| anyhow!("{}: unreadable `{PROGRESS_KEY}` ({e})", path.display()))?;
    let streams = model.dropout_positions();
    if progress.optimizer_steps.len() != optimizers.len() || progress.dropout_positions.len() != streams.len()
    {
        bail!(
            "{}: holds {} optimizers and {} dropout streams, the run's config builds {} and {}",
            path.display(),
            progress.optimizer_steps.len(),
            progress.dropout_positions.len(),
            optimizers.len(),
            streams.len()
        );
    }
    file.copy_into(&state_tensors(model, optimizers), "")?;
    for (optimizer, &(step, rule_step)) in optimizers.iter_mut().zip(&progress.optimizer_steps) {
        optimizer.set_steps(step, rule_step)?;
    }
    model.set_dropout_positions(&progress.dropout_positions);
    Ok(progress)
}
