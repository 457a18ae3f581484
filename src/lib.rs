//! Stochastic Layer-wise Learning (SLL, arXiv 2505.05181): deep networks trained
//! block by block, each block with its own local loss, no gradient crossing a block.
//!
//! The pipeline is the module tree: [`data`] → [`model`] (blocks) → [`objective`]
//! (projections, D_B) → [`rules`] (the local losses) → [`train`] (trainers) → [`report`] (run directory) and
//! [`checkpoint`]; [`cli`] ties them into the `sll` command. `docs/method.md` is the
//! method this code implements.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod denormals;
pub mod device;
pub mod eval;
pub mod heap;
pub mod io;
pub mod kernels;
pub mod launch;
pub mod learner;
pub mod malloc;
pub mod model;
pub mod objective;
pub mod parallel;
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
