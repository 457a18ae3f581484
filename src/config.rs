//! Run configuration: one section per concern, defaults next to each field.
//!
//! A run is described by a TOML file (a preset in `configs/` or the user's own),
//! overridden by `--set section.key=value` pairs and a few CLI flags. Unknown keys and
//! bad values are rejected with the dotted name of the key; impossible combinations
//! are rejected by [`Config::validate`]. The fully resolved config (seeds included) is
//! written to every run directory.

use crate::data::augment::Augment;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The presets shipped with the tool, usable by name with `--config NAME`.
pub const PRESETS: &[(&str, &str)] = &[
    ("mnist-mlp", include_str!("../configs/mnist-mlp.toml")),
    ("mnist-mlp4", include_str!("../configs/mnist-mlp4.toml")),
    (
        "fashion-mnist-mlp",
        include_str!("../configs/fashion-mnist-mlp.toml"),
    ),
    ("cifar10-vgg", include_str!("../configs/cifar10-vgg.toml")),
    ("cifar10-resnet", include_str!("../configs/cifar10-resnet.toml")),
    (
        "cifar10-resnet32",
        include_str!("../configs/cifar10-resnet32.toml"),
    ),
    (
        "imagefolder-resnet",
        include_str!("../configs/imagefolder-resnet.toml"),
    ),
    (
        "cifar10-vgg-full",
        include_str!("../configs/cifar10-vgg-full.toml"),
    ),
    (
        "cifar10-resnet-full",
        include_str!("../configs/cifar10-resnet-full.toml"),
    ),
    (
        "cifar10-resnet32-full",
        include_str!("../configs/cifar10-resnet32-full.toml"),
    ),
    ("mnist-vit", include_str!("../configs/mnist-vit.toml")),
    ("cifar10-vit", include_str!("../configs/cifar10-vit.toml")),
    (
        "cifar10-vit-full",
        include_str!("../configs/cifar10-vit-full.toml"),
    ),
    (
        "imagefolder-resnet-full",
        include_str!("../configs/imagefolder-resnet-full.toml"),
    ),
];

/// The preset trained when no `--config` is given.
pub const DEFAULT_PRESET: &str = "mnist-mlp";

/// Everything a run needs, section by section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of the preset this config came from (used in run directory names).
    #[serde(default = "default_preset_name")]
    pub preset: String,
    /// Which data, how it is batched and normalised.
    #[serde(default)]
    pub data: DataConfig,
    /// The network: a sequence of blocks.
    #[serde(default)]
    pub model: ModelConfig,
    /// The SLL local objective (projection, dropout, posterior, divergence, head).
    #[serde(default)]
    pub objective: ObjectiveConfig,
    /// One optimizer and learning-rate schedule per block (one in total for `bp`).
    #[serde(default)]
    pub optim: OptimConfig,
    /// Training method, length, seed, device.
    #[serde(default)]
    pub train: TrainConfig,
}

fn default_preset_name() -> String {
    "custom".into()
}

/// Data section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset name (`mnist`, `fashion-mnist`, `cifar10`, `cifar100`, `imagefolder`).
    pub dataset: String,
    /// Folder holding `<dataset>/<official file names>`; for `imagefolder`, the root
    /// holding `train/<class>/` and `val/<class>/`.
    pub dir: String,
    /// `imagefolder`: side of the square images the network sees (0 = 64).
    pub image_size: usize,
    /// Training-time augmentation (seeded; off by default): `crop_padding`, `crop_size`,
    /// `flip`, `cutout`.
    pub augment: Augment,
    /// Background threads assembling (and augmenting) training batches.
    pub workers: usize,
    /// Minibatch size for training.
    pub batch_size: usize,
    /// Minibatch size for evaluation (does not change results, only speed).
    pub eval_batch_size: usize,
    /// Standardise inputs per channel with the training set's mean and std.
    pub normalize: bool,
    /// Per-channel mean used for standardisation; filled in from the training set when empty.
    pub mean: Vec<f64>,
    /// Per-channel std used for standardisation; filled in from the training set when empty.
    pub std: Vec<f64>,
    /// Train on the first N training examples only (0 = all); for quick experiments and tests.
    pub train_subset: usize,
    /// Evaluate on the first N test examples only (0 = all).
    pub test_subset: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "mnist".into(),
            dir: "data".into(),
            image_size: 0,
            augment: Augment::default(),
            workers: 1,
            batch_size: 128,
            eval_batch_size: 1000,
            normalize: true,
            mean: vec![],
            std: vec![],
            train_subset: 0,
            test_subset: 0,
        }
    }
}

/// Activation function of a layer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// Gaussian error linear unit.
    Gelu,
}

/// Normalisation layer after each linear map.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// No normalisation.
    None,
    /// LayerNorm over features.
    Layer,
    /// BatchNorm over the batch.
    Batch,
}

/// How the scales γ of the network's batch-norm layers start.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NormInit {
    /// U(0, 1): tch's default, what every run before this setting used.
    Uniform,
    /// 1: PyTorch's default.
    Ones,
}

/// Input stem of a ResNet.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// conv 3×3, stride 1 (32×32 inputs).
    Cifar,
    /// conv 7×7 stride 2, then max-pool 3×3 stride 2 (ImageNet-sized inputs).
    Imagenet,
}

/// How a ViT turns patches into tokens.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PatchEmbed {
    /// A conv with kernel = stride = patch size.
    Conv,
    /// A linear map of each flattened patch (the same function, another layout).
    Linear,
}

/// How a ViT block's tokens are pooled into u_i.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TokenPool {
    /// Mean over tokens.
    Mean,
    /// The class token.
    Cls,
}

/// Model section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model family (`mlp`, `cnn`).
    pub kind: String,
    /// MLP: width of each hidden layer, input to output.
    pub hidden: Vec<i64>,
    /// CNN: output channels of each 3×3 conv stage, input to output; ResNet: the width
    /// of each stage.
    pub channels: Vec<i64>,
    /// ResNet: residual blocks per stage (ResNet-20: [3, 3, 3]; ResNet-18: [2, 2, 2, 2]).
    pub stages: Vec<usize>,
    /// ResNet: the input stem, `cifar` (conv 3×3) or `imagenet` (conv 7×7 stride 2,
    /// max-pool).
    pub stem: Stem,
    /// CNN: the (1-based) conv stages followed by a 2×2 max-pool.
    pub pool_after: Vec<usize>,
    /// CNN/ResNet: feature maps are average-pooled to this k×k grid for heads and projections.
    pub pool_grid: i64,
    /// CNN/ResNet: keep activations and conv weights channels-last (faster convolutions on CPU).
    pub channels_last: bool,
    /// ViT: side of the square patches.
    pub patch_size: i64,
    /// ViT: patch embedding, `conv` (kernel = stride = patch) or `linear` (on flattened patches).
    pub patch_embed: PatchEmbed,
    /// ViT: token width.
    pub width: i64,
    /// ViT: number of transformer blocks.
    pub depth: usize,
    /// ViT: attention heads (must divide `width`).
    pub heads: i64,
    /// ViT: hidden width of the MLP as a multiple of `width`.
    pub mlp_ratio: f64,
    /// ViT: dropout after attention, in the MLP, and on attention weights (0 = off).
    pub dropout: f64,
    /// ViT: prepend a learned class token.
    pub class_token: bool,
    /// ViT: pooling of tokens for heads and projections, `mean` or `cls` (needs `class_token`).
    pub token_pool: TokenPool,
    /// Activation after each layer.
    pub activation: Activation,
    /// Normalisation after each linear map.
    pub norm: Norm,
    /// Initial scales γ of the network's batch-norm layers: `uniform` (U(0, 1), tch's
    /// default) or `ones` (PyTorch's). Auxiliary heads keep `uniform`.
    pub norm_init: NormInit,
    /// Layers (MLP), conv stages (CNN) or residual blocks (ResNet) grouped into one
    /// block (one local objective per block).
    pub block_size: usize,
    /// ResNet: split the network's units (the stem and every residual block) into this
    /// many contiguous modules of near-equal unit counts, as InfoPro does (ResNet-32:
    /// 16 units; K = 16 gives the stem a module of its own); 0 = group by `block_size`.
    pub modules: usize,
}

impl ModelConfig {
    /// A short description of the architecture, e.g. `mlp 1024-1024-1024` or
    /// `cnn 64-128-256 (max-pool after 2,3)`, followed by the grouping into blocks.
    pub fn describe(&self) -> String {
        let join = |v: Vec<String>, sep: &str| v.join(sep);
        let layers = match self.kind.as_str() {
            "cnn" => format!(
                "cnn {} (max-pool after {})",
                join(self.channels.iter().map(|c| c.to_string()).collect(), "-"),
                join(self.pool_after.iter().map(|c| c.to_string()).collect(), ",")
            ),
            "vit" => format!(
                "vit patch {} width {} depth {} heads {} mlp {}x ({} pooling)",
                self.patch_size,
                self.width,
                self.depth,
                self.heads,
                self.mlp_ratio,
                match self.token_pool {
                    TokenPool::Mean => "mean",
                    TokenPool::Cls => "class-token",
                }
            ),
            "resnet" => format!(
                "resnet {} blocks of widths {} ({} stem)",
                join(self.stages.iter().map(|c| c.to_string()).collect(), "-"),
                join(self.channels.iter().map(|c| c.to_string()).collect(), "-"),
                match self.stem {
                    Stem::Cifar => "cifar",
                    Stem::Imagenet => "imagenet",
                }
            ),
            kind => format!(
                "{kind} {}",
                join(self.hidden.iter().map(|c| c.to_string()).collect(), "-")
            ),
        };
        if self.kind == "resnet" && self.modules > 0 {
            return format!("{layers}, {} modules", self.modules);
        }
        format!("{layers}, {} per block", self.block_size)
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            kind: "mlp".into(),
            hidden: vec![1024, 1024, 1024],
            channels: vec![64, 128, 256],
            stages: vec![3, 3, 3],
            stem: Stem::Cifar,
            pool_after: vec![2, 3],
            pool_grid: 2,
            channels_last: true,
            patch_size: 4,
            patch_embed: PatchEmbed::Conv,
            width: 192,
            depth: 6,
            heads: 3,
            mlp_ratio: 2.0,
            dropout: 0.0,
            class_token: false,
            token_pool: TokenPool::Mean,
            activation: Activation::Relu,
            norm: Norm::None,
            norm_init: NormInit::Uniform,
            block_size: 1,
            modules: 0,
        }
    }
}

/// What the divergence term compares a block's posterior with.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Prior {
    /// The block below's posterior (q_0 from the input for the first block).
    Previous,
    /// A fixed label target t_y.
    Label,
    /// No divergence term (β = 0).
    None,
}

/// Which local classifier produces the prediction term (see `rules::head`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// The method's own head (resolved when the config is loaded): `linear` for sll,
    /// local and bp, `conv` for dgl, `infopro` for infopro, `pooled` for predsim.
    Auto,
    /// A trainable linear map on the pooled output u = pool(h), dim(u) → classes.
    Linear,
    /// PredSim's: feature maps average-pooled until C·h·w ≤ 2048, then linear.
    Pooled,
    /// DGL's: two 3×3 conv–BN–ReLU at the block's width, 2×2 average pool, linear.
    Conv,
    /// pool(h) → linear to `objective.head_hidden` → ReLU → linear.
    Mlp,
    /// InfoPro's `1c2f` net: 3×3 stride-2 conv–BN–ReLU, global pool, linear 128, ReLU, linear.
    Infopro,
    /// The fixed projection itself as a frozen random classifier (needs d0 = classes).
    Projection,
}

/// What SLL's projection reads.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProjectionInput {
    /// The block's pooled output u = pool(h).
    Pooled,
    /// The head's features (its hidden layer, or its pooled conv output).
    Head,
}

/// Construction of the fixed random projection.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProjectionKind {
    /// Dense, entries N(0, 1/d0).
    Gaussian,
    /// Sparse JL: `sparse_nonzeros` entries ±1/√k per input coordinate.
    Sparse,
    /// Subsampled randomized Hadamard transform S H D / √d0: random signs, a fast
    /// Walsh–Hadamard transform of the input zero-padded to a power of two ≥ d0, d0
    /// of its outputs kept uniformly at random (entries ±1/√d0).
    Srht,
}

/// Objective section (see docs/method.md).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    /// Number of categories d0 of the projected posterior.
    pub d0: i64,
    /// Construction of the fixed projection R.
    pub projection: ProjectionKind,
    /// Nonzeros per input coordinate of the `sparse` projection.
    pub sparse_nonzeros: i64,
    /// Softmax temperature τ.
    pub tau: f64,
    /// Weight β of the Bhattacharyya divergence term.
    pub beta: f64,
    /// Multiplicative dropout rate p before the projection (0 = off).
    pub dropout: f64,
    /// What the divergence compares with.
    pub prior: Prior,
    /// Local prediction head.
    pub head: HeadKind,
    /// Hidden width of the `mlp` head.
    pub head_hidden: i64,
    /// What the SLL projection reads: the pooled block output or the head's features.
    pub projection_input: ProjectionInput,
    /// One projection R for each run of consecutive blocks of equal dim(u) (seeded by
    /// the run's first block), instead of one per block.
    pub shared_projection: bool,
    /// Label smoothing ε of the label target when `prior = label` and d0 = classes.
    pub label_smoothing: f64,
    /// InfoPro: weight of the cross-entropy at the first module and at module K−1.
    pub infopro_prediction: [f64; 2],
    /// InfoPro: weight of the reconstruction at the first module and at module K−1.
    pub infopro_reconstruction: [f64; 2],
    /// PredSim: weight β of the similarity term ((1 − β) for the prediction term).
    pub predsim_beta: f64,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self {
            d0: 512,
            projection: ProjectionKind::Gaussian,
            sparse_nonzeros: 4,
            tau: 1.0,
            beta: 1.0,
            dropout: 0.1,
            prior: Prior::Previous,
            head: HeadKind::Auto,
            head_hidden: 256,
            projection_input: ProjectionInput::Pooled,
            shared_projection: false,
            label_smoothing: 0.1,
            infopro_prediction: [0.5, 1.0],
            infopro_reconstruction: [5.0, 0.0],
            predsim_beta: 0.99,
        }
    }
}

impl ObjectiveConfig {
    /// Whether the divergence term (and hence the projection) is computed at all.
    pub fn has_divergence(&self) -> bool {
        self.beta > 0.0 && self.prior != Prior::None
    }
}

/// Optimizer algorithm.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (L2 weight decay).
    Adam,
    /// AdamW (decoupled weight decay).
    Adamw,
    /// SGD with momentum.
    Sgd,
}

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// lr stays at its base value.
    Constant,
    /// Linear warm-up, then cosine decay to `min_lr`.
    Cosine,
}

/// Optimizer section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Algorithm.
    pub optimizer: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Momentum (SGD only).
    pub momentum: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Warm-up length in epochs (may be fractional) for `cosine`.
    pub warmup_epochs: f64,
    /// Final learning rate of `cosine`.
    pub min_lr: f64,
    /// Use the one-pass fused Adam/AdamW kernel where it applies (f32 on the CPU);
    /// `false` uses libtorch's `torch::optim` implementation.
    pub fused: bool,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            weight_decay: 0.0,
            momentum: 0.9,
            schedule: Schedule::Cosine,
            warmup_epochs: 0.0,
            min_lr: 0.0,
            fused: true,
        }
    }
}

/// Training method.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Stochastic Layer-wise Learning: local CE + β·Bhattacharyya per block.
    Sll,
    /// Local cross-entropy only (SLL with β = 0).
    Local,
    /// End-to-end backpropagation through the same blocks, one head on the last.
    Bp,
    /// DGL (Belilovsky et al. 2020): local CE through a conv auxiliary net per block.
    Dgl,
    /// InfoPro (Wang et al. 2021): local CE and reconstruction of the input per block.
    Infopro,
    /// PredSim (Nøkland & Eidnes 2019): (1−β)·local CE + β·similarity matching.
    Predsim,
}

impl Method {
    /// The head `objective.head = "auto"` resolves to.
    pub fn default_head(self) -> HeadKind {
        match self {
            Method::Sll | Method::Local | Method::Bp => HeadKind::Linear,
            Method::Dgl => HeadKind::Conv,
            Method::Infopro => HeadKind::Infopro,
            Method::Predsim => HeadKind::Pooled,
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Sll => "sll",
            Method::Local => "local",
            Method::Bp => "bp",
            Method::Dgl => "dgl",
            Method::Infopro => "infopro",
            Method::Predsim => "predsim",
        })
    }
}

/// Train section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// sll, local or bp.
    pub method: Method,
    /// Passes over the training set.
    pub epochs: usize,
    /// Seed of everything random: initialisation, shuffling, dropout, projections.
    pub seed: u64,
    /// `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// Intra-op threads of libtorch (0 = libtorch's default); with a pipeline, the
    /// threads of each stage (0 = the cores shared out among the stages).
    pub threads: usize,
    /// How the blocks of `sll`/`local` are scheduled: one after another, or as a
    /// pipeline of concurrent stages (see `train::pipeline`).
    pub pipeline: Pipeline,
    /// Pipeline stages, each a run of consecutive blocks (0 = one per block).
    pub stages: usize,
    /// The device of each thread-pipeline stage (`cuda:0`, `cuda:1`, ...; empty = every
    /// stage on `train.device`).
    pub stage_devices: Vec<String>,
    /// Data-parallel replicas of each stage of the MPI pipeline (ranks = stages ×
    /// replicas): each trains on its share of every minibatch, gradients averaged
    /// across the stage's replicas before each step.
    pub replicas: usize,
    /// The divergence guard: training stops when a block's loss on a step exceeds this
    /// many times its loss on the run's first step (0 = only non-finite losses stop it).
    pub divergence_factor: f64,
    /// Flush subnormal floating-point numbers to zero in every computing thread (CPU):
    /// much faster once weights drift into subnormals (see `denormals`).
    pub flush_denormals: bool,
    /// Keep freed memory in the process for the next step instead of returning it to
    /// the kernel (glibc's mmap and trim thresholds, see `malloc`): far fewer page
    /// faults per step for convolutional networks.
    pub keep_freed_memory: bool,
}

/// How the blocks are scheduled during training.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pipeline {
    /// Every block trains on a minibatch before the next minibatch starts.
    None,
    /// Stages of consecutive blocks on their own threads, minibatches flowing through
    /// bounded queues: block i trains on minibatch t while block i+1 is on t−1.
    Threads,
    /// One stage per MPI rank (`mpirun -np K sll train ...`, a build with the `mpi`
    /// feature), activations sent rank to rank.
    Mpi,
}

impl std::fmt::Display for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Pipeline::None => "none",
            Pipeline::Threads => "threads",
            Pipeline::Mpi => "mpi",
        })
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Sll,
            epochs: 15,
            seed: 0,
            device: "cpu".into(),
            threads: 0,
            pipeline: Pipeline::None,
            stages: 0,
            stage_devices: vec![],
            replicas: 1,
            divergence_factor: 100.0,
            flush_denormals: true,
            keep_freed_memory: true,
        }
    }
}

impl Config {
    /// Parses a config from TOML text; `origin` names it in error messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config> {
        let value: toml::Value =
            toml::from_str(text).map_err(|e| anyhow!("{origin}: {}", one_line(&e.to_string())))?;
        Self::from_value(value, origin)
    }

    fn from_value(value: toml::Value, origin: &str) -> Result<Config> {
        let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            anyhow!(
                "{origin}: key `{path}`: {}",
                one_line(&e.into_inner().to_string())
            )
        })?;
        let mut config: Config = config;
        if config.objective.head == HeadKind::Auto {
            config.objective.head = config.train.method.default_head();
        }
        Ok(config)
    }

    /// Loads `source` (a file path or a preset name; the default preset when `None`) and
    /// applies `sets` (`section.key=value`, value in TOML syntax or a bare string).
    ///
    /// For `local` and `bp`, which have no divergence term, the result has
    /// `objective.beta = 0` and `objective.prior = "none"`, and objective keys in `sets`
    /// that the method ignores get a one-line warning on stderr.
    pub fn load(source: Option<&str>, sets: &[String]) -> Result<Config> {
        Self::load_warning(source, sets, true)
    }

    /// [`Config::load`] without the warning about ignored objective keys, for callers
    /// that choose the method themselves (the benchmarks' baselines).
    pub fn load_quietly(source: Option<&str>, sets: &[String]) -> Result<Config> {
        Self::load_warning(source, sets, false)
    }

    fn load_warning(source: Option<&str>, sets: &[String], warn: bool) -> Result<Config> {
        let (text, origin) = match source {
            None => (
                preset(DEFAULT_PRESET).unwrap().to_string(),
                DEFAULT_PRESET.to_string(),
            ),
            Some(s) if Path::new(s).is_file() => (
                std::fs::read_to_string(s).with_context(|| format!("cannot read config {s}"))?,
                s.to_string(),
            ),
            Some(s) if Path::new(s).exists() && preset(s).is_none() => {
                bail!("config {s}: not a regular file (a FIFO, a device or a folder cannot be read as a config)")
            }
            Some(s) => match preset(s) {
                Some(text) => (text.to_string(), s.to_string()),
                None => bail!(
                    "config {s}: no such file, and not a preset name (presets: {})",
                    PRESETS.iter().map(|p| p.0).collect::<Vec<_>>().join(", ")
                ),
            },
        };
        let mut value: toml::Value =
            toml::from_str(&text).map_err(|e| anyhow!("{origin}: {}", one_line(&e.to_string())))?;
        for set in sets {
            apply_set(&mut value, set)?;
        }
        let mut config = Self::from_value(value, &origin)?;
        config.validate()?;
        config.drop_unused_objective(warn.then_some(sets));
        Ok(config)
    }

    /// `local` and `bp` have no divergence term: records β = 0 and prior = "none", the
    /// values they train with (see `learner::effective_objective`), so that a run's
    /// `config.toml` says what was trained. With `sets`, warns on one line about the
    /// objective keys among them that such a method ignores (a preset's or a file's own
    /// values are not warned about).
    fn drop_unused_objective(&mut self, sets: Option<&[String]>) {
        if self.train.method == Method::Sll {
            return;
        }
        let mut ignored = vec!["objective.beta", "objective.prior"];
        if self.objective.head != HeadKind::Projection {
            // A projection head still uses the projection, its dropout and τ.
            ignored.extend([
                "objective.d0",
                "objective.tau",
                "objective.dropout",
                "objective.projection",
            ]);
        }
        let given = |key: &&str| {
            sets.unwrap_or_default()
                .iter()
                .any(|s| s.split_once('=').is_some_and(|(k, _)| k.trim() == *key))
        };
        let given: Vec<&str> = ignored.into_iter().filter(given).collect();
        if !given.is_empty() {
            eprintln!(
                "warning: method `{}` has no divergence term, so --set {} {} no effect (the run records objective.beta = 0 and objective.prior = \"none\")",
                self.train.method,
                given.join(", "),
                if given.len() == 1 { "has" } else { "have" }
            );
        }
        self.objective.beta = 0.0;
        self.objective.prior = Prior::None;
    }

    /// Rejects values and combinations that cannot train, naming the key.
    pub fn validate(&self) -> Result<()> {
        let o = &self.objective;
        let m = &self.model;
        let checks: [(bool, &str, String); 24] = [
            (self.data.batch_size > 0, "data.batch_size", "must be > 0".into()),
            (self.data.workers > 0, "data.workers", "must be > 0".into()),
            (
                self.data.eval_batch_size > 0,
                "data.eval_batch_size",
                "must be > 0".into(),
            ),
            (
                self.data.mean.len() == self.data.std.len(),
                "data.std",
                "must have as many entries as data.mean".into(),
            ),
            (
                self.data.std.iter().all(|s| *s > 0.0),
                "data.std",
                "entries must be > 0".into(),
            ),
            (
                ["mlp", "cnn", "resnet", "vit"].contains(&m.kind.as_str()),
                "model.kind",
                format!("unknown model kind {:?} (known: mlp, cnn, resnet, vit)", m.kind),
            ),
            (
                m.kind != "vit" || (m.width > 0 && m.heads > 0 && m.width % m.heads == 0),
                "model.heads",
                format!("must divide model.width ({} heads, width {})", m.heads, m.width),
            ),
            (
                m.kind != "vit" || (m.depth > 0 && m.patch_size > 0 && m.mlp_ratio > 0.0),
                "model.depth",
                "model.depth, model.patch_size and model.mlp_ratio must be > 0".into(),
            ),
            (
                m.kind != "vit" || m.token_pool != TokenPool::Cls || m.class_token,
                "model.token_pool",
                "= \"cls\" needs model.class_token = true".into(),
            ),
            (
                (0.0..1.0).contains(&m.dropout),
                "model.dropout",
                "must be in [0, 1)".into(),
            ),
            (
                m.kind != "resnet" || (!m.stages.is_empty() && m.stages.iter().all(|n| *n > 0)),
                "model.stages",
                "must be a non-empty list of positive block counts".into(),
            ),
            (
                m.kind != "resnet" || m.stages.len() == m.channels.len(),
                "model.channels",
                format!(
                    "must give one width per ResNet stage ({} stages in model.stages, {} widths)",
                    m.stages.len(),
                    m.channels.len()
                ),
            ),
            (
                m.kind == "mlp" || m.kind == "vit" || m.norm != Norm::Layer,
                "model.norm",
                format!("\"layer\" is for MLPs; a {} uses \"batch\" or \"none\"", m.kind),
            ),
            (
                !self.model.hidden.is_empty() && self.model.hidden.iter().all(|w| *w > 0),
                "model.hidden",
                "must be a non-empty list of positive widths".into(),
            ),
            (
                self.model.block_size > 0,
                "model.block_size",
                "must be > 0".into(),
            ),
            (
                !self.model.channels.is_empty() && self.model.channels.iter().all(|c| *c > 0),
                "model.channels",
                "must be a non-empty list of positive channel counts".into(),
            ),
            (self.model.pool_grid > 0, "model.pool_grid", "must be > 0".into()),
            (o.d0 > 0, "objective.d0", "must be > 0".into()),
            (
                o.sparse_nonzeros > 0 && o.sparse_nonzeros <= o.d0,
                "objective.sparse_nonzeros",
                "must be in 1..=d0".into(),
            ),
            (o.tau > 0.0, "objective.tau", "must be > 0".into()),
            (o.beta >= 0.0, "objective.beta", "must be >= 0".into()),
            (
                (0.0..1.0).contains(&o.dropout),
                "objective.dropout",
                "must be in [0, 1)".into(),
            ),
            (
                (0.0..1.0).contains(&o.label_smoothing),
                "objective.label_smoothing",
                "must be in [0, 1)".into(),
            ),
            (
                self.optim.lr > 0.0 && self.optim.lr.is_finite(),
                "optim.lr",
                "must be a finite number > 0".into(),
            ),
        ];
        for (ok, key, why) in checks {
            if !ok {
                bail!("config key `{key}` {why}");
            }
        }
        if self.train.epochs == 0 {
            bail!("config key `train.epochs` must be > 0");
        }
        if self.train.pipeline != Pipeline::None && self.train.method == Method::Bp {
            bail!(
                "config key `train.pipeline` = \"{}\" needs method sll or local (bp's backward pass crosses every block)",
                self.train.pipeline
            );
        }
        if !self.train.stage_devices.is_empty() && self.train.pipeline != Pipeline::Threads {
            bail!("config key `train.stage_devices` needs `train.pipeline` = \"threads\"");
        }
        for name in &self.train.stage_devices {
            crate::device::parse(name).map_err(|e| anyhow!("config key `train.stage_devices`: {e:#}"))?;
        }
        if self.train.replicas == 0 {
            bail!("config key `train.replicas` must be >= 1");
        }
        if self.train.replicas > 1 && self.train.pipeline != Pipeline::Mpi {
            bail!(
                "config key `train.replicas` = {} needs `train.pipeline` = \"mpi\" (replicas are MPI ranks)",
                self.train.replicas
            );
        }
        if self.optim.warmup_epochs < 0.0 {
            bail!("config key `optim.warmup_epochs` must be >= 0");
        }
        crate::device::parse(&self.train.device).map_err(|e| anyhow!("config key `train.device`: {e:#}"))?;
        self.validate_values()?;
        Ok(())
    }

    /// The bounds of every numeric setting and what the dataset's image shape implies,
    /// checked after [`Config::validate`]'s basic rules: values finite, upper bounds
    /// that keep any value a user can type from allocating without end or running
    /// forever, and settings that would otherwise be ignored or fail only mid-run.
    fn validate_values(&self) -> Result<()> {
        let (d, m, o, p, t) = (&self.data, &self.model, &self.objective, &self.optim, &self.train);
        ensure(
            !self.preset.is_empty()
                && self.preset.chars().count() <= 100
                && !self
                    .preset
                    .chars()
                    .any(|c| c == '/' || c == '\\' || c.is_control()),
            "preset",
            || {
                format!(
                    "= {:?} must be a plain name of 1 to 100 characters without `/` (it names the run directory)",
                    self.preset
                )
            },
        )?;

        // Data.
        let known = crate::data::known_datasets();
        ensure(known.contains(&d.dataset.as_str()), "data.dataset", || {
            format!(
                "= {:?} is not a known dataset (known: {})",
                d.dataset,
                known.join(", ")
            )
        })?;
        ensure(!d.dir.trim().is_empty(), "data.dir", || {
            "must name a folder".into()
        })?;
        let imagefolder = d.dataset == "imagefolder";
        if imagefolder {
            ensure(d.image_size <= MAX_IMAGE_SIZE, "data.image_size", || {
                format!(
                    "= {} must be at most {MAX_IMAGE_SIZE} (0 = {})",
                    d.image_size,
                    crate::data::imagefolder::DEFAULT_IMAGE_SIZE
                )
            })?;
        }
        // (`objective.head = "projection"` against the classes is left to
        // `validate_for_classes`, once the data is loaded.)
        let (shape, _) = crate::data::example_shape(&d.dataset, d.image_size)?;
        let (channels, side) = (shape[0] as usize, shape[1] as usize);
        ensure(
            imagefolder || d.image_size == 0 || d.image_size == side,
            "data.image_size",
            || {
                format!(
                    "= {} applies only to dataset `imagefolder` ({} has {side}x{side} images; use 0)",
                    d.image_size, d.dataset
                )
            },
        )?;
        let threads = max_threads();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ensure(d.workers <= threads, "data.workers", || {
            format!(
                "= {} must be at most {threads} (4 per core, this machine has {cores}; at least {MIN_THREAD_BOUND})",
                d.workers
            )
        })?;
        for (value, key) in [
            (d.batch_size, "data.batch_size"),
            (d.eval_batch_size, "data.eval_batch_size"),
        ] {
            ensure(value <= MAX_BATCH, key, || {
                format!("= {value} must be at most {MAX_BATCH}")
            })?;
        }
        ensure(d.mean.iter().all(|v| v.is_finite()), "data.mean", || {
            "entries must be finite numbers".into()
        })?;
        ensure(d.std.iter().all(|v| v.is_finite()), "data.std", || {
            "entries must be finite numbers".into()
        })?;
        ensure(d.mean.is_empty() || d.mean.len() == channels, "data.mean", || {
            format!(
                "has {} entries but {} images have {channels} channel(s)",
                d.mean.len(),
                d.dataset
            )
        })?;
        // Augmentation: training images are stored at `stored` (imagefolder: 8/7 of the
        // test side) and cropped to `crop`, what the network sees in training.
        let a = &d.augment;
        let stored = if imagefolder {
            crate::data::imagefolder::train_size(side)
        } else {
            side
        };
        ensure(a.crop_padding <= stored, "data.augment.crop_padding", || {
            format!(
                "= {} must be at most the training images' side ({stored})",
                a.crop_padding
            )
        })?;
        let padded = stored + 2 * a.crop_padding;
        let crop = a.crop_size.unwrap_or(side);
        ensure((1..=padded).contains(&crop), "data.augment.crop_size", || {
            format!(
                "= {crop} must be in 1..={padded} (the {stored}x{stored} training images padded by {} pixels)",
                a.crop_padding
            )
        })?;
        ensure(
            crop == side || !["mlp", "vit"].contains(&m.kind.as_str()),
            "data.augment.crop_size",
            || {
                format!(
                    "= {crop} must equal the test images' side ({side}): model.kind = \"{}\" takes inputs of one size",
                    m.kind
                )
            },
        )?;
        ensure(a.cutout <= crop, "data.augment.cutout", || {
            format!("= {} must be at most the crop's side ({crop})", a.cutout)
        })?;

        // Model.
        ensure(m.hidden.len() <= MAX_LAYERS, "model.hidden", || {
            format!("has {} layers; at most {MAX_LAYERS}", m.hidden.len())
        })?;
        ensure(m.hidden.iter().all(|&w| w <= MAX_WIDTH), "model.hidden", || {
            format!("widths must be at most {MAX_WIDTH}")
        })?;
        ensure(m.channels.len() <= MAX_LAYERS, "model.channels", || {
            format!("has {} stages; at most {MAX_LAYERS}", m.channels.len())
        })?;
        ensure(
            m.channels.iter().all(|&c| c <= MAX_CHANNELS),
            "model.channels",
            || format!("channel counts must be at most {MAX_CHANNELS}"),
        )?;
        let residual_blocks = m.stages.iter().fold(0usize, |a, &s| a.saturating_add(s));
        ensure(
            m.kind != "resnet" || residual_blocks <= MAX_LAYERS,
            "model.stages",
            || format!("holds {residual_blocks} residual blocks; at most {MAX_LAYERS}"),
        )?;
        let smallest = side.min(crop);
        if m.kind == "cnn" {
            let stages = m.channels.len();
            ensure(
                m.pool_after.iter().all(|s| (1..=stages).contains(s)),
                "model.pool_after",
                || format!("entries must be conv stages, 1..={stages} (1-based)"),
            )?;
            let mut pools = m.pool_after.clone();
            pools.sort_unstable();
            pools.dedup();
            let left = smallest.checked_shr(pools.len() as u32).unwrap_or(0);
            ensure(left >= 1, "model.pool_after", || {
                format!(
                    "halves the {smallest}x{smallest} inputs {} times, to nothing; at most {} max-pools fit",
                    pools.len(),
                    smallest.ilog2()
                )
            })?;
        }
        ensure(
            m.kind == "mlp" || m.pool_grid as u64 <= side as u64,
            "model.pool_grid",
            || format!("= {} must be at most the images' side ({side})", m.pool_grid),
        )?;
        if m.kind == "vit" {
            ensure(m.width <= MAX_CHANNELS, "model.width", || {
                format!("= {} must be at most {MAX_CHANNELS}", m.width)
            })?;
            ensure(m.depth <= MAX_LAYERS, "model.depth", || {
                format!("= {} must be at most {MAX_LAYERS}", m.depth)
            })?;
            ensure(
                m.mlp_ratio.is_finite()
                    && m.mlp_ratio <= MAX_MLP_RATIO
                    && (m.width as f64 * m.mlp_ratio).round() >= 1.0,
                "model.mlp_ratio",
                || {
                    format!(
                        "= {} must be a finite number in (0, {MAX_MLP_RATIO}] giving the MLP at least one unit",
                        m.mlp_ratio
                    )
                },
            )?;
            let patch = m.patch_size as u64;
            ensure(
                patch <= side as u64 && (side as u64).is_multiple_of(patch),
                "model.patch_size",
                || format!("= {} does not divide the {side}x{side} images", m.patch_size),
            )?;
        }
        let (layers, unit) = match m.kind.as_str() {
            "cnn" => (m.channels.len(), "conv stages"),
            "resnet" => (residual_blocks, "residual blocks"),
            "vit" => (m.depth, "transformer blocks"),
            _ => (m.hidden.len(), "layers"),
        };
        ensure(m.block_size <= layers, "model.block_size", || {
            format!("= {} exceeds the model's {layers} {unit}", m.block_size)
        })?;
        ensure(m.modules == 0 || m.kind == "resnet", "model.modules", || {
            format!(
                "= {} applies to ResNets only (use model.block_size for a {})",
                m.modules, m.kind
            )
        })?;
        ensure(m.modules <= layers + 1, "model.modules", || {
            format!(
                "= {} exceeds the model's {} units (the stem and {layers} {unit})",
                m.modules,
                layers + 1
            )
        })?;

        // Objective.
        ensure(o.d0 <= MAX_WIDTH, "objective.d0", || {
            format!("= {} must be at most {MAX_WIDTH}", o.d0)
        })?;
        ensure(o.tau.is_finite(), "objective.tau", || {
            "must be a finite number > 0".into()
        })?;
        ensure(o.beta.is_finite(), "objective.beta", || {
            "must be a finite number >= 0".into()
        })?;
        ensure(
            o.head_hidden >= 1 && o.head_hidden <= MAX_WIDTH,
            "objective.head_hidden",
            || format!("= {} must be in [1, {MAX_WIDTH}]", o.head_hidden),
        )?;
        ensure(
            o.predsim_beta.is_finite() && (0.0..=1.0).contains(&o.predsim_beta),
            "objective.predsim_beta",
            || format!("= {} must be in [0, 1]", o.predsim_beta),
        )?;
        for (key, weights) in [
            ("objective.infopro_prediction", o.infopro_prediction),
            ("objective.infopro_reconstruction", o.infopro_reconstruction),
        ] {
            ensure(weights.iter().all(|w| w.is_finite() && *w >= 0.0), key, || {
                format!("= {weights:?} must be two finite weights >= 0 (first module, module K-1)")
            })?;
        }

        // Optimizer.
        ensure(
            p.weight_decay.is_finite() && p.weight_decay >= 0.0,
            "optim.weight_decay",
            || "must be a finite number >= 0".into(),
        )?;
        ensure((0.0..1.0).contains(&p.momentum), "optim.momentum", || {
            "must be in [0, 1)".into()
        })?;
        ensure(
            p.min_lr.is_finite() && p.min_lr >= 0.0 && p.min_lr <= p.lr,
            "optim.min_lr",
            || format!("= {} must be in [0, optim.lr = {}]", p.min_lr, p.lr),
        )?;
        ensure(
            p.warmup_epochs.is_finite() && p.warmup_epochs >= 0.0,
            "optim.warmup_epochs",
            || "must be a finite number >= 0".into(),
        )?;
        ensure(
            p.schedule != Schedule::Cosine || p.warmup_epochs <= t.epochs as f64,
            "optim.warmup_epochs",
            || {
                format!(
                    "= {} is longer than the run ({} epochs): the learning rate would never reach optim.lr",
                    p.warmup_epochs, t.epochs
                )
            },
        )?;

        // Training.
        ensure(
            t.divergence_factor.is_finite() && (t.divergence_factor == 0.0 || t.divergence_factor > 1.0),
            "train.divergence_factor",
            || format!("= {} must be 0 (off) or a finite number > 1", t.divergence_factor),
        )?;
        ensure(t.epochs <= MAX_EPOCHS, "train.epochs", || {
            format!("= {} must be at most {MAX_EPOCHS}", t.epochs)
        })?;
        ensure(t.threads <= threads, "train.threads", || {
            format!(
                "= {} must be at most {threads} (4 per core, this machine has {cores}; at least {MIN_THREAD_BOUND}; 0 = libtorch's default)",
                t.threads
            )
        })?;
        ensure(
            t.stages == 0 || t.pipeline != Pipeline::None,
            "train.stages",
            || {
                format!(
                "= {} needs `train.pipeline` = \"threads\" or \"mpi\" (without a pipeline the blocks train one after another)",
                t.stages
            )
            },
        )?;
        Ok(())
    }

    /// Checks what depends on the dataset (known only once it is loaded).
    pub fn validate_for_classes(&self, classes: i64) -> Result<()> {
        if self.objective.head == HeadKind::Projection && self.objective.d0 != classes {
            bail!(
                "config key `objective.head` = \"projection\" needs `objective.d0` = number of classes ({classes}), got {}",
                self.objective.d0
            );
        }
        Ok(())
    }

    /// The config as TOML text (what `config.toml` of a run holds).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a Config always serialises")
    }
}

/// Most layers (MLP layers, conv stages, residual blocks, transformer blocks) a model
/// may have.
pub const MAX_LAYERS: usize = 10_000;
/// Widest MLP layer, and the largest `objective.d0`.
pub const MAX_WIDTH: i64 = 1 << 20;
/// Most channels of a conv stage, and the widest ViT token.
pub const MAX_CHANNELS: i64 = 1 << 16;
/// Largest training or evaluation minibatch.
pub const MAX_BATCH: usize = 1 << 20;
/// Largest `data.image_size` of an image folder.
pub const MAX_IMAGE_SIZE: usize = 1024;
/// Most epochs of a run.
pub const MAX_EPOCHS: usize = 100_000;
/// Largest `model.mlp_ratio` of a ViT.
pub const MAX_MLP_RATIO: f64 = 64.0;
/// The thread bound [`max_threads`] never goes below.
const MIN_THREAD_BOUND: usize = 8;

/// Most threads `train.threads` or `data.workers` (and the benchmarks' `--threads`)
/// may ask for: 4 per core of this machine, and at least 8, so that a preset sized for
/// a bigger machine still loads on a small one.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(4).max(MIN_THREAD_BOUND)
}

/// `Ok` if `ok`, else the error "config key `key` <why>".
fn ensure(ok: bool, key: &str, why: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        bail!("config key `{key}` {}", why())
    }
}

/// The text of a shipped preset.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|p| p.0 == name).map(|p| p.1)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Applies one `section.key=value` override to a TOML table.
fn apply_set(root: &mut toml::Value, set: &str) -> Result<()> {
    let (key, raw) = set
        .split_once('=')
        .ok_or_else(|| anyhow!("--set {set}: expected section.key=value"))?;
    let key = key.trim();
    let raw = raw.trim();
    // A TOML value if it parses as one (numbers, booleans, arrays, quoted strings), else a bare string.
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts
        .pop()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| anyhow!("--set {set}: empty key"))?;
    let mut table = root
        .as_table_mut()
        .ok_or_else(|| anyhow!("config root is not a table"))?;
    for part in parts {
        table = table
            .entry(part)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| anyhow!("--set {set}: `{part}` is not a section"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_and_validate() {
        for (name, _) in PRESETS {
            Config::load(Some(name), &[]).unwrap();
        }
    }

    #[test]
    fn set_overrides_values() {
        let c = Config::load(None, &["objective.d0=64".into(), "train.method=bp".into()]).unwrap();
        assert_eq!(c.objective.d0, 64);
        assert_eq!(c.train.method, Method::Bp);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::load(None, &["objective.dzero=3".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("objective"), "{e:#}");
        assert!(format!("{e:#}").contains("dzero"), "{e:#}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::load(None, &["objective.d0=\"big\"".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("objective.d0"), "{e:#}");
        let e = Config::load(None, &["objective.tau=0".into()]).unwrap_err();
        assert!(format!("{e:#}").contains("objective.tau"), "{e:#}");
    }

    #[test]
    fn projection_head_needs_d0_equal_classes() {
        let c = Config::load(None, &["objective.head=projection".into()]).unwrap();
        let e = c.validate_for_classes(10).unwrap_err();
        assert!(format!("{e:#}").contains("objective.d0"), "{e:#}");
        let c = Config::load(
            None,
            &["objective.head=projection".into(), "objective.d0=10".into()],
        )
        .unwrap();
        c.validate_for_classes(10).unwrap();
    }

    #[test]
    fn local_and_bp_record_no_divergence_and_still_round_trip() {
        for method in ["local", "bp"] {
            let c = Config::load(
                None,
                &[format!("train.method={method}"), "objective.beta=2".into()],
            )
            .unwrap();
            assert_eq!((c.objective.beta, c.objective.prior), (0.0, Prior::None));
            assert_eq!(Config::from_toml(&c.to_toml(), "x").unwrap(), c);
        }
        let sll = Config::load(None, &[]).unwrap();
        assert_eq!((sll.objective.beta, sll.objective.prior), (1.0, Prior::Previous));
    }

    #[test]
    fn out_of_range_values_are_named() {
        let cases = [
            ("optim.lr=nan", "optim.lr"),
            ("optim.weight_decay=-1", "optim.weight_decay"),
            ("optim.momentum=1", "optim.momentum"),
            ("optim.min_lr=1", "optim.min_lr"),
            ("optim.warmup_epochs=100", "optim.warmup_epochs"),
            ("objective.tau=inf", "objective.tau"),
            ("objective.beta=inf", "objective.beta"),
            ("objective.d0=1000000000", "objective.d0"),
            ("model.hidden=[100000000]", "model.hidden"),
            ("model.block_size=4", "model.block_size"),
            ("data.workers=100000", "data.workers"),
            ("data.batch_size=99999999999", "data.batch_size"),
            ("data.mean=[nan]", "data.mean"),
            ("data.augment.crop_size=20", "data.augment.crop_size"),
            ("data.image_size=64", "data.image_size"),
            ("data.dataset=\"imagenet\"", "data.dataset"),
            ("train.threads=100000", "train.threads"),
            ("train.stages=2", "train.stages"),
            ("train.epochs=99999999999", "train.epochs"),
            ("preset=\"a/b\"", "preset"),
        ];
        for (set, key) in cases {
            let mut sets = vec![set.to_string()];
            if set.starts_with("data.mean") {
                sets.push("data.std=[1]".into());
            }
            let e = format!("{:#}", Config::load(None, &sets).unwrap_err());
            assert!(e.starts_with(&format!("config key `{key}`")), "{set}: {e}");
        }
        let e = format!(
            "{:#}",
            Config::load(
                None,
                &["model.kind=\"cnn\"".into(), "model.pool_after=[9]".into()]
            )
            .unwrap_err()
        );
        assert!(e.contains("model.pool_after"), "{e}");
    }

    #[test]
    fn resolved_config_round_trips() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(Config::from_toml(&c.to_toml(), "x").unwrap(), c);
    }
}
