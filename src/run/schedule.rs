//! How the blocks of a run are scheduled: one after another, in thread stages, or in
//! MPI ranks.

use crate::config::{Config, Pipeline};
use crate::learner::Model;
#[cfg(feature = "mpi")]
use crate::train::distributed;
use crate::train::pipeline;
#[cfg(not(feature = "mpi"))]
use anyhow::bail;
use anyhow::Result;

/// How the blocks of a run are scheduled.
pub(super) enum Schedule {
    Sequential,
    Threads(pipeline::Stages),
    #[cfg(feature = "mpi")]
    Mpi(distributed::MpiPipeline),
}

impl Schedule {
    pub(super) fn plan(config: &Config, model: &Model) -> Result<Self> {
        Ok(match config.train.pipeline {
            Pipeline::None => Self::Sequential,
            Pipeline::Threads => Self::Threads(pipeline::Stages::plan_by_cost(&config.train, &model.block_costs())?),
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
