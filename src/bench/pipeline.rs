//! `sll bench pipeline`: samples/s of the local training step run sequentially with 1
//! intra-op thread, sequentially with `threads` threads, and as a thread pipeline of
//! `stages` stages with 1 thread each, in alternating rounds on the same random
//! minibatches (so that the load of a shared machine affects all three alike). Each
//! pipeline round fills and drains the pipeline once, as an epoch does.

use super::step::{median, Bench, StepBenchSpec};
use crate::config::Method;
use anyhow::{bail, Result};
use serde::Serialize;

/// The result, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineBenchResult {
    /// `mlp`, `cnn` or the preset.
    pub model: String,
    /// Minibatch size.
    pub batch_size: usize,
    /// The pipeline's stages, as `sll train` prints them.
    pub stages: String,
    /// Intra-op threads of the wide sequential run.
    pub threads: usize,
    /// Samples/s, sequential, 1 thread.
    pub sequential_1_thread: f64,
    /// Samples/s, sequential, `threads` threads.
    pub sequential_threads: f64,
    /// Samples/s, pipeline, 1 thread per stage.
    pub pipeline: f64,
}

/// Runs the comparison for `spec` (its `threads` is the wide sequential run's, 0 = the
/// number of cores; its `method` must be `sll` or `local`) with `stages` stages
/// (0 = one per block); the median of `spec.rounds` rounds counts.
pub fn run(spec: &StepBenchSpec, stages: usize) -> Result<PipelineBenchResult> {
    if spec.steps == 0 || spec.rounds == 0 {
        bail!("--steps and --rounds must be > 0");
    }
    if spec.method == Method::Bp {
        bail!("the pipeline trains sll or local, not bp");
    }
    let threads = if spec.threads > 0 {
        spec.threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    };
    let with = |threads: usize, sets: &[String]| StepBenchSpec {
        threads,
        sets: spec.sets.iter().chain(sets).cloned().collect(),
        ..spec.clone()
    };
    let pipeline_sets = [
        "train.pipeline=\"threads\"".to_string(),
        format!("train.stages={stages}"),
    ];
    let mut benches = [
        Bench::new(&with(1, &[]), spec.method)?,
        Bench::new(&with(threads, &[]), spec.method)?,
        Bench::new(&with(1, &pipeline_sets), spec.method)?,
    ];
    for bench in &mut benches {
        bench.time(spec.warmup.max(1))?;
    }
    let mut times = [vec![], vec![], vec![]];
    for _ in 0..spec.rounds {
        for (bench, times) in benches.iter_mut().zip(&mut times) {
            times.push(bench.time(spec.steps)?);
        }
    }
    let batch = benches[0].batch_size();
    let [one, wide, pipelined] = times.map(|t| batch as f64 / median(t));
    let plan = benches[2]
        .stages()
        .expect("the pipeline bench has stages")
        .to_string();
    Ok(PipelineBenchResult {
        model: spec.model.clone(),
        batch_size: batch,
        stages: plan,
        threads,
        sequential_1_thread: one,
        sequential_threads: wide,
        pipeline: pipelined,
    })
}

impl PipelineBenchResult {
    /// The human-readable report.
    pub fn print(&self) {
        println!(
            "{} batch {}: sequential 1 thread {:.0} samples/s, sequential {} threads {:.0}, {}: {:.0} ({:.2}× / {:.2}×)",
            self.model,
            self.batch_size,
            self.sequential_1_thread,
            self.threads,
            self.sequential_threads,
            self.stages,
            self.pipeline,
            self.pipeline / self.sequential_1_thread,
            self.pipeline / self.sequential_threads
        );
    }
}
