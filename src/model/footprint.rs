//! How much memory a training run needs, estimated from its config before anything is
//! allocated, so that a model that cannot fit is refused with one line (naming what to
//! reduce) instead of dying in the allocator or driving the machine into swap.
//!
//! One function per model kind ([`mlp`], [`cnn`], [`resnet`], [`vit`]) walks the layer
//! shapes that `model/<kind>.rs` builds and gives, per block, its trainable parameters
//! (exact: the same count as [`super::Network::parameter_count`]), its pooled dimension
//! and the floats one example keeps alive in a training step (approximate, within about
//! 2×: the outputs autograd saves for backward). [`estimate`] adds the local heads
//! (exact), the fixed random projections (a dense Gaussian R_i is d0 × dim(u_i)
//! floats), the label targets, the gradients (one float per parameter), the optimizer
//! state (Adam/AdamW: two moments; SGD: one momentum buffer) and the minibatch;
//! [`check`] compares the total with the memory this machine has available.

use super::InputShape;
use crate::config::{
    Config, HeadKind, Method, ModelConfig, Norm, OptimizerKind, PatchEmbed, Pipeline, Prior, ProjectionKind,
    Stem,
};
use anyhow::{bail, Result};
use tch::Device;

/// Bytes of one `f32`, the kind of every parameter and activation.
const FLOAT: f64 = 4.0;

/// One block as far as memory goes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BlockShape {
    /// Trainable parameters of the block's layers (its local head not included).
    pub parameters: u128,
    /// dim(u_i), the pooled output that the head and the projection see.
    pub pooled_dim: u128,
    /// Floats per example that a training forward pass keeps for backward.
    pub activations: f64,
    /// Floats per example of the block's output h_i.
    pub output: f64,
    /// Floats per example of the block's largest single intermediate map.
    pub largest: f64,
}

/// The blocks of a network, and what its input looks like.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkShape {
    /// f_1 … f_L.
    pub blocks: Vec<BlockShape>,
    /// dim(pool(x)), what the input's projection R_0 sees.
    pub input_dim: u128,
    /// Floats per example of the input x.
    pub input: f64,
}

impl NetworkShape {
    /// Trainable parameters of all blocks (heads not included).
    pub fn parameters(&self) -> u128 {
        self.blocks.iter().map(|b| b.parameters).sum()
    }
}

/// A count from the config as an unsigned number (negative values, which
/// validation refuses, count as 0).
fn n(v: i64) -> u128 {
    v.max(0) as u128
}

/// The MLP of [`super::mlp::build`]: per layer a Linear (weights and bias) and, with a
/// norm, its weight and bias.
pub fn mlp(config: &ModelConfig, input: InputShape) -> NetworkShape {
    let input_dim: u128 = input.iter().map(|&d| n(d)).product();
    let norm = u128::from(config.norm != Norm::None);
    let mut in_dim = input_dim;
    let blocks = config
        .hidden
        .chunks(config.block_size.max(1))
        .map(|widths| {
            let mut block = BlockShape::default();
            for &width in widths {
                let width = n(width);
                block.parameters += in_dim * width + width + 2 * norm * width;
                // The linear map's output, the norm's, the activation's.
                block.activations += (2 + norm) as f64 * width as f64;
                block.largest = block.largest.max(width as f64);
                in_dim = width;
            }
            block.pooled_dim = in_dim;
            block.output = in_dim as f64;
            block
        })
        .collect();
    NetworkShape {
        blocks,
        input_dim,
        input: input_dim as f64,
    }
}

/// The VGG-style CNN of [`super::cnn::build`]: per stage a 3×3 conv with bias and,
/// with batch norm, its weight and bias.
pub fn cnn(config: &ModelConfig, input: InputShape) -> NetworkShape {
    let grid = n(config.pool_grid);
    let batch_norm = config.norm == Norm::Batch;
    let bn = u128::from(batch_norm);
    let [c, mut height, mut width] = input.map(n);
    let mut c_in = c;
    let numbered: Vec<(usize, i64)> = config.channels.iter().copied().enumerate().collect();
    let blocks = numbered
        .chunks(config.block_size.max(1))
        .map(|chunk| {
            let mut block = BlockShape::default();
            // The channels-last copy of the block's input.
            if config.channels_last {
                block.activations += (c_in * height * width) as f64;
            }
            for &(index, c_out) in chunk {
                let c_out = n(c_out);
                block.parameters += c_in * 9 * c_out + c_out + 2 * bn * c_out;
                let map = (c_out * height * width) as f64;
                // The conv's output, the norm's, the ReLU's.
                block.activations += (2 + bn) as f64 * map;
                block.largest = block.largest.max(map);
                if config.pool_after.contains(&(index + 1)) {
                    (height, width) = (height / 2, width / 2);
                    // The pooled map and its (64-bit) argmax indices.
                    block.activations += 3.0 * (c_out * height * width) as f64;
                }
                c_in = c_out;
            }
            block.pooled_dim = c_in * grid * grid;
            block.output = (c_in * height * width) as f64;
            block
        })
        .collect();
    NetworkShape {
        blocks,
        input_dim: c * grid * grid,
        input: (c * n(input[1]) * n(input[2])) as f64,
    }
}

/// Spatial size after a conv of `kernel` (padding kernel/2) with `stride`, as
/// [`super::resnet`] computes it.
fn conv_out(size: i64, kernel: i64, stride: i64) -> i64 {
    ((size + 2 * (kernel / 2) - kernel) / stride.max(1) + 1).max(0)
}

/// Parameters of a conv (bias unless a batch norm follows) and its batch norm.
fn conv_norm(c_in: u128, c_out: u128, kernel: u128, batch_norm: bool) -> u128 {
    c_in * kernel * kernel * c_out + if batch_norm { 2 * c_out } else { c_out }
}

/// The ResNet of [`super::resnet::build`]: the stem (with the first block), then basic
/// blocks of two 3×3 conv–norm pairs and a 1×1 projection shortcut where the width or
/// the resolution changes.
pub fn resnet(config: &ModelConfig, input: InputShape) -> NetworkShape {
    let batch_norm = config.norm == Norm::Batch;
    let bn = f64::from(u8::from(batch_norm));
    let grid = n(config.pool_grid);
    let [c, mut height, mut width] = input;
    let plan: Vec<(i64, i64)> = config
        .stages
        .iter()
        .zip(&config.channels)
        .enumerate()
        .flat_map(|(s, (&count, &c))| (0..count).map(move |r| (c, if s > 0 && r == 0 { 2 } else { 1 })))
        .collect();
    let mut channels = n(c);
    let mut blocks = vec![];
    for (with_stem, range) in super::resnet::unit_groups(config, plan.len()) {
        let chunk = &plan[range];
        let mut block = BlockShape::default();
        let area = |h: i64, w: i64| (n(h) * n(w)) as f64;
        if config.channels_last {
            block.activations += channels as f64 * area(height, width);
        }
        if with_stem {
            let (kernel, stride, max_pool) = match config.stem {
                Stem::Cifar => (3, 1, false),
                Stem::Imagenet => (7, 2, true),
            };
            let c0 = n(config.channels.first().copied().unwrap_or(0));
            block.parameters += conv_norm(channels, c0, kernel as u128, batch_norm);
            (height, width) = (conv_out(height, kernel, stride), conv_out(width, kernel, stride));
            let map = c0 as f64 * area(height, width);
            block.activations += (2.0 + bn) * map;
            block.largest = block.largest.max(map);
            if max_pool {
                (height, width) = (conv_out(height, 3, 2), conv_out(width, 3, 2));
                block.activations += 3.0 * c0 as f64 * area(height, width);
            }
            channels = c0;
        }
        for &(c_out, stride) in chunk {
            let c_out = n(c_out);
            let projection = stride != 1 || channels != c_out;
            block.parameters +=
                conv_norm(channels, c_out, 3, batch_norm) + conv_norm(c_out, c_out, 3, batch_norm);
            if projection {
                block.parameters += conv_norm(channels, c_out, 1, batch_norm);
            }
            (height, width) = (conv_out(height, 3, stride), conv_out(width, 3, stride));
            let map = c_out as f64 * area(height, width);
            // conv1, its norm, ReLU, conv2, its norm, (the shortcut's conv and norm),
            // the sum, ReLU.
            let maps = 4.0 + 2.0 * bn + if projection { 1.0 + bn } else { 0.0 };
            block.activations += maps * map;
            block.largest = block.largest.max(map);
            channels = c_out;
        }
        block.pooled_dim = channels * grid * grid;
        block.output = channels as f64 * area(height, width);
        blocks.push(block);
    }
    NetworkShape {
        blocks,
        input_dim: n(c) * grid * grid,
        input: (n(c) * n(input[1]) * n(input[2])) as f64,
    }
}

/// The ViT of [`super::vit::build`]: the patch embedding, position embeddings and
/// class token with the first block, pre-norm transformer blocks (two LayerNorms, qkv
/// and output maps, a two-layer MLP), and the final LayerNorm with the last block.
pub fn vit(config: &ModelConfig, input: InputShape) -> NetworkShape {
    let [c, h, w] = input;
    let p = config.patch_size.max(1);
    let d = n(config.width);
    let hidden = n((config.width as f64 * config.mlp_ratio).round() as i64);
    let tokens = n((h / p) * (w / p)) + u128::from(config.class_token);
    let layer_parameters =
        2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * hidden + hidden) + (hidden * d + d);
    let t = tokens as f64;
    // Per layer: norm1, qkv, the attention output and its transposed copy, the output
    // map, the residual sum, norm2, fc1, GELU, fc2, the residual sum; and the
    // attention weights (heads × T × T).
    let layer_activations = t * (11.0 * d as f64 + 2.0 * hidden as f64) + n(config.heads) as f64 * t * t;
    let largest = t * (3 * d).max(hidden) as f64;
    let depth = config.depth;
    let step = config.block_size.max(1);
    let blocks = (0..depth)
        .step_by(step)
        .enumerate()
        .map(|(b, start)| {
            let end = (start + step).min(depth);
            let layers = (end - start) as u128;
            let mut block = BlockShape {
                parameters: layers * layer_parameters,
                pooled_dim: d,
                activations: layers as f64 * layer_activations,
                output: t * d as f64,
                largest,
            };
            if b == 0 {
                let patch = n(c) * n(p) * n(p) * d + d;
                let class_token = if config.class_token { d } else { 0 };
                block.parameters += patch + tokens * d + class_token;
                // The patch tokens and their sum with the position embeddings.
                block.activations += 2.0 * t * d as f64;
                if config.patch_embed == PatchEmbed::Linear {
                    block.activations += (n(c) * n(h) * n(w)) as f64;
                }
            }
            if end == depth {
                block.parameters += 2 * d;
                block.activations += t * d as f64;
            }
            block
        })
        .collect();
    let grid = n(config.pool_grid);
    NetworkShape {
        blocks,
        input_dim: n(c) * grid * grid,
        input: (n(c) * n(h) * n(w)) as f64,
    }
}

/// The blocks of the network `config` describes, for inputs of `input` shape (`None`
/// for an unknown model kind).
pub fn network(config: &ModelConfig, input: InputShape) -> Option<NetworkShape> {
    match config.kind.as_str() {
        "mlp" => Some(mlp(config, input)),
        "cnn" => Some(cnn(config, input)),
        "resnet" => Some(resnet(config, input)),
        "vit" => Some(vit(config, input)),
        _ => None,
    }
}

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
            parameter_count += block.pooled_dim * classes_u + classes_u;
            floats += 3.0 * classes_f;
        }
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
    match m.kind.as_str() {
        "cnn" => format!(
            "reduce model.channels (now [{}]) or model.pool_grid",
            list(&m.channels)
        ),
        "resnet" => format!(
            "reduce model.channels (now [{}]), model.stages or model.pool_grid",
            list(&m.channels)
        ),
        "vit" => format!(
            "reduce model.width (now {}), model.depth (now {}) or model.mlp_ratio",
            m.width, m.depth
        ),
        _ => format!("reduce model.hidden (now [{}])", list(&m.hidden)),
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
mod tests {
    use super::*;
    use crate::learner::Model;
    use crate::model::Network;

    fn config(sets: &[&str]) -> Config {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        Config::load(None, &sets).unwrap()
    }

    /// The estimated parameter count of the network, and of the network with its
    /// heads, equals what the built network and model hold.
    fn assert_exact(sets: &[&str], input: InputShape) {
        let _turn = crate::libtorch_turn();
        let config = config(sets);
        let net = Network::new(&config.model, input, Device::Cpu).unwrap();
        let shape = network(&config.model, input).unwrap();
        assert_eq!(shape.parameters(), net.parameter_count() as u128, "{sets:?}");
        assert_eq!(shape.blocks.len(), net.len(), "{sets:?}");
        for (estimated, block) in shape.blocks.iter().zip(&net.blocks) {
            assert_eq!(estimated.pooled_dim, block.pooled_dim() as u128, "{sets:?}");
        }
        assert_eq!(shape.input_dim, net.input_dim as u128, "{sets:?}");
        let model = Model::new(&config, 10, input, Device::Cpu).unwrap();
        let footprint = estimate(&config, 10, input).unwrap();
        assert_eq!(
            footprint.parameter_count,
            model.network.parameter_count() as u128,
            "{sets:?}"
        );
        assert!(footprint.activations > 0.0 && footprint.total().is_finite());
    }

    #[test]
    fn mlp_parameter_counts_are_exact() {
        assert_exact(&["model.hidden=[16, 8, 4]", "objective.d0=8"], [1, 6, 6]);
        assert_exact(
            &[
                "model.hidden=[16, 8, 4]",
                "model.block_size=2",
                "model.norm=layer",
                "train.method=bp",
            ],
            [1, 6, 6],
        );
        assert_exact(
            &[
                "model.hidden=[12, 12]",
                "model.norm=batch",
                "objective.head=projection",
                "objective.d0=10",
            ],
            [3, 4, 4],
        );
    }

    #[test]
    fn cnn_parameter_counts_are_exact() {
        let cnn = [
            "model.kind=cnn",
            "model.channels=[4, 8, 8]",
            "model.pool_after=[1, 3]",
            "objective.d0=8",
        ];
        assert_exact(&cnn, [3, 8, 8]);
        let mut bn = cnn.to_vec();
        bn.extend(["model.norm=batch", "model.block_size=2", "model.pool_grid=3"]);
        assert_exact(&bn, [3, 8, 8]);
    }

    #[test]
    fn resnet_parameter_counts_are_exact() {
        let resnet = [
            "model.kind=resnet",
            "model.stages=[2, 1, 1]",
            "model.channels=[4, 8, 16]",
            "objective.d0=8",
        ];
        assert_exact(&resnet, [3, 8, 8]);
        let mut other = resnet.to_vec();
        other.extend(["model.norm=batch", "model.stem=imagenet", "model.block_size=3"]);
        assert_exact(&other, [3, 16, 16]);
    }

    #[test]
    fn vit_parameter_counts_are_exact() {
        let vit = [
            "model.kind=vit",
            "model.patch_size=2",
            "model.width=8",
            "model.depth=3",
            "model.heads=2",
            "objective.d0=8",
        ];
        assert_exact(&vit, [1, 6, 6]);
        let mut other = vit.to_vec();
        other.extend([
            "model.block_size=2",
            "model.class_token=true",
            "model.token_pool=cls",
            "model.patch_embed=linear",
            "model.mlp_ratio=1.5",
        ]);
        assert_exact(&other, [3, 4, 4]);
    }

    #[test]
    fn a_model_too_large_for_any_machine_is_refused_naming_what_to_reduce() {
        let config = config(&["model.hidden=[1000000, 1000000, 1000000]"]);
        let footprint = estimate(&config, 10, [1, 28, 28]).unwrap();
        // 784·10⁶ + 2·10¹² weights, ×4 bytes, for parameters, gradients and 2 moments.
        assert!(
            footprint.parameters > 8e12 && footprint.total() > 32e12,
            "{footprint:?}"
        );
        let e = check(&config, 10, [1, 28, 28], Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the model needs about "), "{e}");
        assert!(
            e.contains("TiB") && e.contains("available") && e.contains("model.hidden"),
            "{e}"
        );
        // A CUDA device is not checked against the host's memory.
        check(&config, 10, [1, 28, 28], Device::Cuda(0)).unwrap();
        // The default preset fits.
        check(&Config::load(None, &[]).unwrap(), 10, [1, 28, 28], Device::Cpu).unwrap();
    }

    #[test]
    fn dense_projections_and_batches_are_counted() {
        let dense = config(&["objective.d0=65536", "objective.projection=gaussian"]);
        let f = estimate(&dense, 10, [1, 28, 28]).unwrap();
        // Three 1024 × 65536 blocks' R and the input's 784 × 65536, 4 bytes each.
        assert!(f.projections >= (3.0 * 1024.0 + 784.0) * 65536.0 * 4.0, "{f:?}");
        let e = advice(&dense, &f);
        assert!(e.contains("objective.d0"), "{e}");
        let big_batch = config(&["data.batch_size=1000000"]);
        let f = estimate(&big_batch, 10, [1, 28, 28]).unwrap();
        assert_eq!(f.batch, 1_000_000);
        assert!(advice(&big_batch, &f).contains("data.batch_size"));
        // train_subset caps the batch.
        let capped = config(&["data.batch_size=1000000", "data.train_subset=512"]);
        assert!(estimate(&capped, 10, [1, 28, 28]).unwrap().activations < f.activations);
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1536.0), "1.5 KiB");
        assert_eq!(human_bytes(3.9 * 1024f64.powi(4)), "3.9 TiB");
        assert_eq!(
            meminfo_field("MemTotal: 10 kB\nMemAvailable:   22 kB\n", "MemAvailable"),
            Some(22 * 1024)
        );
    }
}
