//! The pieces of SLL's divergence term (docs/method.md, "Definitions"): the
//! multiplicative dropout m_i, the categorical posterior
//! q_i = softmax(R_i (m_i ⊙ u_i) / τ), the Bhattacharyya distance
//! D_B(p, q) = −log Σ_c √(p_c q_c) and the label prior t_y. The fixed projections R_i
//! are in [`crate::projection`] (re-exported here); `rules::sll` puts the pieces
//! together into the local loss
//!
//! ```text
//! L_i = CE(head_i(h_i), y) + β · D_B(q_i, sg(q_{i-1})),   u_i = pool(h_i)
//! ```

pub use crate::projection::{projection_seed, Projection, PROTOTYPE_SEED_INDEX};

use crate::kernels;
use crate::projection::gaussian_matrix;
use std::sync::atomic::{AtomicU64, Ordering};
use tch::{Device, Kind, Tensor};

/// Multiplicative (inverted) dropout m ⊙ u, m ~ Bernoulli(1−p)/(1−p); identity when
/// not training or p = 0.
pub fn multiplicative_dropout(u: &Tensor, p: f64, train: bool) -> Tensor {
    if train && p > 0.0 {
        u.dropout(p, true)
    } else {
        u.shallow_clone()
    }
}

/// Multiplicative dropout of rate p with its own seeded stream of masks (so runs are
/// reproducible and the mask costs little: see `kernels::MaskSpec`): the t-th mask
/// drawn in training is a function of (seed, t) alone, whichever path draws it.
#[derive(Debug)]
pub struct Dropout {
    /// Drop probability.
    pub p: f64,
    seed: u64,
    /// Masks drawn so far.
    step: AtomicU64,
}

impl Dropout {
    /// Dropout of rate `p`, masks drawn from `seed`.
    pub fn new(p: f64, seed: u64) -> Self {
        Self {
            p,
            seed: seed ^ DROPOUT_SEED_SALT,
            step: AtomicU64::new(0),
        }
    }

    /// m ⊙ u in training (identity otherwise or when p = 0).
    pub fn apply(&self, u: &Tensor, train: bool) -> Tensor {
        match self.next_mask(train) {
            Some(_) if u.device() != Device::Cpu => multiplicative_dropout(u, self.p, train),
            Some(spec) => u * spec.mask(&u.size()).to_kind(u.kind()),
            None => u.shallow_clone(),
        }
    }

    /// The stream's seed (salted: what identifies the stream).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Masks drawn so far (where the stream continues: saved by a resumable checkpoint).
    pub fn position(&self) -> u64 {
        self.step.load(Ordering::Relaxed)
    }

    /// Continues the stream at `position` (a resumed run).
    pub fn set_position(&self, position: u64) {
        self.step.store(position, Ordering::Relaxed);
    }

    /// The next mask of the stream (advancing it), or `None` when dropout is off.
    pub fn next_mask(&self, train: bool) -> Option<kernels::MaskSpec> {
        (train && self.p > 0.0).then(|| kernels::MaskSpec {
            p: self.p,
            seed: self.seed,
            step: self.step.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// Separates a block's dropout stream from its projection's seed.
const DROPOUT_SEED_SALT: u64 = 0xD50F_5EED_0000_0001;

/// z = R(m ⊙ u): the projection of u after multiplicative dropout.
pub fn project(projection: &Projection, u: &Tensor, dropout: &Dropout, train: bool) -> Tensor {
    projection.apply(&dropout.apply(u, train))
}

/// log q = log softmax(z / τ) for projected features z = R(m ⊙ u): the categorical
/// posterior over d0 categories, kept in log space.
pub fn log_posterior(z: &Tensor, tau: f64) -> Tensor {
    (z / tau).log_softmax(-1, Kind::Float)
}

/// log q = log softmax(R(m ⊙ u)/τ) without gradient (the input's q_0): one fused
/// pass on the CPU (`kernels::fused_posterior`), [`project`] and [`log_posterior`]
/// elsewhere.
pub fn posterior(projection: &Projection, u: &Tensor, dropout: &Dropout, tau: f64, train: bool) -> Tensor {
    if u.device() == Device::Cpu && projection.on_cpu() {
        let mask = dropout.next_mask(train);
        kernels::fused_posterior(u, projection.fused(), mask, tau).to_kind(u.kind())
    } else {
        tch::no_grad(|| log_posterior(&project(projection, u, dropout, train), tau))
    }
}

/// Bhattacharyya distance D_B(p, q) = −log Σ_c √(p_c q_c), averaged over the batch.
///
/// Computed from log-probabilities as −logsumexp(½(log p + log q)) for numerical
/// safety. D_B ∈ [0, ∞); 0 iff p = q; it lower-bounds KL: KL(p‖q) ≥ 2·D_B(p, q).
pub fn bhattacharyya_distance(log_p: &Tensor, log_q: &Tensor) -> Tensor {
    -((log_p + log_q) * 0.5).logsumexp([-1], false).mean(None::<Kind>)
}

/// Label targets t_y for `prior = label`, as log-probabilities, one row per class ([K, d0]).
///
/// d0 = K: the one-hot label smoothed by ε. d0 ≠ K: softmax(P e_y / τ) with a fixed
/// seeded prototype matrix P ∈ ℝ^{d0×K}, entries N(0, 1).
pub fn label_targets(classes: i64, d0: i64, tau: f64, smoothing: f64, seed: u64, device: Device) -> Tensor {
    if d0 == classes {
        let off = smoothing / classes as f64;
        let t = Tensor::full([classes, classes], off, (Kind::Float, device))
            + Tensor::eye(classes, (Kind::Float, device)) * (1.0 - smoothing);
        t.log()
    } else {
        let prototypes = gaussian_matrix(classes, d0, 1.0, seed, device);
        log_posterior(&prototypes, tau)
    }
}

#[cfg(test)]
mod tests;
