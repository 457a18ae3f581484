//! Benchmarks that print a figure and, where one exists, its reference.
//!
//! `sll bench step` times full training steps (forward, local losses, backward,
//! optimizer) on random data, for the method's real code path; `sll bench memory`
//! measures training memory against depth; `sll bench flops` counts a step's FLOPs
//! block by block; `sll bench pipeline` compares the thread pipeline with sequential
//! training the same way; `sll bench epochs` trains a preset on its real data and sets
//! each epoch's throughput beside the step bench.

pub mod epochs;
pub mod flops;
pub mod memory;
pub mod pipeline;
pub mod step;

use anyhow::{bail, Result};

/// Refuses a bench's `--threads` above [`crate::config::max_threads`] and a
/// `--batch-size` out of range.
fn check_threads_and_batch(threads: usize, batch_size: Option<usize>) -> Result<()> {
    let most = crate::config::max_threads();
    if threads > most {
        bail!("--threads {threads} is more than {most} (4 per core of this machine, at least 8)");
    }
    if let Some(b) = batch_size {
        if b == 0 || b > crate::config::MAX_BATCH {
            bail!("--batch-size {b} must be in 1..={}", crate::config::MAX_BATCH);
        }
    }
    Ok(())
}
