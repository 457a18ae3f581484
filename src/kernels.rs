//! Fast CPU paths for the SLL objective (measured with `sll bench step`, figures in
//! docs/performance.md).
//!
//! - [`fused_divergence`]: block i's whole divergence term in one pass over the rows of
//!   the minibatch, in place of a dozen libtorch operations (each a dispatch and an
//!   OpenMP fork/join on 128×1024 values) and autograd through them. Per row:
//!
//!   ```text
//!   m  = dropout mask (its own xoshiro256++ stream per (seed, step, row))
//!   z  = R (m ⊙ u)
//!   log q = z/τ − logsumexp(z/τ)
//!   s  = ½(log q + log p),   D_B(q, p) = −logsumexp(s),   w = softmax(s)
//!   g  = ∂D_B/∂z = (q − w) / (2τN)        (N rows: D_B is averaged over the batch)
//!   ∂D_B/∂u = m ⊙ R^T g
//!   ```
//!
//!   The closed form of g: ∂(−log Σ_c √(q_c p_c))/∂log q_c = −w_c/2, and through the
//!   log-softmax ∂log q_c/∂z_d = (δ_cd − q_d)/τ, so ∂D_B/∂z_d = (q_d Σ_c w_c − w_d)/(2τ)
//!   = (q_d − w_d)/(2τ). Rows are split over [`kernel_threads`] threads; every row's
//!   numbers depend only on that row, so results do not depend on the split.
//! - [`fused_posterior`]: the same pass without a prior and gradient, for q_0.
//! - [`RowProjection`]s that the pass applies one row at a time: [`SparseTable`]
//!   (scatter/gather over k·dim(u) nonzeros) and [`SrhtTable`] (a fast Walsh–Hadamard
//!   transform, O(n log n)). The dense Gaussian projection goes through libtorch's
//!   matrix product between two row passes instead.
//!
//! Each is checked against the reference formulas of `objective.rs` in the tests.

use multiversion::multiversion;
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tch::{Device, Kind, Tensor};

/// The SplitMix64 finaliser: a bijection of u64 that spreads every input bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One dropout mask of rate p: the mask of `step` in the stream of `seed`.
///
/// Row r's mask is drawn from a xoshiro256++ generator seeded with (seed, step, r)
/// alone, so a mask is a function of these three numbers, whatever the thread split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MaskSpec {
    /// Drop probability p (quantised to 1/65536).
    pub p: f64,
    /// Seed of the stream.
    pub seed: u64,
    /// Index of this mask in the stream (one per training call).
    pub step: u64,
}

impl MaskSpec {
    /// Writes row `row` of the mask into `out`: 1/(1−p) with probability 1−p, else 0,
    /// from 16-bit draws (four per 64-bit output of the generator).
    pub fn fill_row(&self, row: usize, out: &mut [f32]) {
        fill_row_mask_spec(self, row, out)
    }

    /// The whole mask for a tensor of `shape` (rows along the first dimension), as an
    /// f32 CPU tensor: the reference path's m, equal to what the fused pass draws.
    pub fn mask(&self, shape: &[i64]) -> Tensor {
        let rows = shape.first().copied().unwrap_or(1).max(0) as usize;
        let len = shape.iter().skip(1).product::<i64>().max(0) as usize;
        let mut values = vec![0f32; rows * len];
        if len > 0 {
            for (r, row) in values.chunks_mut(len).enumerate() {
                self.fill_row(r, row);
            }
        }
        Tensor::from_slice(&values).reshape(shape)
    }
}

/// How many rows the row projections work on at once. A tile holds them interleaved
/// (element j of row r at j·TILE + r), so that every step of the projection is the
/// same operation on TILE lanes, which the compiler vectorises; each lane's numbers
/// are those of its row alone.
pub const TILE: usize = 8;

/// A fixed projection R ∈ ℝ^{d0×dim} that the fused pass applies to tiles of rows.
pub trait RowProjection: Sync {
    /// (dim, d0): the input and output lengths.
    fn dims(&self) -> (usize, usize);
    /// Length of the scratch buffer `forward_tile` and `transpose_tile` need.
    fn scratch_len(&self) -> usize;
    /// z = R u for a tile: u is [dim][TILE], z is [d0][TILE].
    fn forward_tile(&self, u: &[f32], z: &mut [f32], scratch: &mut [f32]);
    /// out = R^T g for a tile: g is [d0][TILE], out is [dim][TILE].
    fn transpose_tile(&self, g: &[f32], out: &mut [f32], scratch: &mut [f32]);

    /// R u for rows u (row-major [n, dim] → [n, d0]), on this thread.
    fn forward_rows(&self, u: &[f32]) -> Vec<f32> {
        let (dim, d0) = self.dims();
        by_tiles(u, dim, d0, self.scratch_len(), |a, b, s| {
            self.forward_tile(a, b, s)
        })
    }

    /// R^T g for rows g (row-major [n, d0] → [n, dim]), on this thread.
    fn transpose_rows(&self, g: &[f32]) -> Vec<f32> {
        let (dim, d0) = self.dims();
        by_tiles(g, d0, dim, self.scratch_len(), |a, b, s| {
            self.transpose_tile(a, b, s)
        })
    }
}

/// Writes `row` into lane `lane` of `tile` ([row.len()][TILE]).
#[inline(always)]
fn set_lane(tile: &mut [f32], lane: usize, row: &[f32]) {
    for (t, &v) in tile.chunks_exact_mut(TILE).zip(row) {
        t[lane] = v;
    }
}

/// Reads lane `lane` of `tile` ([row.len()][TILE]) into `row`.
#[inline(always)]
fn get_lane(tile: &[f32], lane: usize, row: &mut [f32]) {
    for (v, t) in row.iter_mut().zip(tile.chunks_exact(TILE)) {
        *v = t[lane];
    }
}

/// `f(input tile, output tile, scratch)` over row-major rows of `in_len`, tile by
/// tile, into row-major rows of `out_len`.
fn by_tiles(
    x: &[f32],
    in_len: usize,
    out_len: usize,
    scratch_len: usize,
    f: impl Fn(&[f32], &mut [f32], &mut [f32]),
) -> Vec<f32> {
    let mut out = vec![0f32; x.len() / in_len.max(1) * out_len];
    let (mut a, mut b) = (vec![0f32; in_len * TILE], vec![0f32; out_len * TILE]);
    let mut scratch = vec![0f32; scratch_len];
    for (xs, ys) in x.chunks(TILE * in_len).zip(out.chunks_mut(TILE * out_len)) {
        xs.chunks(in_len)
            .enumerate()
            .for_each(|(r, row)| set_lane(&mut a, r, row));
        f(&a, &mut b, &mut scratch);
        ys.chunks_mut(out_len)
            .enumerate()
            .for_each(|(r, row)| get_lane(&b, r, row));
    }
    out
}

/// A sparse projection as plain vectors, in two layouts so that both products are
/// gathers (each output accumulated in a register, no scattered stores):
/// - by category c (CSR): the nonzeros (j, R_cj) of row c of R, for z = R u;
/// - by input j: its k nonzeros (c, R_cj), for R^T g.
#[derive(Debug, Clone)]
pub struct SparseTable {
    dim: usize,
    d0: usize,
    k: usize,
    /// Row c of R is `row_inputs/row_values[row_starts[c]..row_starts[c + 1]]`.
    row_starts: Vec<usize>,
    row_inputs: Vec<u32>,
    row_values: Vec<f32>,
    /// Column j of R is `column_rows/column_values[j·k..(j + 1)·k]`.
    column_rows: Vec<u32>,
    column_values: Vec<f32>,
}

impl SparseTable {
    /// The table of a sparse projection of `dim` inputs onto `d0` categories, given
    /// as k slices: input j's s-th nonzero is in category `buckets[s·dim + j]` with
    /// value `values[s·dim + j]`.
    pub fn new(dim: usize, d0: usize, buckets: &[i64], values: &[f32]) -> Self {
        let k = buckets.len() / dim.max(1);
        let (mut column_rows, mut column_values) = (vec![0u32; dim * k], vec![0f32; dim * k]);
        let mut rows: Vec<Vec<(u32, f32)>> = vec![vec![]; d0];
        for (e, (&c, &v)) in buckets.iter().zip(values).enumerate() {
            let (s, j) = (e / dim, e % dim);
            column_rows[j * k + s] = c as u32;
            column_values[j * k + s] = v;
            rows[c as usize].push((j as u32, v));
        }
        let mut row_starts = vec![0];
        let (mut row_inputs, mut row_values) = (vec![], vec![]);
        for row in rows {
            for (j, v) in row {
                row_inputs.push(j);
                row_values.push(v);
            }
            row_starts.push(row_inputs.len());
        }
        Self {
            dim,
            d0,
            k,
            row_starts,
            row_inputs,
            row_values,
            column_rows,
            column_values,
        }
    }
}

impl RowProjection for SparseTable {
    fn dims(&self) -> (usize, usize) {
        (self.dim, self.d0)
    }

    fn scratch_len(&self) -> usize {
        0
    }

    /// z_c = Σ_{j: R_cj ≠ 0} R_cj u_j, for each lane.
    fn forward_tile(&self, u: &[f32], z: &mut [f32], scratch: &mut [f32]) {
        forward_tile_sparse_table(self, u, z, scratch)
    }

    /// out_j = Σ_{c: R_cj ≠ 0} R_cj g_c, for each lane.
    fn transpose_tile(&self, g: &[f32], out: &mut [f32], scratch: &mut [f32]) {
        transpose_tile_sparse_table(self, g, out, scratch)
    }
}

/// A subsampled randomized Hadamard transform R = S H D / √d0 ∈ ℝ^{d0×dim}:
/// D = diag(random signs) on the input zero-padded to n = 2^⌈log2 max(dim, d0)⌉,
/// H the n×n Walsh–Hadamard matrix (entries ±1, H H = n I), S the selection of d0
/// distinct rows drawn uniformly. Every entry of R is ±1/√d0 (variance 1/d0, as the
/// Gaussian's), and since H/√n is orthogonal, E_S ‖Ru‖² = (n/d0)·(d0/n)‖u‖² = ‖u‖².
/// Applying it costs n·log2(n) additions per row (the FWHT) instead of d0·dim.
#[derive(Debug, Clone)]
pub struct SrhtTable {
    d0: usize,
    padded: usize,
    /// D_jj / √d0 for j < dim.
    signs: Vec<f32>,
    /// The rows of H that S keeps, ascending.
    rows: Vec<usize>,
}

impl SrhtTable {
    /// The SRHT with signs D (one ±1 per input coordinate) and kept rows `rows` (d0
    /// distinct indices below [`SrhtTable::padded_len`] of (signs.len(), rows.len())).
    pub fn new(signs: &[f32], rows: &[usize]) -> Self {
        let d0 = rows.len();
        let scale = 1.0 / (d0 as f32).sqrt();
        Self {
            d0,
            padded: Self::padded_len(signs.len(), d0),
            signs: signs.iter().map(|s| s.signum() * scale).collect(),
            rows: rows.to_vec(),
        }
    }

    /// n = the smallest power of two ≥ max(dim, d0): the length H works on.
    pub fn padded_len(dim: usize, d0: usize) -> usize {
        dim.max(d0).max(1).next_power_of_two()
    }
}

/// The in-place fast Walsh–Hadamard transform x ← H x (unnormalised) of `lanes`
/// interleaved vectors (x is `[n][lanes]`, n a power of two): log2(n) rounds of
/// butterflies (a, b) → (a + b, a − b).
#[multiversion(targets("x86_64+avx2+fma"))]
pub fn fwht(x: &mut [f32], lanes: usize) {
    let mut h = lanes;
    while h < x.len() {
        for block in x.chunks_mut(2 * h) {
            let (a, b) = block.split_at_mut(h);
            for (a, b) in a.iter_mut().zip(b.iter_mut()) {
                let (s, d) = (*a + *b, *a - *b);
                *a = s;
                *b = d;
            }
        }
        h *= 2;
    }
}

impl RowProjection for SrhtTable {
    fn dims(&self) -> (usize, usize) {
        (self.signs.len(), self.d0)
    }

    fn scratch_len(&self) -> usize {
        self.padded * TILE
    }

    /// z = S H (D u / √d0, zero-padded), for each lane.
    fn forward_tile(&self, u: &[f32], z: &mut [f32], scratch: &mut [f32]) {
        forward_tile_srht_table(self, u, z, scratch)
    }

    /// R^T g = D H S^T g / √d0 (H is symmetric), the first dim coordinates.
    fn transpose_tile(&self, g: &[f32], out: &mut [f32], scratch: &mut [f32]) {
        transpose_tile_srht_table(self, g, out, scratch)
    }
}

/// How the fused pass applies R.
#[derive(Clone, Copy)]
pub enum FusedProjection<'a> {
    /// Row by row, inside the pass.
    Rows(&'a dyn RowProjection),
    /// R^T as a dense f32 CPU matrix ([dim, d0]): libtorch's matrix products between
    /// row passes (a dense product is faster in BLAS than row by row).
    Dense(&'a Tensor),
}

/// What [`fused_divergence`] returns, none of it attached to a graph.
pub struct FusedDivergence {
    /// D_B(q, p) averaged over the batch (a scalar).
    pub distance: Tensor,
    /// log q = log softmax(R(m ⊙ u)/τ) ([N, d0]).
    pub log_q: Tensor,
    /// ∂ distance / ∂u = m ⊙ R^T (q − w)/(2τN) ([N, dim(u)]).
    pub grad_u: Tensor,
}

/// Block i's divergence term, its gradient with respect to u and log q (see the
/// module doc) for pooled features u ([N, dim(u)]) and the prior log p ([N, d0]), on
/// the CPU, with the dropout mask `mask` (none: m = 1).
pub fn fused_divergence(
    u: &Tensor,
    log_prior: &Tensor,
    projection: FusedProjection,
    mask: Option<MaskSpec>,
    tau: f64,
) -> FusedDivergence {
    let pass = fused_pass(u, Some(log_prior), projection, mask, tau, kernel_threads());
    let (distance, grad_u) = pass.divergence.expect("a prior gives the divergence");
    FusedDivergence {
        distance,
        log_q: pass.log_q,
        grad_u,
    }
}

/// log q = log softmax(R(m ⊙ u)/τ) for pooled features u on the CPU, without
/// gradient: the input's posterior q_0.
pub fn fused_posterior(u: &Tensor, projection: FusedProjection, mask: Option<MaskSpec>, tau: f64) -> Tensor {
    fused_pass(u, None, projection, mask, tau, kernel_threads()).log_q
}

/// What one fused pass computes: log q, and (D_B, ∂D_B/∂u) when given a prior.
struct Pass {
    log_q: Tensor,
    divergence: Option<(Tensor, Tensor)>,
}

/// The fused pass with rows split over `threads` threads.
fn fused_pass(
    u: &Tensor,
    log_prior: Option<&Tensor>,
    projection: FusedProjection,
    mask: Option<MaskSpec>,
    tau: f64,
    threads: usize,
) -> Pass {
    let u = cpu_f32(&u.reshape([u.size()[0], -1]));
    let (n, dim) = (u.size()[0] as usize, u.size()[1] as usize);
    let d0 = match projection {
        FusedProjection::Rows(r) => r.dims().1,
        FusedProjection::Dense(m) => m.size()[1] as usize,
    };
    let prior = log_prior.map(cpu_f32);
    if let Some(p) = &prior {
        assert_eq!(p.size(), [n as i64, d0 as i64], "prior of shape [N, d0]");
    }
    let row = Row {
        inv_tau: (1.0 / tau) as f32,
        scale: (1.0 / (2.0 * tau * n.max(1) as f64)) as f32,
        prior: prior.as_ref().map(f32_slice),
        d0,
    };
    let mut log_q = empty(n, d0);
    let mut distances = vec![0f32; n];
    let mut grad = prior.as_ref().map(|_| empty(n, dim));
    match projection {
        FusedProjection::Rows(r) => {
            let us = f32_slice(&u);
            let mut buffers = vec![(f32_slice_mut(&mut log_q), d0), (&mut distances[..], 1)];
            buffers.extend(grad.as_mut().map(|g| (f32_slice_mut(g), dim)));
            par_rows(n, threads, buffers, |first, count, parts| {
                let mut scratch = vec![0f32; r.scratch_len()];
                let mut m = vec![0f32; TILE * dim];
                let (mut u_tile, mut out_tile) = (vec![0f32; dim * TILE], vec![0f32; dim * TILE]);
                let (mut z_tile, mut g_tile) = (vec![0f32; d0 * TILE], vec![0f32; d0 * TILE]);
                let (mut z, mut q, mut gz) = (vec![0f32; d0], vec![0f32; d0], vec![0f32; d0]);
                let [log_q, dist, grad @ ..] = parts else {
                    unreachable!()
                };
                for t in (0..count).step_by(TILE) {
                    let rows = TILE.min(count - t);
                    for i in 0..rows {
                        let k = first + t + i;
                        let u_row = &us[k * dim..(k + 1) * dim];
                        match mask {
                            Some(spec) => {
                                let m = &mut m[i * dim..(i + 1) * dim];
                                spec.fill_row(k, m);
                                let lanes = u_tile.chunks_exact_mut(TILE);
                                for ((lane, &m), &u) in lanes.zip(m.iter()).zip(u_row) {
                                    lane[i] = m * u;
                                }
                            }
                            None => set_lane(&mut u_tile, i, u_row),
                        }
                    }
                    r.forward_tile(&u_tile, &mut z_tile, &mut scratch);
                    for i in 0..rows {
                        get_lane(&z_tile, i, &mut z);
                        let log_q = &mut log_q[(t + i) * d0..(t + i + 1) * d0];
                        dist[t + i] = finish_row(&row, first + t + i, &z, log_q, &mut q, &mut gz);
                        set_lane(&mut g_tile, i, &gz);
                    }
                    if let [grad] = grad {
                        r.transpose_tile(&g_tile, &mut out_tile, &mut scratch);
                        for i in 0..rows {
                            let g = &mut grad[(t + i) * dim..(t + i + 1) * dim];
                            get_lane(&out_tile, i, g);
                            if mask.is_some() {
                                g.iter_mut()
                                    .zip(&m[i * dim..(i + 1) * dim])
                                    .for_each(|(g, m)| *g *= m);
                            }
                        }
                    }
                }
            });
        }
        FusedProjection::Dense(matrix_t) => {
            let u_bar = match mask {
                Some(spec) => {
                    let mut u_bar = empty(n, dim);
                    let us = f32_slice(&u);
                    par_rows(
                        n,
                        threads,
                        vec![(f32_slice_mut(&mut u_bar), dim)],
                        |first, count, parts| {
                            for (i, out) in parts[0].chunks_mut(dim).take(count).enumerate() {
                                spec.fill_row(first + i, out);
                                let u_row = &us[(first + i) * dim..(first + i + 1) * dim];
                                out.iter_mut().zip(u_row).for_each(|(m, u)| *m *= u);
                            }
                        },
                    );
                    u_bar
                }
                None => u.shallow_clone(),
            };
            let z = tch::no_grad(|| u_bar.matmul(matrix_t)).contiguous();
            let zs = f32_slice(&z);
            let mut grad_z = prior.as_ref().map(|_| empty(n, d0));
            let mut buffers = vec![(f32_slice_mut(&mut log_q), d0), (&mut distances[..], 1)];
            buffers.extend(grad_z.as_mut().map(|g| (f32_slice_mut(g), d0)));
            par_rows(n, threads, buffers, |first, count, parts| {
                let (mut q, mut scratch) = (vec![0f32; d0], vec![0f32; d0]);
                let [log_q, dist, grad_z @ ..] = parts else {
                    unreachable!()
                };
                for i in 0..count {
                    let k = first + i;
                    let gz = match grad_z {
                        [g] => &mut g[i * d0..(i + 1) * d0],
                        _ => &mut scratch[..],
                    };
                    let log_q = &mut log_q[i * d0..(i + 1) * d0];
                    dist[i] = finish_row(&row, k, &zs[k * d0..(k + 1) * d0], log_q, &mut q, gz);
                }
            });
            if let Some(grad_z) = grad_z {
                let mut g = tch::no_grad(|| grad_z.matmul(&matrix_t.tr())).contiguous();
                if let Some(spec) = mask {
                    par_rows(
                        n,
                        threads,
                        vec![(f32_slice_mut(&mut g), dim)],
                        |first, count, parts| {
                            let mut m = vec![0f32; dim];
                            for (i, g) in parts[0].chunks_mut(dim).take(count).enumerate() {
                                spec.fill_row(first + i, &mut m);
                                g.iter_mut().zip(&m).for_each(|(g, m)| *g *= m);
                            }
                        },
                    );
                }
                grad = Some(g);
            }
        }
    }
    let divergence = grad.map(|g| {
        let mean = distances.iter().map(|&d| d as f64).sum::<f64>() / n.max(1) as f64;
        (Tensor::from(mean as f32), g)
    });
    Pass { log_q, divergence }
}

/// The per-row arithmetic after the projection, shared by both kinds of pass.
struct Row<'a> {
    inv_tau: f32,
    /// 1/(2τN): the gradient of the batch mean.
    scale: f32,
    /// log p, [N, d0] row-major, if any.
    prior: Option<&'a [f32]>,
    d0: usize,
}

/// Σ x with eight running sums (so that the loop vectorises; fixed order, hence
/// the same bits on every call).
#[inline(always)]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &c) in acc.iter_mut().zip(c) {
            *a += c;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// max x (−∞ for no values), eight running maxima as in [`sum`].
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for c in chunks {
        for (a, &c) in acc.iter_mut().zip(c) {
            *a = a.max(c);
        }
    }
    acc.iter().fold(tail, |a, &b| a.max(b))
}

/// e^x in f32 to ~2 ulp, branch-free so that loops over it vectorise (libm's expf
/// does not): x = n·ln 2 + r with n = round(x·log2 e) (the 1.5·2^23 trick) and
/// |r| ≤ ln 2 / 2, e^r by Cephes' degree-7 polynomial, 2^n put in the exponent bits;
/// x is clamped to [−87, 88], so results stay normal (e^−87 ≈ 1.6e−38).
#[inline(always)]
fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p * r + c;
    }
    // t's low mantissa bits hold n + 2^22: n + 127 without a float-to-int conversion.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    (p * r * r + r + 1.0) * scale
}

/// u detached as a contiguous f32 CPU tensor.
fn cpu_f32(u: &Tensor) -> Tensor {
    u.detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
}

/// A fresh [rows, cols] f32 CPU tensor.
fn empty(rows: usize, cols: usize) -> Tensor {
    Tensor::empty([rows as i64, cols as i64], (Kind::Float, Device::Cpu))
}

/// The values of a contiguous f32 CPU tensor (from [`cpu_f32`] or [`empty`]).
fn f32_slice(t: &Tensor) -> &[f32] {
    // SAFETY: t is a contiguous f32 CPU tensor of t.numel() values, alive while borrowed.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// The values of a contiguous f32 CPU tensor that this module owns alone (fresh from
/// [`empty`] or a matrix product), to write into.
fn f32_slice_mut(t: &mut Tensor) -> &mut [f32] {
    // SAFETY: as f32_slice; the tensor is fresh, so no other handle reads its storage.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) }
}

/// How many threads our own kernels split their work over: libtorch's intra-op threads.
pub fn kernel_threads() -> usize {
    tch::get_num_threads().max(1) as usize
}

/// Splits `n` rows into `threads` contiguous shares and runs `work(first row, rows,
/// chunks)` on each (see [`crate::parallel::run_shares`]), where chunks are the share's rows of each
/// (buffer, row width) in `buffers`.
fn par_rows(
    n: usize,
    threads: usize,
    buffers: Vec<(&mut [f32], usize)>,
    work: impl Fn(usize, usize, &mut [&mut [f32]]) + Sync,
) {
    if n == 0 {
        return;
    }
    let rows_per = n.div_ceil(threads.clamp(1, n));
    let mut shares: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(rows_per)).map(|_| vec![]).collect();
    for (buffer, width) in buffers {
        for (share, chunk) in shares.iter_mut().zip(buffer.chunks_mut(rows_per * width)) {
            share.push(chunk);
        }
    }
    crate::parallel::run_shares(shares.into_iter().enumerate(), |(s, mut chunks)| {
        let first = s * rows_per;
        work(first, rows_per.min(n - first), &mut chunks);
    });
}

// The hot loops of the methods above, compiled once more for AVX2 + FMA and picked
// at run time (`multiversion`). Rust never fuses a multiply and an add on its own, so
// both versions give the same bits.

#[multiversion(targets("x86_64+avx2+fma"))]
fn fill_row_mask_spec(this: &MaskSpec, row: usize, out: &mut [f32]) {
    let seed = mix(mix(mix(this.seed) ^ this.step) ^ row as u64);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let threshold = (this.p * 65536.0).round() as u32;
    let keep = (1.0 / (1.0 - this.p)) as f32;
    // 64 draws at a time: 16 generator outputs cut into their four 16-bit parts
    // (lowest first), then one compare per entry, which vectorises.
    let mut draws = [0u16; 64];
    for chunk in out.chunks_mut(64) {
        for four in draws.chunks_exact_mut(4) {
            let bits = rng.next_u64();
            for (q, d) in four.iter_mut().enumerate() {
                *d = (bits >> (16 * q)) as u16;
            }
        }
        for (v, &d) in chunk.iter_mut().zip(&draws) {
            *v = if d as u32 >= threshold { keep } else { 0.0 };
        }
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn forward_tile_sparse_table(this: &SparseTable, u: &[f32], z: &mut [f32], _scratch: &mut [f32]) {
    for (z, range) in z.chunks_exact_mut(TILE).zip(this.row_starts.windows(2)) {
        let r = range[0]..range[1];
        gather_lanes(z, &this.row_inputs[r.clone()], &this.row_values[r], u);
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn transpose_tile_sparse_table(this: &SparseTable, g: &[f32], out: &mut [f32], _scratch: &mut [f32]) {
    let columns = this
        .column_rows
        .chunks_exact(this.k)
        .zip(this.column_values.chunks_exact(this.k));
    for (o, (rows, values)) in out.chunks_exact_mut(TILE).zip(columns) {
        gather_lanes(o, rows, values, g);
    }
}

/// One tile row (TILE lanes) out = Σ_e values[e] · (row indices[e] of the tile `src`):
/// both products of the sparse projection, each output accumulated in registers.
#[inline(always)]
fn gather_lanes(out: &mut [f32], indices: &[u32], values: &[f32], src: &[f32]) {
    let mut acc = [0f32; TILE];
    for (&j, &v) in indices.iter().zip(values) {
        for (a, &x) in acc.iter_mut().zip(&src[j as usize * TILE..][..TILE]) {
            *a += v * x;
        }
    }
    out.copy_from_slice(&acc);
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn forward_tile_srht_table(this: &SrhtTable, u: &[f32], z: &mut [f32], scratch: &mut [f32]) {
    let x = &mut scratch[..this.padded * TILE];
    for ((x, &s), u) in x
        .chunks_exact_mut(TILE)
        .zip(&this.signs)
        .zip(u.chunks_exact(TILE))
    {
        for (x, &u) in x.iter_mut().zip(u) {
            *x = s * u;
        }
    }
    x[this.signs.len() * TILE..].fill(0.0);
    fwht(x, TILE);
    for (z, &r) in z.chunks_exact_mut(TILE).zip(&this.rows) {
        z.copy_from_slice(&x[r * TILE..][..TILE]);
    }
}

#[multiversion(targets("x86_64+avx2+fma"))]
fn transpose_tile_srht_table(this: &SrhtTable, g: &[f32], out: &mut [f32], scratch: &mut [f32]) {
    let x = &mut scratch[..this.padded * TILE];
    x.fill(0.0);
    for (g, &r) in g.chunks_exact(TILE).zip(&this.rows) {
        x[r * TILE..][..TILE].copy_from_slice(g);
    }
    fwht(x, TILE);
    for ((o, &s), x) in out
        .chunks_exact_mut(TILE)
        .zip(&this.signs)
        .zip(x.chunks_exact(TILE))
    {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = s * x;
        }
    }
}

/// From row k's logits z: log q = z/τ − logsumexp(z/τ) into `log_q`; with a prior,
/// g = (q − w)/(2τN) into `grad_z` and D_B(q, p) = −logsumexp(s) returned (0
/// without one). `q` is scratch. Two exponentials per category.
#[multiversion(targets("x86_64+avx2+fma"))]
fn finish_row<'a>(
    this: &Row<'a>,
    k: usize,
    z: &[f32],
    log_q: &mut [f32],
    q: &mut [f32],
    grad_z: &mut [f32],
) -> f32 {
    let z_max = max(z) * this.inv_tau;
    for (q, &z) in q.iter_mut().zip(z) {
        *q = exp(z * this.inv_tau - z_max);
    }
    let q_sum = sum(q);
    let lse = z_max + q_sum.ln();
    for (l, &z) in log_q.iter_mut().zip(z) {
        *l = z * this.inv_tau - lse;
    }
    let Some(prior) = this.prior else { return 0.0 };
    let log_p = &prior[k * this.d0..(k + 1) * this.d0];
    for ((s, &lq), &lp) in grad_z.iter_mut().zip(log_q.iter()).zip(log_p) {
        *s = 0.5 * (lq + lp);
    }
    let s_max = max(grad_z);
    for s in grad_z.iter_mut() {
        *s = exp(*s - s_max);
    }
    let s_sum = sum(grad_z);
    let (q_scale, w_scale) = (this.scale / q_sum, this.scale / s_sum);
    for (g, &q) in grad_z.iter_mut().zip(q.iter()) {
        *g = q * q_scale - *g * w_scale;
    }
    -(s_max + s_sum.ln())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProjectionKind;
    use crate::objective::{bhattacharyya_distance, log_posterior, Projection};

    fn projections(dim: i64, d0: i64) -> Vec<(ProjectionKind, Projection)> {
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
    fn mask_has_the_right_rate_scale_and_is_seeded() {
        let _turn = crate::libtorch_turn();
        let spec = MaskSpec {
            p: 0.1,
            seed: 1,
            step: 0,
        };
        let m = spec.mask(&[300, 501]);
        let dropped = m.eq(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
        assert!((dropped - 0.1).abs() < 0.005, "{dropped}");
        assert!((m.max().double_value(&[]) - 1.0 / 0.9).abs() < 1e-6);
        assert!(m.equal(&spec.mask(&[300, 501])));
        assert!(!m.equal(&MaskSpec { step: 1, ..spec }.mask(&[300, 501])));
        assert!(!m.equal(&MaskSpec { seed: 2, ..spec }.mask(&[300, 501])));
        // Row r depends on (seed, step, r) only: fewer rows give the same first rows.
        assert!(spec.mask(&[10, 501]).equal(&m.narrow(0, 0, 10)));
    }

    #[test]
    fn exp_is_accurate_and_sum_max_are_exact_enough() {
        let _turn = crate::libtorch_turn();
        for i in 0..=20_000 {
            let x = -87.0 + 175.0 * i as f32 / 20_000.0;
            let (fast, exact) = (exp(x) as f64, (x as f64).exp());
            assert!(
                (fast - exact).abs() <= 3e-7 * exact,
                "exp({x}) = {fast}, not {exact}"
            );
        }
        assert!(
            exp(-1000.0) == exp(-87.0) && exp(-1000.0).is_normal(),
            "clamped below"
        );
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin()).collect();
        assert!((sum(&x) - x.iter().sum::<f32>()).abs() < 1e-5);
        assert_eq!(max(&x), x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)));
    }

    #[test]
    fn fwht_is_the_hadamard_matrix() {
        let _turn = crate::libtorch_turn();
        // H_ij = (−1)^popcount(i & j): FWHT of e_j is column j, in every lane.
        for (n, lanes) in [(1usize, 1usize), (2, 1), (4, 3), (8, 1), (32, 8)] {
            for j in 0..n {
                let mut x = vec![0f32; n * lanes];
                x[j * lanes..(j + 1) * lanes].fill(1.0);
                fwht(&mut x, lanes);
                for (i, h) in x.chunks(lanes).enumerate() {
                    let expected = if (i & j).count_ones() % 2 == 0 { 1.0 } else { -1.0 };
                    assert!(h.iter().all(|&h| h == expected), "n = {n}, H[{i}][{j}]");
                }
            }
        }
        let mut x = [1.0f32, 2.0, 3.0, 4.0];
        fwht(&mut x, 1);
        // H_4 = [[1,1,1,1],[1,-1,1,-1],[1,1,-1,-1],[1,-1,-1,1]].
        assert_eq!(x, [10.0, -2.0, -4.0, 0.0]);
        fwht(&mut x, 1);
        assert_eq!(x, [4.0, 8.0, 12.0, 16.0], "H H = n I");
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

    /// The fused pass gives the value, log q and gradient that autograd gives through
    /// the reference formulas (same mask), for every projection and both temperatures.
    #[test]
    fn fused_pass_matches_autograd() {
        let _turn = crate::libtorch_turn();
        tch::manual_seed(4);
        let spec = MaskSpec {
            p: 0.2,
            seed: 9,
            step: 3,
        };
        for (kind, r) in projections(70, 48) {
            for (tau, mask) in [(1.0, Some(spec)), (0.5, None)] {
                let u = (Tensor::randn([37, 70], (Kind::Float, Device::Cpu)) * 2.0).set_requires_grad(true);
                let log_p = Tensor::randn([37, 48], (Kind::Float, Device::Cpu)).log_softmax(-1, Kind::Float);
                let u_bar = match mask {
                    Some(spec) => &u * spec.mask(&[37, 70]),
                    None => u.shallow_clone(),
                };
                let log_q = log_posterior(&r.apply(&u_bar), tau);
                let reference = bhattacharyya_distance(&log_q, &log_p);
                reference.backward();
                let fused = fused_divergence(&u, &log_p, r.fused(), mask, tau);
                let close = |a: &Tensor, b: &Tensor| a.allclose(b, 1e-4, 1e-6, false);
                assert!(close(&fused.distance, &reference.detach()), "{kind:?} distance");
                // log q to f32 rounding of z/τ − logsumexp (|z/τ| up to ~30 here).
                let close_log = |a: &Tensor, b: &Tensor| a.allclose(b, 1e-4, 1e-5, false);
                assert!(close_log(&fused.log_q, &log_q.detach()), "{kind:?} log q");
                assert!(close(&fused.grad_u, &u.grad()), "{kind:?} gradients differ");
                let posterior = fused_posterior(&u, r.fused(), mask, tau);
                assert!(close_log(&posterior, &log_q.detach()), "{kind:?} posterior");
            }
        }
    }

    /// Central differences of the reference formula in f64 (same mask, same R) agree
    /// with the fused pass's f32 gradient.
    #[test]
    fn fused_gradient_matches_finite_differences() {
        let _turn = crate::libtorch_turn();
        tch::manual_seed(5);
        let spec = MaskSpec {
            p: 0.3,
            seed: 2,
            step: 0,
        };
        let (n, dim, d0, tau) = (6, 20, 16, 0.8);
        for (kind, r) in projections(dim, d0) {
            let u = Tensor::randn([n, dim], (Kind::Float, Device::Cpu));
            let log_p = Tensor::randn([n, d0], (Kind::Float, Device::Cpu)).log_softmax(-1, Kind::Float);
            let fused = fused_divergence(&u, &log_p, r.fused(), Some(spec), tau);
            let (m, mask) = (
                r.matrix().to_kind(Kind::Double),
                spec.mask(&[n, dim]).to_kind(Kind::Double),
            );
            let log_p = log_p.to_kind(Kind::Double);
            let d = |u: &Tensor| {
                let z = (u * &mask).matmul(&m.tr());
                bhattacharyya_distance(&(z / tau).log_softmax(-1, Kind::Double), &log_p).double_value(&[])
            };
            let u = u.to_kind(Kind::Double);
            for (i, j) in [(0, 0), (1, 7), (3, 19), (5, 11)] {
                let bumped = |e: f64| {
                    let v = u.copy();
                    let _ = v.get(i).get(j).fill_(u.double_value(&[i, j]) + e);
                    d(&v)
                };
                let numeric = (bumped(1e-6) - bumped(-1e-6)) / 2e-6;
                let analytic = fused.grad_u.double_value(&[i, j]);
                assert!(
                    (numeric - analytic).abs() < 1e-6 + 1e-3 * numeric.abs(),
                    "{kind:?} ({i},{j}): {numeric} vs {analytic}"
                );
            }
        }
    }

    /// Every row's numbers depend on that row alone: the same bits for any split.
    #[test]
    fn fused_pass_does_not_depend_on_the_thread_split() {
        let _turn = crate::libtorch_turn();
        let spec = MaskSpec {
            p: 0.1,
            seed: 7,
            step: 2,
        };
        let u = Tensor::randn([29, 64], (Kind::Float, Device::Cpu));
        let log_p = Tensor::randn([29, 32], (Kind::Float, Device::Cpu)).log_softmax(-1, Kind::Float);
        for (kind, r) in projections(64, 32) {
            let run = |threads| fused_pass(&u, Some(&log_p), r.fused(), Some(spec), 1.0, threads);
            let one = run(1);
            let (d1, g1) = one.divergence.unwrap();
            for threads in [2, 3, 8] {
                let other = run(threads);
                let (d, g) = other.divergence.unwrap();
                assert!(other.log_q.equal(&one.log_q), "{kind:?} log q, {threads} threads");
                assert!(
                    d.equal(&d1) && g.equal(&g1),
                    "{kind:?} gradient, {threads} threads"
                );
            }
        }
    }
}
