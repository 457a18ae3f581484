//! Stochastic Layer-wise Learning (SLL, arXiv 2505.05181): deep networks trained
//! block by block, each block with its own local loss, no gradient crossing a block.
//! `docs/method.md` is the method this code implements.
//!
//! The module tree is the pipeline, and each module imports only from those after it
//! in this list: [`cli`] (arguments) → [`sweep`] → [`mod@bench`] → [`report`] →
//! [`launch`], [`eval`], [`predict`] → [`run`] (one training run: epochs, run
//! directory, resume) → [`train`] (trainers: sequential, bp, pipelines, optimizers) →
//! [`checkpoint`] → [`learner`] ([`learner::Model`]: a network with the local rule of
//! each block) → [`rules`] (the local losses behind [`rules::LocalRule`]) →
//! [`objective`] → [`projection`] → [`config`] → [`model`] (blocks and networks, each
//! kind with its config) → [`data`] → `kernels` → the small helpers below them ([`precision`], [`device`], ...).
//!
//! A model trained in memory with SLL, two blocks, on random data:
//!
//! ```
//! # fn main() -> anyhow::Result<()> {
//! use sll::{config::Config, data::Dataset, learner::Model, train};
//! use tch::{Device, Kind, Tensor};
//!
//! let config = Config::load(Some("mnist-mlp"), &["model.hidden=[32, 16]".into()])?;
//! tch::manual_seed(0);
//! let model = Model::new(&config, 10, [1, 28, 28], Device::Cpu)?;
//! assert_eq!(model.network.len(), 2);
//! let data = Dataset {
//!     images: Tensor::rand([256, 1, 28, 28], (Kind::Float, Device::Cpu)),
//!     labels: Tensor::randint(10, [256], (Kind::Int64, Device::Cpu)),
//!     classes: 10,
//! };
//! train::fit(&config, &model, &data, 1)?;
//! let evaluation = model.evaluate(&data, 128);
//! assert_eq!(evaluation.block_accuracy.len(), 2);
//! # Ok(()) }
//! ```
//!
//! The main types are re-exported here: [`Config`], [`Model`], [`Network`] and
//! [`Block`] with [`ModelConfig`], [`LocalRule`], and [`TrainedRun`] (a finished run reloaded from its directory); a run is [`run::run`]. The fast CPU kernels,
//! the OpenMP plumbing and the denormal flags are internal.
//!
//! A run as `sll train` makes it ([`run::run`]) and reloaded ([`predict::TrainedRun`]):
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use sll::{config::Config, predict::TrainedRun};
//! let config = Config::load(Some("mnist-mlp"), &["train.epochs=1".into()])?;
//! let summary = sll::run::run(config, "runs/quick".as_ref())?;
//! println!("{:.2} %", 100.0 * summary.test_accuracy);
//! let run = TrainedRun::load("runs/quick".as_ref(), None)?;
//! # Ok(()) }
//! ```

pub use config::Config;
pub use learner::Model;
pub use model::{Block, ModelConfig, Network};
pub use predict::TrainedRun;
pub use rules::LocalRule;

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub(crate) mod denormals;
pub mod device;
pub mod eval;
pub mod heap;
pub mod io;
pub(crate) mod kernels;
pub mod launch;
pub mod learner;
pub mod malloc;
pub mod model;
pub mod objective;
pub(crate) mod parallel;
pub mod precision;
pub mod predict;
pub mod projection;
pub mod report;
pub mod rules;
pub mod run;
pub mod sweep;
pub mod train;

/// An error as one line: each cause's first line (libtorch errors carry C++
/// backtraces after it), joined by ": ".
pub fn one_line_error(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string().lines().next().unwrap_or("").trim().to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Lib tests share libtorch's global random generator (and its thread
/// settings); a test that seeds it and then draws must not interleave with
/// another test's draws.
#[cfg(test)]
pub(crate) fn libtorch_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
