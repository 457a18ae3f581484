//! Opening a run directory: a new run creates it; a resumed run reopens it, loads its
//! state into the model and optimizers, refuses an `--epochs` below what it trained,
//! and repairs a kill between the state and the files written after it. Either way
//! the resolved config and the metrics so far are written before the first step.

use super::dir::RunDir;
use super::state::{self, Progress};
use crate::checkpoint;
use crate::config::Config;
use crate::learner::Model;
use crate::train::optim::Optimizer;
use anyhow::{bail, Result};
use std::path::Path;

/// The run directory at `out`, created (`resuming` false) or reopened with its state
/// loaded into `model` and `optimizers`, and where the run stands.
pub fn open_run(
    config: &Config,
    out: &Path,
    resuming: bool,
    model: &Model,
    optimizers: &mut [Optimizer],
) -> Result<(RunDir, Progress)> {
    let run_dir = if resuming {
        RunDir::reopen(out)?
    } else {
        RunDir::create(out)?
    };
    let mut progress = Progress::default();
    if resuming && run_dir.state_path().exists() {
        progress = state::load(&run_dir.state_path(), model, optimizers)?;
        if progress.epoch > config.train.epochs {
            bail!(
                "--epochs {}: the run in {} has trained {} epochs already",
                config.train.epochs,
                out.display(),
                progress.epoch
            );
        }
        // A kill between the state and the files after it: bring them level.
        if progress.step == 0 && progress.epoch > 0 {
            checkpoint::save(model, config, progress.epoch, &run_dir.checkpoint_path())?;
        }
    }
    run_dir.write_config(config)?;
    run_dir.write_metrics(&progress.history)?;
    Ok((run_dir, progress))
}

/// How a run starts, for its start line: from scratch, after an epoch, or part-way.
pub fn resumed_from(progress: &Progress) -> String {
    match (progress.epoch, progress.step) {
        (0, 0) => String::new(),
        (e, 0) => format!(", resumed after epoch {e}"),
        (e, s) => format!(", resumed at epoch {}, step {s}", e + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_new_run_is_created_and_a_resumed_one_reopened() {
        let _turn = crate::libtorch_turn();
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        let config = Config::load(None, &["model.hidden=[8]".into(), "objective.d0=8".into()]).unwrap();
        let model = Model::new(&config, 10, [1, 4, 4], Device::Cpu).unwrap();
        let schedule = crate::train::optim::LrSchedule::new(&config.optim, 1, 1);
        let mut optimizers = crate::train::build_optimizers(&config, &model, &schedule).unwrap();
        let (_, progress) = open_run(&config, &out, false, &model, &mut optimizers).unwrap();
        assert_eq!((progress.epoch, progress.step), (0, 0));
        assert!(out.join("config.toml").is_file() && out.join("metrics.jsonl").is_file());
        assert_eq!(resumed_from(&progress), "");
        // A second creation is refused; reopening a run without a state starts it over.
        assert!(open_run(&config, &out, false, &model, &mut optimizers).is_err());
        let (_, progress) = open_run(&config, &out, true, &model, &mut optimizers).unwrap();
        assert_eq!(progress.epoch, 0);
        let later = Progress {
            epoch: 3,
            step: 7,
            ..Progress::default()
        };
        assert_eq!(resumed_from(&later), ", resumed at epoch 4, step 7");
    }
}
