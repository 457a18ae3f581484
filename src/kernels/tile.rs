//! Tiles: TILE rows held interleaved so that a row projection runs on TILE lanes at
//! once, and the [`RowProjection`] trait that the fused pass applies to them.

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
pub(super) fn set_lane(tile: &mut [f32], lane: usize, row: &[f32]) {
    for (t, &v) in tile.chunks_exact_mut(TILE).zip(row) {
        t[lane] = v;
    }
}

/// Reads lane `lane` of `tile` ([row.len()][TILE]) into `row`.
#[inline(always)]
pub(super) fn get_lane(tile: &[f32], lane: usize, row: &mut [f32]) {
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
