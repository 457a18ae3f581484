//! The dropout-mask random stream: one mask per (seed, step), row r of it drawn from
//! its own xoshiro256++ generator seeded with (seed, step, r), so a mask does not
//! depend on how the rows are split over threads.

use multiversion::multiversion;
use rand::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use tch::Tensor;

/// The SplitMix64 finaliser: a bijection of u64 that spreads every input bit (also
/// what `projection::projection_seed` derives the per-block seeds with).
pub fn mix(mut z: u64) -> u64 {
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

// The hot loop below is compiled once more for AVX2 + FMA and picked at run time
// (`multiversion`). Rust never fuses a multiply and an add on its own, so both
// versions give the same bits.

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

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

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
}
