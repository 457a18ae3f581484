//! `sll bench step`: samples/s of full training steps on random data, the share of the
//! step spent in the SLL objective (projection + dropout + Bhattacharyya), and the
//! achieved GFLOP/s against the counted FLOPs ([`super::flops`]).
//!
//! The two built-in models are the ones `bench/reference/` implements in PyTorch:
//! - `mlp`: MNIST-shaped input, MLP 784-1024-1024-1024, one layer per block, a linear
//!   1024→10 head per block, batch 128;
//! - `cnn`: 3×32×32 input, conv 3×3 3→64→128→256, max-pool after the 2nd and 3rd conv,
//!   one conv per block, feature maps pooled to 2×2 for heads and projections, batch 64.
//!
//! `vit` names the `mnist-vit` preset.
//!
//! Both with d0 = 512, p = 0.1, β = 1, τ = 1, prior = previous (q_0 from the input,
//! pooled to 2×2 for images), Adam lr 1e-3.

use crate::config::{Config, Method, Pipeline};
use crate::learner::Model;
use crate::model::InputShape;
use crate::train::pipeline::{thread_cpu_seconds, Stages};
use crate::train::{self, optim::LrSchedule, progress::EpochProgress};
use anyhow::{bail, Result};
use indicatif::ProgressBar;
use serde::Serialize;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// What to benchmark.
#[derive(Debug, Clone)]
pub struct StepBenchSpec {
    /// `mlp`, `cnn` or a preset name.
    pub model: String,
    /// Training method.
    pub method: Method,
    /// Minibatch size (default: 128 for mlp, 64 for cnn, the preset's otherwise).
    pub batch_size: Option<usize>,
    /// Timed steps per round (after `warmup` untimed ones).
    pub steps: usize,
    /// Rounds; the median round counts.
    pub rounds: usize,
    /// Untimed warm-up steps.
    pub warmup: usize,
    /// Intra-op threads (0 = libtorch's default).
    pub threads: usize,
    /// Extra `section.key=value` overrides.
    pub sets: Vec<String>,
}

/// The result, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct StepBenchResult {
    /// `mlp`, `cnn` or the preset.
    pub model: String,
    /// Method benchmarked.
    pub method: String,
    /// Minibatch size.
    pub batch_size: usize,
    /// Intra-op threads.
    pub threads: i32,
    /// Arithmetic of the steps (`fp32` or `bf16`).
    pub precision: String,
    /// Training samples per second.
    pub samples_per_second: f64,
    /// Milliseconds per step.
    pub ms_per_step: f64,
    /// Share of the step spent in the SLL objective: 1 − t(local) / t(sll) for `sll`, 0 otherwise.
    pub objective_share: f64,
    /// Counted FLOPs of one step (see [`super::flops`]).
    pub flops_per_step: f64,
    /// Counted FLOPs per second achieved, in GFLOP/s.
    pub gflops: f64,
}

/// The config, input shape and class count of a benchmark model (`spec.model` with
/// `method`, the batch size, threads and `--set` overrides of `spec`; the other
/// fields of `spec` do not matter here).
pub fn bench_setup(spec: &StepBenchSpec, method: Method) -> Result<(Config, InputShape, i64)> {
    // The reference models use the dense Gaussian projection and the linear head on the
    // 2×2-pooled output, as bench/reference/step.py does (the mnist-mlp preset they
    // start from uses the sparse projection; SLL's default head on feature maps is
    // `pooled`).
    let mut sets: Vec<String> = vec![];
    if ["mlp", "cnn"].contains(&spec.model.as_str()) {
        sets.push("objective.projection=\"gaussian\"".into());
        if method == Method::Sll {
            sets.push("objective.head=\"linear\"".into());
        }
    }
    // `vit` is the mnist-vit preset (7×7 patches, width 128, depth 6).
    let model = if spec.model == "vit" {
        "mnist-vit"
    } else {
        spec.model.as_str()
    };
    let (source, input, batch) = match model {
        "mlp" => ("mnist-mlp", [1, 28, 28], 128),
        "cnn" => {
            sets.extend(
                [
                    "model.kind=\"cnn\"",
                    "model.channels=[64, 128, 256]",
                    "model.pool_after=[2, 3]",
                    "model.pool_grid=2",
                ]
                .map(String::from),
            );
            ("mnist-mlp", [3, 32, 32], 64)
        }
        preset => match crate::config::preset(preset) {
            Some(_) => (preset, [0; 3], 0),
            None => bail!("unknown benchmark model {preset:?} (mlp, cnn, vit or a preset name)"),
        },
    };
    sets.push(format!("train.method=\"{method}\""));
    sets.push(format!("train.threads={}", spec.threads));
    sets.push("optim.schedule=\"constant\"".into());
    if let Some(b) = spec.batch_size.or((batch > 0).then_some(batch)) {
        sets.push(format!("data.batch_size={b}"));
    }
    sets.extend(spec.sets.iter().cloned());
    let config = Config::load_quietly(Some(source), &sets)?;
    if input[0] > 0 {
        return Ok((config, input, 10));
    }
    // A preset: its dataset's shape (image folders: 10 classes, as ImageNette).
    let (input, classes) = crate::data::example_shape(&config.data.dataset, config.data.image_size)?;
    Ok((config, input, classes.unwrap_or(10)))
}

/// A model ready to step on random data, sequentially or (`train.pipeline`) through
/// its pipeline stages.
pub(crate) struct Bench {
    method: Method,
    threads: usize,
    stages: Option<Stages>,
    model: Model,
    optimizers: Vec<crate::train::optim::Optimizer>,
    data: Vec<(Tensor, Tensor)>,
    next: usize,
}

impl Bench {
    /// The model of `spec` trained with `method`.
    pub(crate) fn new(spec: &StepBenchSpec, method: Method) -> Result<Self> {
        let (config, input, classes) = bench_setup(spec, method)?;
        train::init_runtime(&config);
        if config.train.keep_freed_memory {
            crate::malloc::keep_freed_memory();
        }
        let device = crate::device::parse(&config.train.device)?;
        let model = Model::new(&config, classes, input, device)?;
        let stages = match config.train.pipeline {
            Pipeline::None => None,
            Pipeline::Threads => Some(Stages::plan_by_cost(&config.train, &model.block_costs())?),
            Pipeline::Mpi => bail!(
                "`sll bench step` times one process; the MPI pipeline is measured by `mpirun -np K sll train --pipeline mpi`"
            ),
        };
        let schedule = LrSchedule::new(&config.optim, 1, 1);
        let optimizers = train::build_optimizers(&config, &model, &schedule)?;
        let batch = config.data.batch_size as i64;
        // Distinct random minibatches: repeating one batch lets the network memorise it,
        // and the vanishing gradients then run into (slow) denormal floats.
        let data = (0..16)
            .map(|_| {
                let x = Tensor::randn([batch, input[0], input[1], input[2]], (Kind::Float, device));
                (x, Tensor::randint(classes, [batch], (Kind::Int64, device)))
            })
            .collect();
        Ok(Self {
            method,
            threads: config.train.threads,
            stages,
            model,
            optimizers,
            data,
            next: 0,
        })
    }

    /// The pipeline stages, when the config asks for a pipeline.
    pub(crate) fn stages(&self) -> Option<&Stages> {
        self.stages.as_ref()
    }

    /// Examples per minibatch.
    pub(crate) fn batch_size(&self) -> usize {
        self.data[0].1.size()[0] as usize
    }

    /// Times `steps` steps (a pipeline fills and drains once), with this bench's
    /// intra-op thread count set on the calling thread first.
    pub(crate) fn time(&mut self, steps: usize) -> Result<Round> {
        if self.threads > 0 {
            tch::set_num_threads(self.threads as i32);
        }
        let start = Instant::now();
        let cpu_start = thread_cpu_seconds();
        let first = self.next;
        self.next += steps;
        let data = &self.data;
        let batches = (first..first + steps).map(|i| {
            let (x, y) = &data[i % data.len()];
            (x.shallow_clone(), y.shallow_clone())
        });
        let cpu = match &self.stages {
            None => {
                for (x, y) in batches {
                    train::train_step(self.method, &self.model, &mut self.optimizers, &x, &y)?;
                }
                vec![thread_cpu_seconds() - cpu_start]
            }
            Some(stages) => {
                let guard = crate::train::progress::LossGuard::new(0.0, vec![]);
                let progress = EpochProgress::new(ProgressBar::hidden(), 1, String::new(), &guard);
                stages.train_epoch(&mut self.model, &mut self.optimizers, batches, &progress)?
            }
        };
        if let Device::Cuda(i) = self.data[0].0.device() {
            tch::Cuda::synchronize(i as i64);
        }
        Ok(Round {
            seconds: start.elapsed().as_secs_f64() / steps as f64,
            cpu: cpu.iter().map(|c| c / steps as f64).collect(),
        })
    }
}

/// Per-step times of one timed round.
pub(crate) struct Round {
    /// Wall-clock seconds per step.
    pub(crate) seconds: f64,
    /// CPU seconds per step of the calling thread (sequential; its OpenMP workers not
    /// counted), or of the feeder and then each stage (pipeline).
    pub(crate) cpu: Vec<f64>,
}

/// Most timed steps per round (`--steps`), and most untimed warm-up steps.
pub const MAX_STEPS: usize = 100_000;
/// Most rounds (`--rounds`).
pub const MAX_ROUNDS: usize = 1_000;
/// Most timed steps in all (`--steps` × `--rounds`), so that no bench runs for days.
pub const MAX_TIMED_STEPS: usize = 1_000_000;

/// Refuses options of `sll bench step|flops|pipeline` that cannot run or would run
/// practically forever: no step or round, absurd step, round or warm-up counts, more
/// threads than [`crate::config::max_threads`], a minibatch out of range.
pub(crate) fn check_spec(spec: &StepBenchSpec) -> Result<()> {
    if spec.steps == 0 || spec.rounds == 0 {
        bail!("--steps and --rounds must be > 0");
    }
    if spec.steps > MAX_STEPS {
        bail!("--steps {} is more than {MAX_STEPS} steps per round", spec.steps);
    }
    if spec.rounds > MAX_ROUNDS {
        bail!("--rounds {} is more than {MAX_ROUNDS}", spec.rounds);
    }
    if spec.steps.saturating_mul(spec.rounds) > MAX_TIMED_STEPS {
        bail!(
            "--steps {} × --rounds {} is more than {MAX_TIMED_STEPS} timed steps",
            spec.steps,
            spec.rounds
        );
    }
    if spec.warmup > MAX_STEPS {
        bail!("--warmup {} is more than {MAX_STEPS} steps", spec.warmup);
    }
    super::check_threads_and_batch(spec.threads, spec.batch_size)
}

/// The median of `v` (the upper one of an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the benchmark: `rounds` rounds of `steps` timed steps (after `warmup`), the
/// median round counts. For `sll`, rounds of plain local cross-entropy on the same
/// model alternate with it, and the objective's share is the median over neighbouring
/// pairs of rounds of 1 − t(local)/t(sll).
pub fn run(spec: &StepBenchSpec) -> Result<StepBenchResult> {
    check_spec(spec)?;
    let mut bench = Bench::new(spec, spec.method)?;
    let mut baseline = (spec.method == Method::Sll)
        .then(|| Bench::new(spec, Method::Local))
        .transpose()?;
    bench.time(spec.warmup.max(1))?;
    if let Some(b) = baseline.as_mut() {
        b.time(spec.warmup.max(1))?;
    }
    // Each round of SLL is paired with a round of local CE timed next to it (which
    // goes first alternates), and the share is the median over pairs of
    // 1 − t(local)/t(SLL): on a machine whose speed drifts from round to round, a
    // ratio of neighbours is steadier than a ratio of separate medians.
    let (mut times, mut ratios) = (vec![], vec![]);
    for round in 0..spec.rounds {
        match baseline.as_mut() {
            None => times.push(bench.time(spec.steps)?.seconds),
            Some(b) => {
                let (t, base) = if round % 2 == 0 {
                    let t = bench.time(spec.steps)?.seconds;
                    (t, b.time(spec.steps)?.seconds)
                } else {
                    let base = b.time(spec.steps)?.seconds;
                    (bench.time(spec.steps)?.seconds, base)
                };
                times.push(t);
                ratios.push(base / t);
            }
        }
    }
    let seconds = median(times);
    let objective_share = if ratios.is_empty() {
        0.0
    } else {
        (1.0 - median(ratios)).max(0.0)
    };
    let batch = bench.batch_size();
    let flops = crate::learner::flops::count(&bench.model).per_step(batch);
    Ok(StepBenchResult {
        model: spec.model.clone(),
        method: spec.method.to_string(),
        batch_size: batch,
        threads: tch::get_num_threads(),
        precision: bench.model.precision.to_string(),
        samples_per_second: batch as f64 / seconds,
        ms_per_step: 1e3 * seconds,
        objective_share,
        flops_per_step: flops,
        gflops: flops / seconds / 1e9,
    })
}

impl StepBenchResult {
    /// The human-readable report.
    pub fn print(&self) {
        println!(
            "{} {} {} batch {} ({} threads): {:.0} samples/s, {:.2} ms/step, objective {:.1} % of the step, {:.1} GFLOP/s ({:.3} GFLOP/step counted)",
            self.model,
            self.method,
            self.precision,
            self.batch_size,
            self.threads,
            self.samples_per_second,
            self.ms_per_step,
            100.0 * self.objective_share,
            self.gflops,
            self.flops_per_step / 1e9
        );
    }
}
