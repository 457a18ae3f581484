//! The `[objective]` section: the local rules' settings (see docs/method.md).

use serde::{Deserialize, Serialize};

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
    /// The method's own head (resolved when the config is loaded): `pooled` for sll
    /// and predsim, `linear` for local and bp, `conv` for dgl, `infopro` for infopro.
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
    /// AugLocal's (Ma et al., ICLR 2024): a new stack of up to `objective.aux_depth`
    /// layers copying the widths of layers sampled uniformly from the network after
    /// the block (depth tapering toward the output by `objective.aux_taper`), global
    /// pooling, linear.
    Auglocal,
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
    /// Momentum heads (MAN): each module's head reads a learnable copy plus an EMA copy
    /// of the next module applied to the module's output.
    pub momentum_head: bool,
    /// Momentum m of the EMA copy: ema ← m·ema + (1 − m)·θ_next.
    pub head_momentum: f64,
    /// AugLocal head: layers d of the first module's auxiliary net.
    pub aux_depth: usize,
    /// AugLocal head: the taper γ of the auxiliary nets' depth toward the output
    /// (0 = every module gets d layers; 1 = down to 1 at module K−2).
    pub aux_taper: f64,
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
            momentum_head: false,
            head_momentum: 0.995,
            aux_depth: 3,
            aux_taper: 0.5,
        }
    }
}

impl ObjectiveConfig {
    /// Whether the divergence term (and hence the projection) is computed at all.
    pub fn has_divergence(&self) -> bool {
        self.beta > 0.0 && self.prior != Prior::None
    }
}
