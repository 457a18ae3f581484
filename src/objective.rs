//! The SLL local objective of one block (docs/method.md, "The local objective of block i"):
//!
//! ```text
//! L_i = CE(head_i(u_i), y) + β · D_B(q_i, sg(q_{i-1})),   q_i = softmax(R_i (m_i ⊙ u_i) / τ)
//! ```
//!
//! Each piece is a short function below: the fixed projection R_i, the multiplicative
//! dropout m_i, the categorical posterior q_i, the Bhattacharyya distance D_B, the
//! label prior t_y, and [`BlockObjective::loss`] that puts them together. Nothing
//! here knows what a block contains: it sees only the pooled output u_i.

use crate::config::{HeadKind, ObjectiveConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::{nn, nn::Module, Device, Kind, Tensor};

/// Seed of block `index`'s projection (index 0 is the input's), from the run seed.
///
/// A SplitMix64 finaliser over (seed, index): independent, well-spread seeds per block.
pub fn projection_seed(run_seed: u64, index: usize) -> u64 {
    let mut z = run_seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index as u64 + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Index used for the seed of the label prototypes P (after every block's index).
pub const PROTOTYPE_SEED_INDEX: usize = 1_000_000;

/// A matrix of i.i.d. N(0, std²) entries drawn from ChaCha8 with `seed`: the same on
/// every machine and device, independent of libtorch's generator.
fn gaussian_matrix(rows: i64, cols: i64, std: f64, seed: u64, device: Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, std as f32).expect("std > 0");
    let values: Vec<f32> = (0..rows * cols).map(|_| normal.sample(&mut rng)).collect();
    Tensor::from_slice(&values)
        .reshape([rows, cols])
        .to_device(device)
}

/// The fixed random projection R ∈ ℝ^{d0 × dim(u)}, entries N(0, 1/d0), never trained.
///
/// Stored transposed (dim(u) × d0) so that `u R^T` is one matrix product.
#[derive(Debug)]
pub struct Projection {
    /// Seed the matrix was drawn from (recorded in checkpoints).
    pub seed: u64,
    matrix_t: Tensor,
}

impl Projection {
    /// Draws R for inputs of `in_dim` features onto `d0` categories.
    pub fn gaussian(in_dim: i64, d0: i64, seed: u64, device: Device) -> Self {
        let matrix_t = gaussian_matrix(in_dim, d0, (1.0 / d0 as f64).sqrt(), seed, device);
        Self { seed, matrix_t }
    }

    /// R u for a batch of pooled features u ([N, dim(u)] → [N, d0]).
    pub fn apply(&self, u: &Tensor) -> Tensor {
        u.matmul(&self.matrix_t)
    }

    /// R itself ([d0, dim(u)]).
    pub fn matrix(&self) -> Tensor {
        self.matrix_t.tr()
    }
}

/// Multiplicative (inverted) dropout m ⊙ u, m ~ Bernoulli(1−p)/(1−p); identity when
/// not training or p = 0.
pub fn multiplicative_dropout(u: &Tensor, p: f64, train: bool) -> Tensor {
    if train && p > 0.0 {
        u.dropout(p, true)
    } else {
        u.shallow_clone()
    }
}

/// z = R(m ⊙ u): the projection of u after multiplicative dropout of rate p.
pub fn project(projection: &Projection, u: &Tensor, p: f64, train: bool) -> Tensor {
    projection.apply(&multiplicative_dropout(u, p, train))
}

/// log q = log softmax(z / τ) for projected features z = R(m ⊙ u): the categorical
/// posterior over d0 categories, kept in log space.
pub fn log_posterior(z: &Tensor, tau: f64) -> Tensor {
    (z / tau).log_softmax(-1, Kind::Float)
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

/// The terms of one block's local loss, each a scalar tensor.
pub struct LocalLoss {
    /// CE(head(u), y) + β · D_B: what the block's optimizer minimises.
    pub total: Tensor,
    /// CE(head(u), y).
    pub prediction: Tensor,
    /// D_B(q_i, sg(prior)); zero when the divergence is off.
    pub divergence: Tensor,
}

/// Everything block i needs to turn its pooled output into its local loss: its head and
/// its fixed projection. Its trainable parameters live in the block's own var store.
#[derive(Debug)]
pub struct BlockObjective {
    config: ObjectiveConfig,
    head: Option<nn::Linear>,
    /// R_i (absent when neither the divergence nor a projection head needs it).
    pub projection: Option<Projection>,
}

impl BlockObjective {
    /// Builds the head under `path / "head"` and draws R_i from `projection_seed`.
    ///
    /// `with_head = false` gives a block with no local head (the inner blocks of `bp`).
    pub fn new(
        path: &nn::Path,
        config: &ObjectiveConfig,
        in_dim: i64,
        classes: i64,
        projection_seed: u64,
        with_head: bool,
    ) -> Self {
        let needs_projection = config.has_divergence() || config.head == HeadKind::Projection;
        let projection =
            needs_projection.then(|| Projection::gaussian(in_dim, config.d0, projection_seed, path.device()));
        let head = (with_head && config.head == HeadKind::Linear)
            .then(|| crate::model::linear(path / "head", in_dim, classes));
        Self {
            config: config.clone(),
            head,
            projection,
        }
    }

    /// Whether this block has a local classifier.
    pub fn has_head(&self) -> bool {
        self.head.is_some() || self.config.head == HeadKind::Projection
    }

    /// Logits of the local head on pooled features u (no dropout: inference).
    pub fn logits(&self, u: &Tensor) -> Tensor {
        match &self.head {
            Some(head) => head.forward(u),
            None => self.projected(u, false) / self.config.tau,
        }
    }

    fn projected(&self, u: &Tensor, train: bool) -> Tensor {
        let projection = self.projection.as_ref().expect("projection present");
        project(projection, u, self.config.dropout, train)
    }

    /// L_i for pooled features u, labels y and the (detached) prior: log q_{i-1} for
    /// `prior = previous`, log t_y for `prior = label`, ignored for `prior = none`.
    ///
    /// Returns the loss terms and log q_i (for the next block), if computed.
    pub fn loss(
        &self,
        u: &Tensor,
        y: &Tensor,
        log_prior: Option<&Tensor>,
        train: bool,
    ) -> (LocalLoss, Option<Tensor>) {
        let c = &self.config;
        let z = self.projection.as_ref().map(|_| self.projected(u, train));
        let logits = match (&self.head, &z) {
            (Some(head), _) => head.forward(u),
            (None, Some(z)) => z / c.tau,
            (None, None) => unreachable!("a projection head always has a projection"),
        };
        let prediction = logits.cross_entropy_for_logits(y);
        let log_q = z.as_ref().map(|z| log_posterior(z, c.tau));
        let divergence = match (&log_q, log_prior) {
            (Some(log_q), Some(log_prior)) if c.has_divergence() => {
                bhattacharyya_distance(log_q, &log_prior.detach())
            }
            _ => Tensor::zeros([], (Kind::Float, u.device())),
        };
        let total = &prediction + &divergence * c.beta;
        (
            LocalLoss {
                total,
                prediction,
                divergence,
            },
            log_q,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(v: &[f32]) -> Tensor {
        Tensor::from_slice(v).reshape([1, v.len() as i64])
    }

    fn db(p: &[f32], q: &[f32]) -> f64 {
        bhattacharyya_distance(&probs(p).log(), &probs(q).log()).double_value(&[])
    }

    #[test]
    fn bhattacharyya_hand_computed_values() {
        // Identical distributions: BC = 1, D_B = 0.
        assert!(db(&[0.2, 0.3, 0.5], &[0.2, 0.3, 0.5]).abs() < 1e-6);
        // Uniform against one-hot-ish: BC = √(0.25·0.97) + 3·√(0.25·0.01) = 0.49244 + 0.15 = 0.64244.
        let expected = -(0.25f64 * 0.97)
            .sqrt()
            .mul_add(1.0, 3.0 * (0.25f64 * 0.01).sqrt())
            .ln();
        assert!((db(&[0.25; 4], &[0.97, 0.01, 0.01, 0.01]) - expected).abs() < 1e-5);
        // Nearly disjoint: BC = 2·√(0.999·0.001) = 0.063213..., D_B = 2.7613...
        let expected = -(2.0 * (0.999f64 * 0.001).sqrt()).ln();
        assert!((db(&[0.999, 0.001], &[0.001, 0.999]) - expected).abs() < 1e-4);
        // Two uniforms of different support sizes do not exist here; check symmetry instead.
        let a = [0.1, 0.6, 0.3];
        let b = [0.5, 0.25, 0.25];
        assert!((db(&a, &b) - db(&b, &a)).abs() < 1e-7);
    }

    #[test]
    fn bhattacharyya_lower_bounds_kl() {
        let p = [0.1f64, 0.6, 0.3];
        let q = [0.5f64, 0.25, 0.25];
        let kl: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
        let d = db(&[0.1, 0.6, 0.3], &[0.5, 0.25, 0.25]);
        assert!(kl >= 2.0 * d, "KL {kl} < 2 D_B {d}");
    }

    #[test]
    fn bhattacharyya_gradient_matches_finite_differences() {
        let logits = Tensor::from_slice(&[0.3f64, -1.2, 0.8, 0.1, 2.0, -0.5]).reshape([2, 3]);
        let target = Tensor::from_slice(&[0.2f64, 0.5, 0.3, 0.6, 0.3, 0.1])
            .reshape([2, 3])
            .log();
        let f = |z: &Tensor| bhattacharyya_distance(&z.log_softmax(-1, Kind::Double), &target);
        let z = logits.copy().set_requires_grad(true);
        f(&z).backward();
        let grad = z.grad();
        let eps = 1e-6;
        for i in 0..2 {
            for j in 0..3 {
                let bump = |d: f64| {
                    let zz = logits.copy();
                    let _ = zz.get(i).get(j).fill_(logits.double_value(&[i, j]) + d);
                    f(&zz).double_value(&[])
                };
                let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps);
                let analytic = grad.double_value(&[i, j]);
                assert!(
                    (numeric - analytic).abs() < 1e-6,
                    "({i},{j}): {numeric} vs {analytic}"
                );
            }
        }
    }

    #[test]
    fn projection_is_deterministic_per_seed() {
        let a = Projection::gaussian(20, 8, projection_seed(7, 1), Device::Cpu).matrix();
        let b = Projection::gaussian(20, 8, projection_seed(7, 1), Device::Cpu).matrix();
        let c = Projection::gaussian(20, 8, projection_seed(7, 2), Device::Cpu).matrix();
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        assert_eq!(a.size(), vec![8, 20]);
    }

    #[test]
    fn projection_entries_have_variance_one_over_d0() {
        let r = Projection::gaussian(512, 256, 3, Device::Cpu).matrix();
        let var = r.var(true).double_value(&[]);
        assert!((var * 256.0 - 1.0).abs() < 0.02, "var·d0 = {}", var * 256.0);
        assert!(r.mean(Kind::Float).double_value(&[]).abs() < 1e-3);
    }

    #[test]
    fn dropout_is_inverted_bernoulli_and_off_in_eval() {
        tch::manual_seed(0);
        let u = Tensor::ones([200, 500], (Kind::Float, Device::Cpu));
        let d = multiplicative_dropout(&u, 0.2, true);
        let zeros = d.eq(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!((zeros - 0.2).abs() < 0.01, "drop rate {zeros}");
        let kept = d.max().double_value(&[]);
        assert!((kept - 1.25).abs() < 1e-6);
        assert!(multiplicative_dropout(&u, 0.2, false).equal(&u));
    }

    #[test]
    fn label_targets_are_distributions() {
        let t = label_targets(10, 10, 1.0, 0.1, 0, Device::Cpu).exp();
        assert!((t.double_value(&[3, 3]) - 0.91).abs() < 1e-6);
        assert!((t.double_value(&[3, 4]) - 0.01).abs() < 1e-6);
        let t = label_targets(10, 64, 1.0, 0.1, 0, Device::Cpu).exp();
        assert_eq!(t.size(), vec![10, 64]);
        let sums = t.sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
        assert!(sums.allclose(&Tensor::ones([10], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
    }
}
