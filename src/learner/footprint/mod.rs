//! How much memory a training run needs, estimated from its config before anything is
//! allocated, so that a model that cannot fit is refused with one line (naming what to
//! reduce) instead of dying in the allocator or driving the machine into swap.
//!
//! One function per model kind ([`mlp`], [`cnn`], [`resnet`], [`vit`]; in
//! `footprint/shapes.rs`) walks the layer shapes that `model/<kind>.rs` builds and
//! gives, per block, its trainable parameters (exact: the same count as
//! [`crate::model::Network::parameter_count`]), its pooled dimension and the floats one
//! example keeps alive in a training step (approximate, within about 2×: the outputs
//! autograd saves for backward). [`estimate`] adds the local heads (exact), the fixed
//! random projections (a dense Gaussian R_i is d0 × dim(u_i) floats), the label
//! targets, the gradients (one float per parameter), the optimizer state (Adam/AdamW:
//! two moments; SGD: one momentum buffer) and the minibatch; [`check`] compares the
//! total with the memory this machine has available.

mod shapes;

pub use shapes::{cnn, mlp, network, resnet, vit, BlockShape, NetworkShape};

use crate::config::{Config, HeadKind, Method, OptimizerKind, Pipeline, Prior, ProjectionKind};
use crate::model::{InputShape, Layer, ModelConfig};
use crate::rules::head::{self, OutputShape};
use crate::rules::{auglocal, infopro, predsim};
use anyhow::{bail, Result};
use shapes::n;
use tch::Device;

/// Bytes of one `f32`, the kind of every parameter and activation.
const FLOAT: f64 = 4.0;

/// The memory a training run needs, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Footprint {
    /// Trainable parameters of blocks and heads (count).
    pub parameter_count: u128,
    /// Trainable parameters of blocks and heads.
    pub parameters: f64,
    /// Their gradients.
    pub gradients: f64,
    /// Optimizer state.
    pub optimizer: f64,
    /// The fixed random projections and label targets, with what building the largest
    /// one needs for a moment.
    pub projections: f64,
    /// The activations of the larger of a training step and an evaluation batch.
    pub activations: f64,
    /// Whether the activations are those of evaluation (else of training).
    pub activations_are_eval: bool,
    /// The minibatch the activations are counted for.
    pub batch: usize,
}

impl Footprint {
    /// Everything together.
    pub fn total(&self) -> f64 {
        self.parameters + self.gradients + self.optimizer + self.projections + self.activations
    }
}

/// Bytes of the projection of `dim` inputs onto `d0` categories: (kept, built
/// transiently).
fn projection_bytes(kind: ProjectionKind, dim: f64, d0: f64, k: f64) -> (f64, f64) {
    match kind {
        // R^T, and the Rust buffer it is drawn into.
        ProjectionKind::Gaussian => (dim * d0 * FLOAT, dim * d0 * FLOAT),
        // Buckets (i64) and values, the CPU kernel's tables by column and by row; the
        // per-row lists it is sorted through.
        ProjectionKind::Sparse => (k * dim * 28.0 + d0 * 8.0, k * dim * 8.0 + d0 * 24.0),
        // The dense R^T for autograd and the signs and rows; the identity it is built
        // from and the rows of R e_j.
        ProjectionKind::Srht => (
            dim * d0 * FLOAT + dim * FLOAT + d0 * 8.0,
            2.0 * dim * dim * FLOAT + dim * d0 * FLOAT,
        ),
    }
}

/// Trainable parameters and floats per example of block `i`'s head under `config`'s
/// objective: its logits, an AugLocal net's activations, a momentum head's copies of
/// the next block (the head then built for the next block's output).
fn head_cost(
    config: &Config,
    network: &NetworkShape,
    layers: &[Vec<Layer>],
    i: usize,
    classes: i64,
) -> (u128, f64) {
    let objective = &config.objective;
    let momentum = objective.momentum_head && i + 1 < network.blocks.len();
    let reads = if momentum { i + 1 } else { i };
    let read = &network.blocks[reads];
    let (mut parameters, mut floats) = (0, 3.0 * n(classes) as f64);
    if momentum {
        parameters += read.parameters;
        floats += 2.0 * read.activations;
    }
    let dims: Vec<i64> = read.map.iter().flatten().map(|&d| d as i64).collect();
    let shape = OutputShape::of(&dims);
    let plan = (objective.head == HeadKind::Auglocal)
        .then(|| auglocal::plan(layers, reads, objective.aux_depth, objective.aux_taper).ok())
        .flatten();
    parameters += n(head::parameter_count(
        objective.head,
        &shape,
        read.pooled_dim as i64,
        classes,
        objective.head_hidden,
        plan.as_ref(),
    ));
    if let Some(plan) = &plan {
        floats += auglocal::activation_floats(head::aux_input(&shape, read.pooled_dim as i64), plan);
    }
    (parameters, floats)
}

/// Trainable parameters and floats per example of block `i`'s rule's other parts:
/// InfoPro's decoder (all but the last module), PredSim's similarity map.
fn rule_cost(method: Method, network: &NetworkShape, i: usize, input: InputShape) -> (u128, f64) {
    let block = &network.blocks[i];
    let last = i + 1 == network.blocks.len();
    match (method, block.map) {
        (Method::Infopro, Some([c, _, _])) if !last => (
            n(infopro::decoder_parameters(c as i64, input[0])),
            infopro::decoder_floats(c as i64, input),
        ),
        (Method::Predsim, map) => {
            let dims: Vec<i64> = map.iter().flatten().map(|&d| d as i64).collect();
            let parameters = predsim::similarity_parameters(&OutputShape::of(&dims), block.pooled_dim as i64);
            (n(parameters), block.output)
        }
        _ => (0, 0.0),
    }
}

/// Estimates the memory that training the model of `config` on inputs of `input` shape
/// with `classes` classes needs (`None` for an unknown model kind).
pub fn estimate(config: &Config, classes: i64, input: InputShape) -> Option<Footprint> {
    let network = network(&config.model, input)?;
    let objective = &config.objective;
    let method = config.train.method;
    let classes_u = n(classes);
    let classes_f = classes_u as f64;
    let divergence = method == Method::Sll && objective.has_divergence();
    let projection_head = objective.head == HeadKind::Projection;
    let d0 = n(objective.d0) as f64;
    let k = n(objective.sparse_nonzeros) as f64;
    let last = network.blocks.len().saturating_sub(1);

    let mut parameter_count = network.parameters();
    let layers: Vec<Vec<Layer>> = network.blocks.iter().map(|b| b.layers.clone()).collect();
    let (mut kept, mut transient) = (0.0f64, 0.0f64);
    let mut add_projection = |dim: f64| {
        let (k_bytes, t_bytes) = projection_bytes(objective.projection, dim, d0, k);
        kept += k_bytes;
        transient = transient.max(t_bytes);
    };
    // Floats per example of each block's objective (pooled u, dropout, projection,
    // log q, the head's logits).
    let mut objective_floats = vec![];
    for (i, block) in network.blocks.iter().enumerate() {
        let dim = block.pooled_dim as f64;
        let with_head = method != Method::Bp || i == last;
        let mut floats = dim;
        if with_head && !projection_head {
            let (parameters, head_floats) = head_cost(config, &network, &layers, i, classes);
            parameter_count += parameters;
            floats += head_floats;
        }
        let (parameters, rule_floats) = rule_cost(method, &network, i, input);
        parameter_count += parameters;
        floats += rule_floats;
        if divergence || projection_head {
            add_projection(dim);
            floats += 2.0 * dim + 5.0 * d0;
        }
        objective_floats.push(floats);
    }
    let mut input_floats = network.input;
    if divergence && objective.prior == Prior::Previous {
        add_projection(network.input_dim as f64);
        input_floats += network.input_dim as f64 + 3.0 * d0;
    }
    if divergence && objective.prior == Prior::Label {
        kept += 2.0 * classes_f * d0 * FLOAT;
    }

    // A training step: block by block (only one block's graph alive at a time), or
    // every block's at once (backprop, or the stages of a pipeline).
    let per_block = network
        .blocks
        .iter()
        .zip(&objective_floats)
        .map(|(b, o)| b.activations + o);
    let all_at_once = method == Method::Bp || config.train.pipeline != Pipeline::None;
    let inputs = std::iter::once(network.input).chain(network.blocks.iter().map(|b| b.output));
    let step_floats = if all_at_once {
        per_block.sum::<f64>()
    } else {
        per_block
            .zip(inputs.clone())
            .map(|(a, x)| a + x)
            .fold(0.0, f64::max)
    };
    let largest = network.blocks.iter().map(|b| b.largest).fold(0.0, f64::max);
    // The backward pass's gradient buffers of the largest map, twice.
    let train_floats = step_floats + input_floats + 2.0 * largest;
    // Evaluation keeps no graph: a block's input, its largest map and its output.
    let eval_floats = network
        .blocks
        .iter()
        .zip(inputs)
        .map(|(b, x)| x + b.largest + b.output)
        .fold(0.0, f64::max)
        + classes_f * network.blocks.len() as f64;
    let cap = |batch: usize, subset: usize| if subset > 0 { batch.min(subset) } else { batch };
    let batch = cap(config.data.batch_size, config.data.train_subset);
    let eval_batch = cap(config.data.eval_batch_size, config.data.test_subset);
    let train_bytes = train_floats * batch as f64 * FLOAT;
    let eval_bytes = eval_floats * eval_batch as f64 * FLOAT;

    let parameters = parameter_count as f64 * FLOAT;
    let moments = match config.optim.optimizer {
        OptimizerKind::Adam | OptimizerKind::Adamw => 2.0,
        OptimizerKind::Sgd if config.optim.momentum > 0.0 => 1.0,
        OptimizerKind::Sgd => 0.0,
    };
    Some(Footprint {
        parameter_count,
        parameters,
        gradients: parameters,
        optimizer: moments * parameters,
        projections: kept + transient,
        activations: train_bytes.max(eval_bytes),
        activations_are_eval: eval_bytes > train_bytes,
        batch: if eval_bytes > train_bytes {
            eval_batch
        } else {
            batch
        },
    })
}

/// `bytes` in binary units, e.g. `3.9 TiB`.
pub fn human_bytes(bytes: f64) -> String {
    const UNITS: [&str; 9] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"];
    let mut value = bytes.max(0.0);
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// One `key: value` field of a `/proc/meminfo`-style text, in bytes (the values are kB).
fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..]
        .trim_start_matches(':')
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb.saturating_mul(1024))
}

/// The memory this process may still allocate: `MemAvailable` of `/proc/meminfo`, or
/// less if a cgroup (v2) limit leaves less; `None` where neither can be read.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let available = meminfo.as_deref().and_then(|t| meminfo_field(t, "MemAvailable"));
    let read = |path: &str| std::fs::read_to_string(path).ok()?.trim().parse::<u64>().ok();
    let cgroup = read("/sys/fs/cgroup/memory.max")
        .map(|max| max.saturating_sub(read("/sys/fs/cgroup/memory.current").unwrap_or(0)));
    match (available, cgroup) {
        (Some(a), Some(c)) => Some(a.min(c)),
        (a, c) => a.or(c),
    }
}

/// What to reduce when `footprint` is too large for the model of `config`.
fn advice(config: &Config, footprint: &Footprint) -> String {
    let weights = footprint.parameters + footprint.gradients + footprint.optimizer;
    let largest = weights.max(footprint.projections).max(footprint.activations);
    if largest == footprint.activations {
        let key = if footprint.activations_are_eval {
            "data.eval_batch_size"
        } else {
            "data.batch_size"
        };
        return format!("reduce {key} (now {})", footprint.batch);
    }
    if largest == footprint.projections {
        let sparse = if config.objective.projection == ProjectionKind::Sparse {
            ""
        } else {
            " or use objective.projection = \"sparse\""
        };
        return format!("reduce objective.d0 (now {}){sparse}", config.objective.d0);
    }
    let m = &config.model;
    let list = |v: &[i64]| v.iter().map(i64::to_string).collect::<Vec<_>>().join(", ");
    match m {
        ModelConfig::Cnn(m) => format!(
            "reduce model.channels (now [{}]) or model.pool_grid",
            list(&m.channels)
        ),
        ModelConfig::Resnet(m) => format!(
            "reduce model.channels (now [{}]), model.stages or model.pool_grid",
            list(&m.channels)
        ),
        ModelConfig::Vit(m) => format!(
            "reduce model.width (now {}), model.depth (now {}) or model.mlp_ratio",
            m.width, m.depth
        ),
        ModelConfig::Mlp(m) => format!("reduce model.hidden (now [{}])", list(&m.hidden)),
    }
}

/// Refuses, with one line giving the estimate and what to reduce, a model of `config`
/// (for `classes` classes and inputs of `input` shape) whose training needs more memory
/// than this machine has available. Only the CPU's memory is checked: for a CUDA
/// `device` the check is skipped (libtorch reports a device that runs out itself).
pub fn check(config: &Config, classes: i64, input: InputShape, device: Device) -> Result<()> {
    if device != Device::Cpu {
        return Ok(());
    }
    let (Some(footprint), Some(available)) = (estimate(config, classes, input), available_memory()) else {
        return Ok(());
    };
    if footprint.total() <= available as f64 {
        return Ok(());
    }
    let h = human_bytes;
    bail!(
        "the model needs about {} (parameters {}, gradients {}, optimizer {}, projections {}, activations {} at batch {}) but this machine has {} available; {}",
        h(footprint.total()),
        h(footprint.parameters),
        h(footprint.gradients),
        h(footprint.optimizer),
        h(footprint.projections),
        h(footprint.activations),
        footprint.batch,
        h(available as f64),
        advice(config, &footprint)
    )
}

#[cfg(test)]
mod tests;
