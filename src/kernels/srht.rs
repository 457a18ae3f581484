//! The subsampled randomized Hadamard transform's kernel: R = S H D / √d0 applied to
//! tiles of rows through a fast Walsh–Hadamard transform, O(n log n) per row.

use super::tile::{RowProjection, TILE};
use multiversion::multiversion;

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

// The hot loops below are compiled once more for AVX2 + FMA and picked at run time
// (`multiversion`). Rust never fuses a multiply and an add on its own, so both
// versions give the same bits.

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
