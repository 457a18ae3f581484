//! The fixed random projections R_i of SLL's divergence term (docs/method.md,
//! "Definitions"): gaussian, sparse and srht, each drawn once from a seed derived from
//! the run seed and the block's index, never trained. [`Projection::apply`] is the
//! reference (autograd, any device); [`Projection::fused`] hands R to the CPU kernels
//! of `crate::kernels`.

use crate::config::{ObjectiveConfig, ProjectionKind};
use crate::kernels::{self, RowProjection};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::{Device, Kind, Tensor};

/// Seed of block `index`'s projection (index 0 is the input's), from the run seed.
///
/// A SplitMix64 finaliser (`kernels::mix`) over (seed, index): independent,
/// well-spread seeds per block.
pub fn projection_seed(run_seed: u64, index: usize) -> u64 {
    kernels::mix(run_seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(index as u64 + 1)))
}

/// Index used for the seed of the label prototypes P (after every block's index).
pub const PROTOTYPE_SEED_INDEX: usize = 1_000_000;

/// A matrix of i.i.d. N(0, std²) entries drawn from ChaCha8 with `seed`: the same on
/// every machine and device, independent of libtorch's generator.
pub(crate) fn gaussian_matrix(rows: i64, cols: i64, std: f64, seed: u64, device: Device) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, std as f32).expect("std > 0");
    let values: Vec<f32> = (0..rows * cols).map(|_| normal.sample(&mut rng)).collect();
    Tensor::from_slice(&values)
        .reshape([rows, cols])
        .to_device(device)
}

/// The fixed random projection R ∈ ℝ^{d0 × dim(u)}, never trained, drawn from a seed.
///
/// Three geometry-preserving (Johnson–Lindenstrauss) constructions, all with
/// E‖Ru‖² = ‖u‖²:
/// - `gaussian`: dense, entries N(0, 1/d0); `u R^T` is one matrix product, costing
///   2·d0·dim(u) FLOPs per example forward and again backward.
/// - `sparse`: each input coordinate goes to `k` of the d0 categories (one in each of
///   k equal slices of 0..d0) with random signs ±1/√k (a sparse JL transform, k = 1
///   is CountSketch); computed as an index-add, costing k·dim(u) additions per example.
/// - `srht`: a subsampled randomized Hadamard transform R = S H D / √d0 (random signs
///   D, Walsh–Hadamard H on u zero-padded to n = 2^⌈log2 max(dim(u), d0)⌉, d0 of its n
///   rows kept uniformly at random by S; entries ±1/√d0): n·log2(n) additions per
///   example (see `kernels::SrhtTable`).
#[derive(Debug)]
pub struct Projection {
    /// Seed the matrix was drawn from (recorded in checkpoints).
    pub seed: u64,
    kind: ProjectionMatrix,
}

#[derive(Debug)]
enum ProjectionMatrix {
    /// R^T, dim(u) × d0.
    Dense(Tensor),
    /// Category of each of the k·dim(u) nonzeros ([k·dim]) and its signed value ([k·dim, 1]),
    /// also kept as plain vectors for the CPU kernels.
    Sparse {
        d0: i64,
        k: i64,
        buckets: Tensor,
        values: Tensor,
        table: kernels::SparseTable,
    },
    /// The SRHT as its CPU kernel, and R^T ([dim, d0]) dense for autograd and other
    /// devices.
    Srht {
        table: kernels::SrhtTable,
        matrix_t: Tensor,
    },
}

impl Projection {
    /// Draws R for inputs of `in_dim` features onto `d0` categories, entries N(0, 1/d0).
    pub fn gaussian(in_dim: i64, d0: i64, seed: u64, device: Device) -> Self {
        let matrix_t = gaussian_matrix(in_dim, d0, (1.0 / d0 as f64).sqrt(), seed, device);
        Self {
            seed,
            kind: ProjectionMatrix::Dense(matrix_t),
        }
    }

    /// Draws a sparse R with `k` nonzeros ±1/√k per input coordinate (k ≤ d0).
    pub fn sparse(in_dim: i64, d0: i64, k: i64, seed: u64, device: Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let k = k.clamp(1, d0);
        let (mut buckets, mut values) = (vec![], vec![]);
        let value = 1.0 / (k as f32).sqrt();
        for slice in 0..k {
            let (lo, hi) = (slice * d0 / k, (slice + 1) * d0 / k);
            for _ in 0..in_dim {
                buckets.push(rng.random_range(lo..hi));
                values.push(if rng.random::<bool>() { value } else { -value });
            }
        }
        let table = kernels::SparseTable::new(in_dim as usize, d0 as usize, &buckets, &values);
        let buckets = Tensor::from_slice(&buckets).to_device(device);
        let values = Tensor::from_slice(&values)
            .reshape([k * in_dim, 1])
            .to_device(device);
        Self {
            seed,
            kind: ProjectionMatrix::Sparse {
                d0,
                k,
                buckets,
                values,
                table,
            },
        }
    }

    /// Draws an SRHT R = S H D / √d0 of `in_dim` inputs onto `d0` categories: the
    /// in_dim signs of D, then the d0 kept rows of H (a uniform subset of 0..n).
    pub fn srht(in_dim: i64, d0: i64, seed: u64, device: Device) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let signs: Vec<f32> = (0..in_dim)
            .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
            .collect();
        let padded = kernels::SrhtTable::padded_len(in_dim as usize, d0 as usize);
        let mut rows = rand::seq::index::sample(&mut rng, padded, d0 as usize).into_vec();
        rows.sort_unstable();
        let table = kernels::SrhtTable::new(&signs, &rows);
        // R^T's row j is R e_j.
        let eye = Tensor::eye(in_dim, (Kind::Float, Device::Cpu));
        let matrix_t = table.forward_rows(&Vec::<f32>::try_from(eye.flatten(0, -1)).expect("f32"));
        let matrix_t = Tensor::from_slice(&matrix_t)
            .reshape([in_dim, d0])
            .to_device(device);
        Self {
            seed,
            kind: ProjectionMatrix::Srht { table, matrix_t },
        }
    }

    /// The projection `config` asks for.
    pub fn new(config: &ObjectiveConfig, in_dim: i64, seed: u64, device: Device) -> Self {
        match config.projection {
            ProjectionKind::Gaussian => Self::gaussian(in_dim, config.d0, seed, device),
            ProjectionKind::Sparse => Self::sparse(in_dim, config.d0, config.sparse_nonzeros, seed, device),
            ProjectionKind::Srht => Self::srht(in_dim, config.d0, seed, device),
        }
    }

    /// The same R with its tensors on `device`.
    pub fn to_device(&self, device: Device) -> Self {
        let kind = match &self.kind {
            ProjectionMatrix::Dense(matrix_t) => ProjectionMatrix::Dense(matrix_t.to_device(device)),
            ProjectionMatrix::Sparse {
                d0,
                k,
                buckets,
                values,
                table,
            } => ProjectionMatrix::Sparse {
                d0: *d0,
                k: *k,
                buckets: buckets.to_device(device),
                values: values.to_device(device),
                table: table.clone(),
            },
            ProjectionMatrix::Srht { table, matrix_t } => ProjectionMatrix::Srht {
                table: table.clone(),
                matrix_t: matrix_t.to_device(device),
            },
        };
        Self {
            seed: self.seed,
            kind,
        }
    }

    /// R u for a batch of pooled features u ([N, dim(u)] → [N, d0]), with autograd.
    pub fn apply(&self, u: &Tensor) -> Tensor {
        match &self.kind {
            ProjectionMatrix::Dense(matrix_t) | ProjectionMatrix::Srht { matrix_t, .. } => u.matmul(matrix_t),
            ProjectionMatrix::Sparse {
                d0,
                k,
                buckets,
                values,
                ..
            } => {
                // Work on u^T so that every added row is contiguous: z^T = Σ_j values_j · u^T_j → row buckets_j.
                let source = u.tr().contiguous().repeat([*k, 1]) * values;
                let zeros = Tensor::zeros([*d0, u.size()[0]], (u.kind(), u.device()));
                zeros.index_add(0, buckets, &source).tr().contiguous()
            }
        }
    }

    /// Whether R is a dense matrix (`gaussian`), whose product libtorch computes as a
    /// matrix multiplication (in bf16 inside an autocast region).
    pub fn is_dense(&self) -> bool {
        matches!(self.kind, ProjectionMatrix::Dense(_))
    }

    /// R as the fused CPU pass applies it: row by row (`sparse`, `srht`), or as the
    /// dense R^T between row passes (`gaussian`). CPU only.
    pub fn fused(&self) -> kernels::FusedProjection<'_> {
        match &self.kind {
            ProjectionMatrix::Dense(matrix_t) => kernels::FusedProjection::Dense(matrix_t),
            ProjectionMatrix::Sparse { table, .. } => kernels::FusedProjection::Rows(table),
            ProjectionMatrix::Srht { table, .. } => kernels::FusedProjection::Rows(table),
        }
    }

    /// Whether [`Projection::fused`] can run: R lives on the CPU.
    pub fn on_cpu(&self) -> bool {
        match &self.kind {
            ProjectionMatrix::Dense(m) | ProjectionMatrix::Srht { matrix_t: m, .. } => {
                m.device() == Device::Cpu
            }
            ProjectionMatrix::Sparse { buckets, .. } => buckets.device() == Device::Cpu,
        }
    }

    /// FLOPs of `apply` on one example: 2·d0·dim(u) dense, 2·k·dim(u) sparse,
    /// n·log2(n) + dim(u) for the SRHT (its kernel, not the dense reference).
    pub fn flops_per_example(&self) -> f64 {
        match &self.kind {
            ProjectionMatrix::Dense(m) => 2.0 * m.numel() as f64,
            ProjectionMatrix::Sparse { buckets, .. } => 2.0 * buckets.numel() as f64,
            ProjectionMatrix::Srht { table, .. } => {
                let (dim, d0) = table.dims();
                let n = kernels::SrhtTable::padded_len(dim, d0) as f64;
                n * n.log2() + dim as f64
            }
        }
    }

    /// dim(u), the length of the vectors R projects.
    pub fn in_dim(&self) -> i64 {
        match &self.kind {
            ProjectionMatrix::Dense(m) => m.size()[0],
            ProjectionMatrix::Sparse { k, buckets, .. } => buckets.numel() as i64 / k,
            ProjectionMatrix::Srht { table, .. } => table.dims().0 as i64,
        }
    }

    /// R itself ([d0, dim(u)]).
    pub fn matrix(&self) -> Tensor {
        match &self.kind {
            ProjectionMatrix::Dense(matrix_t) | ProjectionMatrix::Srht { matrix_t, .. } => matrix_t.tr(),
            ProjectionMatrix::Sparse { k, buckets, .. } => {
                let dim = buckets.size()[0] / k;
                self.apply(&Tensor::eye(dim, (Kind::Float, buckets.device())))
                    .tr()
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::FusedProjection;

    /// One projection of each kind, dim → d0, seed 3 (sparse: k = 3).
    pub(crate) fn projections(dim: i64, d0: i64) -> Vec<(ProjectionKind, Projection)> {
        vec![
            (
                ProjectionKind::Gaussian,
                Projection::gaussian(dim, d0, 3, Device::Cpu),
            ),
            (
                ProjectionKind::Sparse,
                Projection::sparse(dim, d0, 3, 3, Device::Cpu),
            ),
            (ProjectionKind::Srht, Projection::srht(dim, d0, 3, Device::Cpu)),
        ]
    }

    /// The values of a tensor as a Vec<f32>.
    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(t.to_kind(Kind::Float).flatten(0, -1)).unwrap()
    }

    #[test]
    fn projection_seeds_are_splitmix64_of_seed_and_index() {
        // Pinned values: every block's R (and the batch orders seeded the same way)
        // depend on them.
        assert_eq!(projection_seed(0, 0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(projection_seed(7, 1), 0x044C_3CD7_F43C_661C);
        assert_eq!(projection_seed(u64::MAX, 3), 0x6D1D_B36C_CBA9_82D2);
    }

    #[test]
    fn projection_is_deterministic_per_seed() {
        let _turn = crate::libtorch_turn();
        let a = Projection::gaussian(20, 8, projection_seed(7, 1), Device::Cpu).matrix();
        let b = Projection::gaussian(20, 8, projection_seed(7, 1), Device::Cpu).matrix();
        let c = Projection::gaussian(20, 8, projection_seed(7, 2), Device::Cpu).matrix();
        assert!(a.equal(&b));
        assert!(!a.equal(&c));
        assert_eq!(a.size(), vec![8, 20]);
    }

    #[test]
    fn projection_entries_have_variance_one_over_d0() {
        let _turn = crate::libtorch_turn();
        let r = Projection::gaussian(512, 256, 3, Device::Cpu).matrix();
        let var = r.var(true).double_value(&[]);
        assert!((var * 256.0 - 1.0).abs() < 0.02, "var·d0 = {}", var * 256.0);
        assert!(r.mean(Kind::Float).double_value(&[]).abs() < 1e-3);
    }

    #[test]
    fn sparse_projection_has_k_signed_entries_per_column_and_preserves_norms() {
        let _turn = crate::libtorch_turn();
        let r = Projection::sparse(300, 64, 4, 9, Device::Cpu);
        let m = r.matrix();
        assert_eq!(m.size(), vec![64, 300]);
        let nonzeros = m.ne(0.0).sum_dim_intlist([0i64].as_slice(), false, Kind::Int64);
        assert!(
            nonzeros.eq(4).all().int64_value(&[]) == 1,
            "4 nonzeros per column"
        );
        assert!((m.abs().max().double_value(&[]) - 0.5).abs() < 1e-6);
        // E‖Ru‖² = ‖u‖²: averaged over many random u the ratio is ~1.
        tch::manual_seed(0);
        let u = Tensor::randn([2000, 300], (Kind::Float, Device::Cpu));
        let ratio = r.apply(&u).square().sum(Kind::Float) / u.square().sum(Kind::Float);
        assert!((ratio.double_value(&[]) - 1.0).abs() < 0.05, "{ratio}");
        // apply() is the matrix product with matrix().
        let dense = u.matmul(&m.tr());
        assert!(r.apply(&u).allclose(&dense, 1e-4, 1e-4, false));
        assert!(Projection::sparse(300, 64, 4, 9, Device::Cpu).matrix().equal(&m));
    }

    #[test]
    fn srht_has_entries_plus_minus_one_over_root_d0_and_preserves_norms() {
        let _turn = crate::libtorch_turn();
        for (dim, d0) in [(300, 64), (300, 512), (12, 512)] {
            let r = Projection::srht(dim, d0, 9, Device::Cpu);
            let m = r.matrix();
            assert_eq!(m.size(), vec![d0, dim]);
            let expected = 1.0 / (d0 as f64).sqrt();
            let entries = m.abs() - expected;
            assert!(entries.abs().max().double_value(&[]) < 1e-6, "entries ±1/√d0");
            // E‖Ru‖² = ‖u‖² (the Gaussian's scale): averaged over many random u the ratio is ~1.
            tch::manual_seed(0);
            let u = Tensor::randn([2000, dim], (Kind::Float, Device::Cpu));
            let ratio = r.apply(&u).square().sum(Kind::Float) / u.square().sum(Kind::Float);
            assert!(
                (ratio.double_value(&[]) - 1.0).abs() < 0.05,
                "{dim}→{d0}: {ratio}"
            );
            assert!(Projection::srht(dim, d0, 9, Device::Cpu).matrix().equal(&m));
            assert!(!Projection::srht(dim, d0, 10, Device::Cpu).matrix().equal(&m));
        }
        // d0 ≥ n: every row of H kept, R^T R = (n/d0) I restricted to the inputs = I.
        let m = Projection::srht(12, 512, 1, Device::Cpu).matrix();
        let gram = m.tr().matmul(&m);
        assert!(gram.allclose(&Tensor::eye(12, (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
    }

    #[test]
    fn row_projections_are_their_matrix_and_its_transpose() {
        let _turn = crate::libtorch_turn();
        for (dim, d0) in [(50, 16), (12, 40)] {
            for (kind, r) in projections(dim, d0).into_iter().skip(1) {
                let FusedProjection::Rows(rows) = r.fused() else {
                    panic!("{kind:?} works by rows")
                };
                let m = r.matrix();
                let u = Tensor::randn([19, dim], (Kind::Float, Device::Cpu));
                let g = Tensor::randn([19, d0], (Kind::Float, Device::Cpu));
                let z = Tensor::from_slice(&rows.forward_rows(&values(&u))).reshape([-1, d0]);
                let t = Tensor::from_slice(&rows.transpose_rows(&values(&g))).reshape([-1, dim]);
                assert!(
                    z.allclose(&u.matmul(&m.tr()), 1e-5, 1e-5, false),
                    "{kind:?} forward"
                );
                assert!(t.allclose(&g.matmul(&m), 1e-5, 1e-5, false), "{kind:?} transpose");
            }
        }
    }
}
