//! [`Config::validate`]: the rules every config must satisfy, and the limits on sizes.

use super::*;
use anyhow::{anyhow, bail, Result};

impl Config {
    /// Rejects values and combinations that cannot train, naming the key.
    pub fn validate(&self) -> Result<()> {
        let o = &self.objective;
        let checks: [(bool, &str, String); 11] = [
            (self.data.batch_size > 0, "data.batch_size", "must be > 0".into()),
            (
                self.data.eval_batch_size > 0,
                "data.eval_batch_size",
                "must be > 0".into(),
            ),
            (
                self.data.mean.len() == self.data.std.len(),
                "data.std",
                "must have as many entries as data.mean".into(),
            ),
            (
                self.data.std.iter().all(|s| *s > 0.0),
                "data.std",
                "entries must be > 0".into(),
            ),
            (o.d0 > 0, "objective.d0", "must be > 0".into()),
            (
                o.sparse_nonzeros > 0 && o.sparse_nonzeros <= o.d0,
                "objective.sparse_nonzeros",
                "must be in 1..=d0".into(),
            ),
            (o.tau > 0.0, "objective.tau", "must be > 0".into()),
            (o.beta >= 0.0, "objective.beta", "must be >= 0".into()),
            (
                (0.0..1.0).contains(&o.dropout),
                "objective.dropout",
                "must be in [0, 1)".into(),
            ),
            (
                (0.0..1.0).contains(&o.label_smoothing),
                "objective.label_smoothing",
                "must be in [0, 1)".into(),
            ),
            (
                self.optim.lr > 0.0 && self.optim.lr.is_finite(),
                "optim.lr",
                "must be a finite number > 0".into(),
            ),
        ];
        for (ok, key, why) in checks {
            if !ok {
                bail!("config key `{key}` {why}");
            }
        }
        if self.train.epochs == 0 {
            bail!("config key `train.epochs` must be > 0");
        }
        if self.train.pipeline != Pipeline::None && self.train.method == Method::Bp {
            bail!(
                "config key `train.pipeline` = \"{}\" needs a local rule (sll, local, dgl, infopro or predsim): bp's backward pass crosses every block",
                self.train.pipeline
            );
        }
        if !self.train.stage_devices.is_empty() && self.train.pipeline != Pipeline::Threads {
            bail!("config key `train.stage_devices` needs `train.pipeline` = \"threads\"");
        }
        for name in &self.train.stage_devices {
            crate::device::parse(name).map_err(|e| anyhow!("config key `train.stage_devices`: {e:#}"))?;
        }
        if self.train.replicas == 0 {
            bail!("config key `train.replicas` must be >= 1");
        }
        if self.train.replicas > 1 && self.train.pipeline != Pipeline::Mpi {
            bail!(
                "config key `train.replicas` = {} needs `train.pipeline` = \"mpi\" (replicas are MPI ranks)",
                self.train.replicas
            );
        }
        if self.optim.warmup_epochs < 0.0 {
            bail!("config key `optim.warmup_epochs` must be >= 0");
        }
        crate::device::parse(&self.train.device).map_err(|e| anyhow!("config key `train.device`: {e:#}"))?;
        self.validate_values()?;
        Ok(())
    }
}

/// Largest training or evaluation minibatch.
pub const MAX_BATCH: usize = 1 << 20;
/// Largest `data.image_size` of an image folder.
pub const MAX_IMAGE_SIZE: usize = 1024;
/// Most epochs of a run.
pub const MAX_EPOCHS: usize = 100_000;
/// Most layers of an AugLocal auxiliary net (`objective.aux_depth`).
pub const MAX_AUX_DEPTH: usize = 64;
/// The thread bound [`max_threads`] never goes below.
pub(super) const MIN_THREAD_BOUND: usize = 8;

/// Most threads `train.threads` or `data.workers` (and the benchmarks' `--threads`)
/// may ask for: 4 per core of this machine, and at least 8, so that a preset sized for
/// a bigger machine still loads on a small one.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(4).max(MIN_THREAD_BOUND)
}

pub(super) use crate::model::kind::ensure;
