//! `sll bench epochs`: the throughput users see — a real training run of a preset on its
//! real data, epoch by epoch — next to `sll bench step`'s figure for the same model,
//! method, batch and threads on random data. A slowdown after the first epoch (as
//! subnormal numbers caused before `train.flush_denormals`) or a gap between real
//! training and the step bench (data loading, evaluation, bookkeeping) shows here.
//!
//! The run trains in a temporary directory (removed afterwards) unless `out` is given.

use super::step::{self, StepBenchSpec};
use crate::config::Config;
use crate::report::compare::RunRecord;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;

/// What to run.
#[derive(Debug, Clone)]
pub struct EpochBenchSpec {
    /// Preset name or config file.
    pub config: String,
    /// Epochs of the real run (at least 2: the first and the steady state).
    pub epochs: usize,
    /// Intra-op threads of both the run and the step bench (0 = libtorch's default).
    pub threads: usize,
    /// Where the preset's data is.
    pub data_dir: PathBuf,
    /// Extra `section.key=value` overrides, for both.
    pub sets: Vec<String>,
    /// Rounds of the step bench (its median counts).
    pub rounds: usize,
    /// Keep the run in this directory instead of a temporary one.
    pub out: Option<PathBuf>,
}

/// The result, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct EpochBenchResult {
    /// Preset.
    pub preset: String,
    /// Training method.
    pub method: String,
    /// Minibatch size.
    pub batch_size: usize,
    /// Intra-op threads (0 = libtorch's default).
    pub threads: usize,
    /// Whether flush-to-zero / denormals-are-zero were set.
    pub flush_denormals: bool,
    /// Training samples/s of each epoch (evaluation excluded).
    pub epoch_samples_per_second: Vec<f64>,
    /// Median samples/s of epochs 2..N (the upper one of an even count).
    pub steady_samples_per_second: f64,
    /// Steady state / epoch 1.
    pub steady_over_first: f64,
    /// `sll bench step` on random data, same model, method, batch and threads.
    pub step_bench_samples_per_second: f64,
    /// Steady state / step bench.
    pub steady_over_step_bench: f64,
    /// Test accuracy of the final classifier after the last epoch, in [0, 1].
    pub test_accuracy: f64,
}

/// Trains `spec.config` for `spec.epochs` epochs and times the step bench beside it.
pub fn run(spec: &EpochBenchSpec) -> Result<EpochBenchResult> {
    if spec.epochs < 2 {
        bail!(
            "--epochs {} must be at least 2 (epoch 1 and the steady state after it)",
            spec.epochs
        );
    }
    let mut sets = spec.sets.clone();
    sets.push(format!("train.epochs={}", spec.epochs));
    sets.push(format!("train.threads={}", spec.threads));
    sets.push(format!("data.dir={:?}", spec.data_dir.display().to_string()));
    let config = Config::load_quietly(Some(&spec.config), &sets)?;
    let bench_spec = StepBenchSpec {
        model: spec.config.clone(),
        method: config.train.method,
        batch_size: Some(config.data.batch_size),
        steps: 20,
        rounds: spec.rounds,
        warmup: 10,
        threads: spec.threads,
        sets: spec.sets.clone(),
    };
    step::check_spec(&bench_spec)?;

    let temporary;
    let out = match &spec.out {
        Some(dir) => dir.clone(),
        None => {
            temporary = tempfile::Builder::new()
                .prefix("sll-bench-epochs-")
                .tempdir()
                .context("cannot make a temporary run directory")?;
            temporary.path().join("run")
        }
    };
    eprintln!(
        "training {} for {} epochs in {}",
        config.preset,
        spec.epochs,
        out.display()
    );
    crate::run::run(config.clone(), &out)?;
    let run = RunRecord::load(&out)?;
    let epochs: Vec<f64> = run.metrics.iter().map(|m| m.train_samples_per_second).collect();
    if epochs.len() < 2 {
        bail!(
            "the run in {} recorded {} epoch(s), not {}",
            out.display(),
            epochs.len(),
            spec.epochs
        );
    }
    eprintln!(
        "step bench: {} {}, batch {}, random data",
        config.preset, config.train.method, config.data.batch_size
    );
    let bench = step::run(&bench_spec)?;

    let steady = step::median(epochs[1..].to_vec());
    Ok(EpochBenchResult {
        preset: config.preset.clone(),
        method: config.train.method.to_string(),
        batch_size: config.data.batch_size,
        threads: spec.threads,
        flush_denormals: config.train.flush_denormals,
        steady_over_first: steady / epochs[0],
        steady_over_step_bench: steady / bench.samples_per_second,
        epoch_samples_per_second: epochs,
        steady_samples_per_second: steady,
        step_bench_samples_per_second: bench.samples_per_second,
        test_accuracy: run.summary.test_accuracy,
    })
}

impl EpochBenchResult {
    /// The table printed without `--json`.
    pub fn print(&self) {
        let threads = if self.threads == 0 {
            "libtorch's default threads".to_string()
        } else {
            format!("{} thread(s)", self.threads)
        };
        println!(
            "{} {}, batch {}, {threads}, flush_denormals {}",
            self.preset,
            self.method,
            self.batch_size,
            if self.flush_denormals { "on" } else { "off" }
        );
        println!("| epoch | samples/s | vs epoch 1 |");
        println!("|---:|---:|---:|");
        let first = self.epoch_samples_per_second[0];
        for (i, s) in self.epoch_samples_per_second.iter().enumerate() {
            println!("| {} | {s:.0} | {:.2}× |", i + 1, s / first);
        }
        let n = self.epoch_samples_per_second.len();
        let steady = if n == 2 {
            "epoch 2".to_string()
        } else {
            format!("median of epochs 2–{n}")
        };
        println!(
            "steady state ({steady}): {:.0} samples/s = {:.2}× epoch 1 ({first:.0})",
            self.steady_samples_per_second, self.steady_over_first
        );
        println!(
            "step bench (random data, same model, batch, threads): {:.0} samples/s; steady state = {:.2}× it",
            self.step_bench_samples_per_second, self.steady_over_step_bench
        );
        println!(
            "test accuracy after epoch {n}: {:.2} %",
            100.0 * self.test_accuracy
        );
    }
}
