//! The sparse projection's kernel: R with k nonzeros per input coordinate, applied to
//! tiles of rows as gathers.

use super::tile::{RowProjection, TILE};
use multiversion::multiversion;

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

// The hot loops below are compiled once more for AVX2 + FMA and picked at run time
// (`multiversion`). Rust never fuses a multiply and an add on its own, so both
// versions give the same bits.

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
