//! Training-time augmentation of image batches, in plain Rust on `f32`
//! buffers (no libtorch op, so it never competes with the training step for
//! libtorch's threads): random crop with zero padding, horizontal flip and
//! cutout.
//!
//! Each example draws its random numbers from its own generator, keyed by
//! `(seed, epoch, batch index, position in batch)`, so the result does not
//! depend on which thread augments which example.

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// `ChaCha8` stream of the augmentation generators, apart from the stream
/// numbers (epochs) that the shuffling uses.
const AUGMENT_STREAM: u64 = 0x0061_7567_6d65_6e74; // "augment" in ASCII

/// Which augmentations to apply to training images; the default is none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Augment {
    /// Zero padding, in pixels, added on each side before a random crop
    /// (0 = no padding; with no `crop_size` either, no crop).
    pub crop_padding: usize,
    /// Side of the square random crop; `None` crops back to the input size
    /// (the usual "pad 4, crop 32" of CIFAR).
    pub crop_size: Option<usize>,
    /// Mirror each image left-right with probability 1/2.
    pub flip: bool,
    /// Side of the square set to 0 at a random centre (clipped at the
    /// borders); 0 = off. Applied last, on the (standardised) values, so 0 is
    /// the channel mean.
    pub cutout: usize,
}

impl Augment {
    /// Whether this changes nothing (no padding, crop, flip nor cutout).
    pub fn is_off(&self) -> bool {
        self.crop_padding == 0 && self.crop_size.is_none() && !self.flip && self.cutout == 0
    }

    /// Height and width of the output for an `h`×`w` input: the crop size if
    /// set, else the input size; an error if the crop does not fit in the
    /// padded image or is 0.
    pub fn output_size(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let Some(size) = self.crop_size else {
            return Ok((h, w));
        };
        let p = 2 * self.crop_padding;
        if size == 0 || size > h + p || size > w + p {
            bail!(
                "augmentation crop size {size} does not fit {h}x{w} images padded by {} pixels",
                self.crop_padding
            );
        }
        Ok((size, size))
    }

    /// The generator of the example at `position` in batch `batch` of epoch
    /// `epoch` of a run seeded with `seed`.
    pub fn rng(seed: u64, epoch: usize, batch: usize, position: usize) -> ChaCha8Rng {
        let mut key = [0u8; 32];
        for (chunk, v) in key
            .chunks_exact_mut(8)
            .zip([seed, epoch as u64, batch as u64, position as u64])
        {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        let mut rng = ChaCha8Rng::from_seed(key);
        rng.set_stream(AUGMENT_STREAM);
        rng
    }

    /// Augment one `[c, h, w]` image `src` into `out`, which must hold
    /// `c * oh * ow` values for `(oh, ow) = self.output_size(h, w)`, drawing
    /// from `rng` (in order: crop offsets, flip, cutout centre). Check
    /// [`Augment::output_size`] first: a crop size that does not fit is
    /// ignored here (the output keeps the input size).
    pub fn apply(&self, src: &[f32], (c, h, w): (usize, usize, usize), out: &mut [f32], rng: &mut impl Rng) {
        let (oh, ow) = self.output_size(h, w).unwrap_or((h, w));
        let p = self.crop_padding;
        // Offset of the output window in the padded image.
        let (dy, dx) = if p > 0 || (oh, ow) != (h, w) {
            (
                rng.random_range(0..=h + 2 * p - oh),
                rng.random_range(0..=w + 2 * p - ow),
            )
        } else {
            (p, p)
        };
        let flip = self.flip && rng.random_bool(0.5);
        for ch in 0..c {
            let plane = &src[ch * h * w..(ch + 1) * h * w];
            let out_plane = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
            for y in 0..oh {
                let sy = (y + dy).checked_sub(p).filter(|&sy| sy < h);
                let row = &mut out_plane[y * ow..(y + 1) * ow];
                for (x, v) in row.iter_mut().enumerate() {
                    let x = if flip { ow - 1 - x } else { x };
                    let sx = (x + dx).checked_sub(p).filter(|&sx| sx < w);
                    *v = match (sy, sx) {
                        (Some(sy), Some(sx)) => plane[sy * w + sx],
                        _ => 0.0,
                    };
                }
            }
        }
        if self.cutout > 0 {
            let (cy, cx) = (rng.random_range(0..oh), rng.random_range(0..ow));
            let half = self.cutout / 2;
            let (y0, x0) = (cy.saturating_sub(half), cx.saturating_sub(half));
            let (y1, x1) = (
                (cy + self.cutout - half).min(oh),
                (cx + self.cutout - half).min(ow),
            );
            for ch in 0..c {
                for y in y0..y1 {
                    out[ch * oh * ow + y * ow + x0..ch * oh * ow + y * ow + x1].fill(0.0);
                }
            }
        }
    }
}
