//! `sll bench pipeline`: samples/s of the local training step run sequentially with 1
//! intra-op thread, sequentially with `threads` threads, and as a thread pipeline of
//! `stages` stages with 1 thread each, in alternating rounds on the same random
//! minibatches (so that the load of a shared machine affects all three alike). Each
//! pipeline round fills and drains the pipeline once, as an epoch does.
//!
//! On a machine shared with other jobs wall-clock samples/s mostly measure the
//! scheduler, so the bench also reports what the threads' CPU time implies for
//! dedicated cores: 1/t_cpu for the sequential 1-thread step, and for the pipeline
//! 1/max(busiest thread, all threads' CPU / cores), since a pipeline runs at the pace of
//! its slowest stage and no faster than the cores allow. This ignores what cores share
//! (memory bandwidth, caches) and the hand-over latency, so it bounds from above what an
//! idle machine would show.

use super::step::{median, Bench, Round, StepBenchSpec};
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
    /// CPU milliseconds per step, sequential, 1 thread.
    pub sequential_cpu_ms: f64,
    /// CPU milliseconds per step of the pipeline's feeder, then of each stage.
    pub pipeline_cpu_ms: Vec<f64>,
    /// Samples/s the sequential 1-thread step would reach on a dedicated core.
    pub sequential_dedicated: f64,
    /// Samples/s the pipeline would reach at most on `cores` dedicated cores.
    pub pipeline_dedicated: f64,
    /// Cores of the machine (the pipeline's dedicated estimate uses them all).
    pub cores: usize,
}

/// Runs the comparison for `spec` (its `threads` is the wide sequential run's, 0 = the
/// number of cores; its `method` must be a local rule, not `bp`) with `stages` stages
/// (0 = one per block); the median of `spec.rounds` rounds counts.
pub fn run(spec: &StepBenchSpec, stages: usize) -> Result<PipelineBenchResult> {
    super::step::check_spec(spec)?;
    if spec.method == Method::Bp {
        bail!("the pipeline trains the local rules (sll, local, dgl, infopro, predsim), not bp");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = if spec.threads > 0 { spec.threads } else { cores };
    let with = |threads: usize, sets: &[String]| StepBenchSpec {
        threads,
        sets: spec.sets.iter().chain(sets).cloned().collect(),
        ..spec.clone()
    };
    let pipeline_sets = [
        "train.pipeline=\"threads\"".to_string(),
        format!("train.stages={stages}"),
    ];
    // The sequential runs are sequential even for a preset that trains as a pipeline.
    let sequential = ["train.pipeline=\"none\"".to_string()];
    let mut benches = [
        Bench::new(&with(1, &sequential), spec.method)?,
        Bench::new(&with(threads, &sequential), spec.method)?,
        Bench::new(&with(1, &pipeline_sets), spec.method)?,
    ];
    for bench in &mut benches {
        bench.time(spec.warmup.max(1))?;
    }
    let mut rounds = [vec![], vec![], vec![]];
    for _ in 0..spec.rounds {
        for (bench, rounds) in benches.iter_mut().zip(&mut rounds) {
            rounds.push(bench.time(spec.steps)?);
        }
    }
    let batch = benches[0].batch_size() as f64;
    let cpu = |rounds: &[Round], thread: usize| median(rounds.iter().map(|r| r.cpu[thread]).collect());
    let sequential_cpu = cpu(&rounds[0], 0);
    let pipeline_cpu: Vec<f64> = (0..rounds[2][0].cpu.len()).map(|t| cpu(&rounds[2], t)).collect();
    let busiest = pipeline_cpu.iter().copied().fold(0.0, f64::max);
    let shared = pipeline_cpu.iter().sum::<f64>() / cores as f64;
    let [one, wide, pipelined] = rounds.map(|r| batch / median(r.iter().map(|r| r.seconds).collect()));
    let plan = benches[2]
        .stages()
        .expect("the pipeline bench has stages")
        .to_string();
    Ok(PipelineBenchResult {
        model: spec.model.clone(),
        batch_size: batch as usize,
        stages: plan,
        threads,
        sequential_1_thread: one,
        sequential_threads: wide,
        pipeline: pipelined,
        sequential_cpu_ms: 1e3 * sequential_cpu,
        pipeline_cpu_ms: pipeline_cpu.iter().map(|c| 1e3 * c).collect(),
        sequential_dedicated: batch / sequential_cpu,
        pipeline_dedicated: batch / busiest.max(shared),
        cores,
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
        let threads: Vec<String> = self.pipeline_cpu_ms.iter().map(|c| format!("{c:.1}")).collect();
        println!(
            "CPU ms/step: sequential {:.1}, pipeline feeder | stages {}; on {} dedicated cores: sequential 1 thread {:.0} samples/s, pipeline at most {:.0} ({:.2}×)",
            self.sequential_cpu_ms,
            threads.join(" | "),
            self.cores,
            self.sequential_dedicated,
            self.pipeline_dedicated,
            self.pipeline_dedicated / self.sequential_dedicated
        );
    }
}
