//! Fast paths for the parts of the SLL objective that libtorch does slowly
//! (measured with `sll bench step`, figures in the README's Speed section):
//!
//! - [`bernoulli_mask`]: the dropout mask m/(1−p). libtorch's `bernoulli_` costs
//!   ~1.2 ms for a 128×1024 mask on 2 cores, as much as the projection's matrix
//!   product; a xoshiro256++ stream cut into 16-bit draws costs a fraction of that.
//! - [`bhattacharyya_fused`]: log q = log softmax(z/τ), D_B(q, p) and its gradient
//!   ∂D_B/∂z in closed form, instead of autograd through log-softmax, logsumexp and
//!   mean. With w = softmax(½(log q + log p)) (so that D_B = −log Σ_c √(q_c p_c)),
//!   the gradient is ∂D_B/∂z = (q − w) / (2τ) per example (divided by N for the mean).
//! - [`SparseTable`]: the sparse projection R u and R^T g as scatter/gather loops over
//!   rows, in place of libtorch's index_add, which is slower than the dense product.
//!
//! Each is checked against the reference formulas of `objective.rs` in the tests below.

use rand::RngCore;
use rand_xoshiro::Xoshiro256PlusPlus;
use tch::{Device, Kind, Tensor};

/// A mask of `shape` whose entries are 1/(1−p) with probability 1−p and 0 otherwise
/// (p quantised to 1/65536), drawn from `rng`.
pub fn bernoulli_mask(shape: &[i64], p: f64, rng: &mut Xoshiro256PlusPlus) -> Tensor {
    let n: i64 = shape.iter().product();
    let threshold = (p * 65536.0).round() as u64;
    let keep = (1.0 / (1.0 - p)) as f32;
    let mut values = Vec::with_capacity(n as usize);
    while values.len() < n as usize {
        let mut bits = rng.next_u64();
        for _ in 0..4 {
            values.push(if bits & 0xFFFF >= threshold { keep } else { 0.0 });
            bits >>= 16;
        }
    }
    values.truncate(n as usize);
    Tensor::from_slice(&values).reshape(shape)
}

/// A sparse projection as plain vectors: for input coordinate j, its k categories
/// `buckets[s·dim + j]` and signed values `values[s·dim + j]`, s in 0..k.
#[derive(Debug, Clone)]
pub struct SparseTable {
    dim: usize,
    d0: usize,
    buckets: Vec<usize>,
    values: Vec<f32>,
}

impl SparseTable {
    /// The table of a sparse projection of `dim` inputs onto `d0` categories.
    pub fn new(dim: usize, d0: usize, buckets: &[i64], values: &[f32]) -> Self {
        Self {
            dim,
            d0,
            buckets: buckets.iter().map(|&b| b as usize).collect(),
            values: values.to_vec(),
        }
    }

    /// The k (buckets, values) slices.
    fn slices(&self) -> impl Iterator<Item = (&[usize], &[f32])> {
        self.buckets.chunks(self.dim).zip(self.values.chunks(self.dim))
    }

    /// z = R u for u [N, dim] (f32, CPU) → [N, d0].
    pub fn forward(&self, u: &Tensor) -> Tensor {
        map_rows(u, self.d0, |row, out| {
            out.fill(0.0);
            for (b, v) in self.slices() {
                for j in 0..self.dim {
                    out[b[j]] += v[j] * row[j];
                }
            }
        })
    }

    /// R^T g for g [N, d0] (f32, CPU) → [N, dim].
    pub fn transpose(&self, g: &Tensor) -> Tensor {
        map_rows(g, self.dim, |row, out| {
            out.fill(0.0);
            for (b, v) in self.slices() {
                for j in 0..self.dim {
                    out[j] += v[j] * row[b[j]];
                }
            }
        })
    }
}

/// How many threads our own kernels split their work over: libtorch's intra-op threads.
pub fn kernel_threads() -> usize {
    tch::get_num_threads().max(1) as usize
}

/// Runs `work` on every share: the first on this thread, each other on a scoped thread.
pub fn run_shares<T: Send>(shares: impl IntoIterator<Item = T>, work: impl Fn(T) + Sync) {
    let mut shares = shares.into_iter();
    let first = shares.next();
    let work = &work;
    std::thread::scope(|scope| {
        for share in shares {
            scope.spawn(move || work(share));
        }
        if let Some(share) = first {
            work(share);
        }
    });
}

/// Applies `f(input row, output row)` to every row of a 2-D f32 CPU tensor, rows split
/// over the intra-op threads; the output has `out_len` columns.
fn map_rows<F>(input: &Tensor, out_len: usize, f: F) -> Tensor
where
    F: Fn(&[f32], &mut [f32]) + Sync,
{
    let input = input.detach().contiguous().to_kind(Kind::Float);
    let (n, in_len) = (input.size()[0] as usize, input.size()[1] as usize);
    let output = Tensor::empty([n as i64, out_len as i64], (Kind::Float, Device::Cpu));
    // SAFETY: both tensors are contiguous f32 CPU tensors of the stated sizes, alive for
    // this scope; the output is fresh and each thread writes its own rows.
    let (xs, ys) = unsafe {
        (
            std::slice::from_raw_parts(input.data_ptr() as *const f32, n * in_len),
            std::slice::from_raw_parts_mut(output.data_ptr() as *mut f32, n * out_len),
        )
    };
    let rows_per = n.div_ceil(kernel_threads().min(n.max(1))).max(1);
    let parts = xs
        .chunks(rows_per * in_len)
        .zip(ys.chunks_mut(rows_per * out_len));
    run_shares(parts, |(x, y)| {
        x.chunks(in_len)
            .zip(y.chunks_mut(out_len))
            .for_each(|(a, b)| f(a, b));
    });
    output
}

/// What [`bhattacharyya_fused`] returns.
pub struct FusedDivergence {
    /// D_B(q, p) averaged over the batch (a scalar, no graph).
    pub distance: Tensor,
    /// log q = log softmax(z/τ) ([N, d0], no graph).
    pub log_q: Tensor,
    /// ∂ distance / ∂z ([N, d0]).
    pub grad_z: Tensor,
}

/// log-softmax + Bhattacharyya distance + its gradient for projected logits z and a
/// (fixed) prior log p, both [N, d0], without autograd: nine vectorised tensor
/// operations in place of autograd's forward and backward through log-softmax,
/// logsumexp and mean, on any device.
pub fn bhattacharyya_fused(z: &Tensor, log_prior: &Tensor, tau: f64) -> FusedDivergence {
    tch::no_grad(|| {
        let n = z.size()[0].max(1) as f64;
        let log_q = (z / tau).log_softmax(-1, Kind::Float);
        let s = (&log_q + log_prior) * 0.5;
        let log_bc = s.logsumexp([-1], true);
        let w = (s - &log_bc).exp();
        let grad_z = (log_q.exp() - w) * (1.0 / (2.0 * tau * n));
        let distance = -log_bc.mean(Kind::Float);
        FusedDivergence {
            distance,
            log_q,
            grad_z,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objective::{bhattacharyya_distance, log_posterior};
    use rand::SeedableRng;

    #[test]
    fn mask_has_the_right_rate_scale_and_is_seeded() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let m = bernoulli_mask(&[300, 501], 0.1, &mut rng);
        let dropped = m.eq(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!((dropped - 0.1).abs() < 0.005, "{dropped}");
        assert!((m.max().double_value(&[]) - 1.0 / 0.9).abs() < 1e-6);
        let again = bernoulli_mask(&[300, 501], 0.1, &mut Xoshiro256PlusPlus::seed_from_u64(1));
        assert!(m.equal(&again));
    }

    #[test]
    fn sparse_table_is_the_projection_and_its_transpose() {
        let r = crate::objective::Projection::sparse(50, 16, 3, 2, Device::Cpu);
        let m = r.matrix();
        let u = Tensor::randn([7, 50], (Kind::Float, Device::Cpu));
        let g = Tensor::randn([7, 16], (Kind::Float, Device::Cpu));
        assert!(r
            .apply_no_grad(&u)
            .allclose(&u.matmul(&m.tr()), 1e-5, 1e-5, false));
        assert!(r.transpose_no_grad(&g).allclose(&g.matmul(&m), 1e-5, 1e-5, false));
    }

    #[test]
    fn fused_divergence_matches_autograd() {
        tch::manual_seed(4);
        for tau in [1.0, 0.5] {
            let z = (Tensor::randn([37, 64], (Kind::Float, Device::Cpu)) * 3.0).set_requires_grad(true);
            let log_p = Tensor::randn([37, 64], (Kind::Float, Device::Cpu)).log_softmax(-1, Kind::Float);
            let reference = bhattacharyya_distance(&log_posterior(&z, tau), &log_p);
            reference.backward();
            let fused = bhattacharyya_fused(&z, &log_p, tau);
            let close = |a: &Tensor, b: &Tensor| a.allclose(b, 1e-4, 1e-6, false);
            assert!(
                close(&fused.distance, &reference.detach()),
                "{} vs {}",
                fused.distance,
                reference
            );
            assert!(close(&fused.log_q, &log_posterior(&z.detach(), tau)));
            assert!(close(&fused.grad_z, &z.grad()), "gradients differ");
        }
    }
}
