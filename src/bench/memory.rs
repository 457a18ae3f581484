//! `sll bench memory`: training memory against depth, split into parameters, their
//! gradients, optimizer state, and the activations/workspace a training step adds at
//! its peak, for SLL, local CE, backprop and backprop with activation checkpointing.
//!
//! Depth is the number of blocks' layers: `mlp` has `depth` hidden layers of 1024
//! (the bench MLP's width, one per block); `cnn` is the bench CNN (conv 3×3
//! 64-128-256, max-pool after the 2nd and 3rd) with its last stage repeated up to
//! `depth` stages; `vit` is the mnist-vit preset with `depth` transformer blocks; for a
//! preset the depth key of its model kind is set: MLP `hidden`
//! (last width repeated), CNN `channels` (last width repeated), ResNet `stages`
//! (`depth` residual blocks spread evenly over its stages), ViT `depth`.
//!
//! Each (method, depth) runs in a fresh child process (the same binary, hidden
//! subcommand `bench memory-one`), so that its peak RSS is its own and nothing of
//! another measurement stays allocated. In the child: one warm-up step allocates the
//! gradients and any lazily created optimizer state; then, for each of two measured
//! steps, [`PeakTracker`] records the largest live heap count during the step; the
//! activation/workspace peak is the larger of the two peaks minus the live count
//! just before the step.

use super::step::{bench_setup, StepBenchSpec};
use crate::config::{Method, ModelConfig};
use crate::heap::{peak_rss_bytes, PeakTracker};
use crate::learner::Model;
use crate::report::plot::{memory_vs_depth, MemoryPoint};
use crate::train::{self, bp, optim::LrSchedule};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

/// Training methods whose memory is measured: those of `sll train` and backprop with
/// activation checkpointing per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MemoryMethod {
    /// SLL (block-local steps with the divergence term).
    Sll,
    /// Local cross-entropy (block-local steps, β = 0).
    Local,
    /// DGL: local cross-entropy through conv auxiliary nets.
    Dgl,
    /// InfoPro: local cross-entropy and reconstruction of the input.
    Infopro,
    /// PredSim: local prediction and similarity matching.
    Predsim,
    /// End-to-end backpropagation.
    Bp,
    /// Backpropagation keeping only block inputs, recomputing each block in backward.
    BpCheckpoint,
}

impl MemoryMethod {
    /// The training method whose model and optimizers this one uses.
    fn method(self) -> Method {
        match self {
            MemoryMethod::Sll => Method::Sll,
            MemoryMethod::Local => Method::Local,
            MemoryMethod::Dgl => Method::Dgl,
            MemoryMethod::Infopro => Method::Infopro,
            MemoryMethod::Predsim => Method::Predsim,
            MemoryMethod::Bp | MemoryMethod::BpCheckpoint => Method::Bp,
        }
    }

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            MemoryMethod::Sll => "sll",
            MemoryMethod::Local => "local",
            MemoryMethod::Dgl => "dgl",
            MemoryMethod::Infopro => "infopro",
            MemoryMethod::Predsim => "predsim",
            MemoryMethod::Bp => "bp",
            MemoryMethod::BpCheckpoint => "bp-checkpoint",
        }
    }
}

/// One measurement: a model at a depth, trained by a method.
#[derive(Debug, Clone)]
pub struct MemorySpec {
    /// `mlp`, `cnn` or a preset name.
    pub model: String,
    /// Training method.
    pub method: MemoryMethod,
    /// Depth (see the module documentation).
    pub depth: usize,
    /// Minibatch size (default: 128 for mlp, 64 for cnn, the preset's otherwise).
    pub batch_size: Option<usize>,
    /// Intra-op threads (0 = libtorch's default).
    pub threads: usize,
    /// Extra `section.key=value` overrides.
    pub sets: Vec<String>,
}

/// The memory of one training setup, as printed with `--json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MemoryResult {
    /// `mlp`, `cnn` or the preset.
    pub model: String,
    /// Method measured.
    pub method: String,
    /// Depth asked for.
    pub depth: usize,
    /// Blocks of the network (each with its own local loss for sll/local).
    pub blocks: usize,
    /// Minibatch size.
    pub batch_size: usize,
    /// Trainable parameters (blocks and heads), in bytes.
    pub parameter_bytes: usize,
    /// Their gradients, kept allocated between steps, in bytes.
    pub gradient_bytes: usize,
    /// Optimizer state (Adam's moments), in bytes.
    pub optimizer_bytes: usize,
    /// Largest live heap bytes a training step added over the bytes live before it.
    pub activation_peak_bytes: usize,
    /// Peak resident memory of the measuring process.
    pub peak_rss_bytes: u64,
}

/// How often the background sampler reads the live count during a measured step.
const POLL_INTERVAL: Duration = Duration::from_micros(20);

/// `--set` overrides that give the model of `config` depth `depth`.
pub fn depth_sets(config: &ModelConfig, depth: usize) -> Result<Vec<String>> {
    if depth == 0 {
        bail!("depth must be > 0");
    }
    let list = |v: &[i64]| {
        format!(
            "[{}]",
            v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        )
    };
    let repeat_last = |v: &[i64], key: &str| -> Result<Vec<i64>> {
        let last = *v
            .last()
            .with_context(|| format!("config key `model.{key}` is empty"))?;
        Ok((0..depth).map(|i| v.get(i).copied().unwrap_or(last)).collect())
    };
    Ok(match config {
        ModelConfig::Mlp(config) => vec![format!(
            "model.hidden={}",
            list(&repeat_last(&config.hidden, "hidden")?)
        )],
        ModelConfig::Cnn(config) => {
            let pools: Vec<i64> = config
                .pool_after
                .iter()
                .filter(|&&p| p <= depth)
                .map(|&p| p as i64)
                .collect();
            vec![
                format!(
                    "model.channels={}",
                    list(&repeat_last(&config.channels, "channels")?)
                ),
                format!("model.pool_after={}", list(&pools)),
            ]
        }
        ModelConfig::Resnet(config) => {
            let stages = config.stages.len();
            if stages == 0 || !depth.is_multiple_of(stages) {
                bail!("depth {depth} is not a multiple of the ResNet's {stages} stages");
            }
            vec![format!(
                "model.stages={}",
                list(&vec![(depth / stages) as i64; stages])
            )]
        }
        ModelConfig::Vit(_) => vec![format!("model.depth={depth}")],
    })
}

/// Bytes of the storage of `tensors`.
fn tensor_bytes<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> usize {
    tensors
        .into_iter()
        .filter(|t| t.defined())
        .map(|t| t.numel() * t.kind().elt_size_in_bytes())
        .sum()
}

/// Refuses a depth, thread count or minibatch that cannot run or would allocate
/// without end, before any child process starts.
fn check_spec(spec: &MemorySpec) -> Result<()> {
    if spec.depth == 0 || spec.depth > crate::config::MAX_LAYERS {
        bail!(
            "depth {} must be in 1..={} (--depths)",
            spec.depth,
            crate::config::MAX_LAYERS
        );
    }
    super::check_threads_and_batch(spec.threads, spec.batch_size)
}

/// Measures `spec` in this process (the child side of [`run_isolated`]).
pub fn measure(spec: &MemorySpec) -> Result<MemoryResult> {
    check_spec(spec)?;
    let mut step_spec = StepBenchSpec {
        model: spec.model.clone(),
        method: spec.method.method(),
        batch_size: spec.batch_size,
        steps: 1,
        rounds: 1,
        warmup: 1,
        threads: spec.threads,
        sets: spec.sets.clone(),
    };
    let (base, _, _) = bench_setup(&step_spec, step_spec.method)?;
    step_spec.sets = depth_sets(&base.model, spec.depth)?;
    // fp32 unless `--set train.precision=...` says otherwise (bf16 adds the bf16 copies
    // of the weights that autocast keeps for the backward pass).
    step_spec.sets.push("train.precision=\"fp32\"".into());
    step_spec.sets.extend(spec.sets.iter().cloned());
    let (config, input, classes) = bench_setup(&step_spec, step_spec.method)?;
    train::init_runtime(&config);
    let model = Model::new(&config, classes, input, Device::Cpu)?;
    let schedule = LrSchedule::new(&config.optim, 1, 1);
    let mut optimizers = train::build_optimizers(&config, &model, &schedule)?;
    let batch = config.data.batch_size as i64;
    let data: Vec<(Tensor, Tensor)> = (0..2)
        .map(|_| {
            let x = Tensor::randn([batch, input[0], input[1], input[2]], (Kind::Float, Device::Cpu));
            (x, Tensor::randint(classes, [batch], (Kind::Int64, Device::Cpu)))
        })
        .collect();
    let mut step = |x: &Tensor, y: &Tensor| -> Result<()> {
        match spec.method {
            MemoryMethod::BpCheckpoint => bp::checkpointed_step(&model, &mut optimizers[0], x, y)?,
            _ => train::train_step(config.train.method, &model, &mut optimizers, x, y)?,
        };
        Ok(())
    };
    step(&data[1].0, &data[1].1)?;
    let mut activation_peak_bytes = 0;
    for (x, y) in &data {
        let tracker = PeakTracker::start(Some(POLL_INTERVAL));
        step(x, y)?;
        activation_peak_bytes = activation_peak_bytes.max(tracker.finish().added());
    }
    let params: Vec<Tensor> = (0..model.network.len())
        .flat_map(|i| model.network.trainable(i))
        .collect();
    let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
    let parameter_bytes = tensor_bytes(&params);
    let optimizer_bytes = optimizers.iter().map(|o| o.state_bytes()).sum();
    Ok(MemoryResult {
        model: spec.model.clone(),
        method: spec.method.name().to_string(),
        depth: spec.depth,
        blocks: model.network.len(),
        batch_size: batch as usize,
        parameter_bytes,
        gradient_bytes: tensor_bytes(&grads),
        optimizer_bytes,
        activation_peak_bytes,
        peak_rss_bytes: peak_rss_bytes(),
    })
}

/// Measures `spec` in a child process (`sll bench memory-one`, the running binary).
pub fn run_isolated(spec: &MemorySpec) -> Result<MemoryResult> {
    check_spec(spec)?;
    let exe = std::env::current_exe().context("cannot find the running sll binary")?;
    let mut command = std::process::Command::new(exe);
    command.args(["bench", "memory-one", "--model", &spec.model]);
    command.args(["--method", spec.method.name(), "--depth", &spec.depth.to_string()]);
    command.args(["--threads", &spec.threads.to_string()]);
    if let Some(b) = spec.batch_size {
        command.args(["--batch-size", &b.to_string()]);
    }
    for set in &spec.sets {
        command.args(["--set", set]);
    }
    let output = command
        .output()
        .context("cannot start the measuring child process")?;
    let what = format!("{} at depth {}", spec.method.name(), spec.depth);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().last().unwrap_or("").trim_start_matches("error: ");
        bail!("measuring {what} failed: {last}");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).with_context(|| format!("measuring {what} printed no result"))
}

/// Mebibytes, for tables.
fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Prints `results` as one table (MiB).
pub fn print_table(results: &[MemoryResult]) {
    println!(
        "{:<14} {:>6} {:>7} {:>11} {:>11} {:>11} {:>16} {:>10}",
        "method", "depth", "blocks", "params MiB", "grads MiB", "optim MiB", "activations MiB", "RSS MiB"
    );
    for r in results {
        println!(
            "{:<14} {:>6} {:>7} {:>11.1} {:>11.1} {:>11.1} {:>16.1} {:>10.0}",
            r.method,
            r.depth,
            r.blocks,
            mib(r.parameter_bytes),
            mib(r.gradient_bytes),
            mib(r.optimizer_bytes),
            mib(r.activation_peak_bytes),
            mib(r.peak_rss_bytes as usize)
        );
    }
}

/// `sll bench memory --plot`: memory against depth per method, as a PNG at `path`.
pub fn plot_png(results: &[MemoryResult], path: &std::path::Path) -> Result<()> {
    let points: Vec<MemoryPoint> = results
        .iter()
        .map(|r| MemoryPoint {
            method: r.method.clone(),
            depth: r.depth,
            activation_bytes: r.activation_peak_bytes,
            total_bytes: r.parameter_bytes + r.gradient_bytes + r.optimizer_bytes + r.activation_peak_bytes,
        })
        .collect();
    let (model, batch) = results
        .first()
        .map_or(("", 0), |r| (r.model.as_str(), r.batch_size));
    memory_vs_depth(model, batch, &points, path)
}

/// `sll bench memory`: each of `specs` measured in its own child process
/// ([`run_isolated`]), in order; each result printed as one JSON object with `json`,
/// else a line on stderr as each is measured and [`print_table`] at the end; memory
/// against depth drawn into `plot`.
pub fn run_all(specs: &[MemorySpec], json: bool, plot: Option<&std::path::Path>) -> Result<()> {
    if specs.is_empty() {
        bail!("--depths and --methods must each name at least one value");
    }
    let mut results = vec![];
    for spec in specs {
        let result = run_isolated(spec)?;
        if json {
            println!("{}", serde_json::to_string(&result)?);
        } else {
            eprintln!("measured {} at depth {}", spec.method.name(), spec.depth);
        }
        results.push(result);
    }
    if !json {
        print_table(&results);
    }
    if let Some(path) = plot {
        plot_png(&results, path)?;
    }
    Ok(())
}
