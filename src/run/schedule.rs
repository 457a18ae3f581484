//! How the blocks of a run are scheduled: one after another, in thread stages, or in
//! MPI ranks.

use crate::config::{Config, Pipeline};
use crate::learner::Model;
use crate::model::InputShape;
#[cfg(feature = "mpi")]
use crate::train::distributed;
use crate::train::optim::LrSchedule;
use crate::train::pipeline;
use crate::train::progress::{EpochProgress, LossGuard};
#[cfg(not(feature = "mpi"))]
use anyhow::bail;
use anyhow::Result;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// How the blocks of a run are scheduled.
pub(super) enum Schedule {
    Sequential,
    Threads(pipeline::Stages),
    #[cfg(feature = "mpi")]
    Mpi(distributed::MpiPipeline),
}

impl Schedule {
    /// The schedule of `config` for `model` (whose inputs are `input`, in `classes`
    /// classes). A thread pipeline without `train.stages` gets the stage count measured
    /// fastest here ([`fastest_stages`]), written into `config` so that the run records
    /// it and a resumed run keeps it.
    pub(super) fn plan(config: &mut Config, model: &Model, classes: i64, input: InputShape) -> Result<Self> {
        Ok(match config.train.pipeline {
            Pipeline::None => Self::Sequential,
            Pipeline::Threads => {
                if config.train.stages == 0 && config.train.stage_devices.is_empty() {
                    let device = model.network.stores[0].device();
                    config.train.stages = fastest_stages(config, model, classes, input, device)?;
                }
                Self::Threads(pipeline::Stages::plan_by_cost(&config.train, &model.block_costs())?)
            }
            #[cfg(feature = "mpi")]
            Pipeline::Mpi => {
                let mpi = distributed::MpiPipeline::init(&config.train, model.network.len())?;
                tch::set_num_threads(mpi.threads() as i32);
                Self::Mpi(mpi)
            }
            #[cfg(not(feature = "mpi"))]
            Pipeline::Mpi => bail!(
                "config key `train.pipeline` = \"mpi\" needs a build with the `mpi` feature (install OpenMPI, then `cargo build --release --features mpi`) started by mpirun"
            ),
        })
    }

    /// Whether this process writes the run directory (every process but MPI ranks > 0).
    pub(super) fn is_root(&self) -> bool {
        match self {
            #[cfg(feature = "mpi")]
            Self::Mpi(mpi) => mpi.is_root(),
            _ => true,
        }
    }

    /// Whether this process reads the training data (all but MPI stages after the first).
    pub(super) fn reads_data(&self) -> bool {
        match self {
            #[cfg(feature = "mpi")]
            Self::Mpi(mpi) => mpi.reads_data(),
            _ => true,
        }
    }

    /// The pipeline this schedule runs.
    pub(super) fn kind(&self) -> Pipeline {
        match self {
            Self::Sequential => Pipeline::None,
            Self::Threads(_) => Pipeline::Threads,
            #[cfg(feature = "mpi")]
            Self::Mpi(_) => Pipeline::Mpi,
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Self::Sequential => format!("{} threads", tch::get_num_threads()),
            Self::Threads(stages) => stages.to_string(),
            #[cfg(feature = "mpi")]
            Self::Mpi(mpi) => mpi.to_string(),
        }
    }
}

/// The stage counts `--pipeline threads` chooses from: 1 to the number of cores, and
/// one stage per block (the most concurrency), at most the number of blocks.
fn stage_candidates(blocks: usize, cores: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = (1..=cores.min(blocks)).collect();
    if blocks > cores && blocks <= 2 * cores {
        counts.push(blocks);
    }
    counts
}

/// Times a few training steps of each candidate stage count ([`stage_candidates`]) on
/// a throwaway copy of the model with random minibatches, and returns the fastest
/// count, printing what it measured. The run's own model is not touched; what the
/// copies draw from libtorch's generator is the same on every run.
fn fastest_stages(
    config: &Config,
    model: &Model,
    classes: i64,
    input: InputShape,
    device: Device,
) -> Result<usize> {
    let blocks = model.network.len();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let candidates = stage_candidates(blocks, cores);
    if candidates.len() == 1 {
        return Ok(candidates[0]);
    }
    let batch = config.data.batch_size as i64;
    let data: Vec<(Tensor, Tensor)> = (0..4)
        .map(|_| {
            let x = Tensor::randn([batch, input[0], input[1], input[2]], (Kind::Float, device));
            (x, Tensor::randint(classes, [batch], (Kind::Int64, device)))
        })
        .collect();
    let mut timings = vec![];
    for &count in &candidates {
        let mut trial = config.clone();
        trial.train.stages = count;
        let mut copy = Model::new(&trial, classes, input, device)?;
        let stages = pipeline::Stages::plan_by_cost(&trial.train, &copy.block_costs())?;
        let mut optimizers =
            crate::train::build_optimizers(&trial, &copy, &LrSchedule::new(&trial.optim, 1, 1))?;
        let guard = LossGuard::new(0.0, vec![]);
        let mut steps = |n: usize| -> Result<f64> {
            let progress = EpochProgress::new(indicatif::ProgressBar::hidden(), 1, String::new(), &guard);
            let batches = (0..n).map(|i| {
                let (x, y) = &data[i % data.len()];
                (x.shallow_clone(), y.shallow_clone())
            });
            let start = Instant::now();
            stages.train_epoch(&mut copy, &mut optimizers, batches, &progress)?;
            Ok(start.elapsed().as_secs_f64())
        };
        // One short call to warm up; then as many steps as fit in about a second (at
        // least 8), timed in one call (one pipeline fill and drain).
        let warm = steps(2)?;
        let n = ((1.0 / (warm / 2.0).max(1e-4)) as usize).clamp(8, 64);
        timings.push((count, steps(n)? / n as f64));
    }
    let &(best, seconds) = timings
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .expect("at least two candidates");
    let measured: Vec<String> = timings
        .iter()
        .map(|(k, t)| format!("{k}: {:.0}", batch as f64 / t))
        .collect();
    eprintln!(
        "pipeline: {best} stage{} measured fastest on {cores} cores ({:.0} samples/s; stages: samples/s {}); set train.stages to choose",
        if best == 1 { "" } else { "s" },
        batch as f64 / seconds,
        measured.join(", ")
    );
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::stage_candidates;

    #[test]
    fn candidates_run_from_one_stage_to_the_cores_and_one_per_block() {
        assert_eq!(stage_candidates(3, 2), vec![1, 2, 3]);
        assert_eq!(stage_candidates(16, 2), vec![1, 2]);
        assert_eq!(stage_candidates(2, 8), vec![1, 2]);
        assert_eq!(stage_candidates(1, 2), vec![1]);
    }
}
