//! Minibatches over a loaded [`Dataset`]: in order, or shuffled by a seeded
//! permutation per epoch.

use super::Dataset;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

/// Minibatches over a dataset, as `(images, labels)` pairs: shuffled (see
/// [`shuffled_batches`]) or in order (see [`ordered_batches`]). The last batch
/// is smaller when the batch size does not divide the length.
pub struct Batches<'a> {
    /// The set batches are drawn from.
    ds: &'a Dataset,
    /// Order in which examples are visited (`Int64`, on the images' device);
    /// `None` for the natural order, served by cheap `narrow` views.
    order: Option<Tensor>,
    /// Examples per batch (at least 1).
    batch_size: i64,
    /// Position in the visiting order of the next batch's first example.
    next: i64,
    /// Number of examples.
    len: i64,
}

impl<'a> Batches<'a> {
    /// Batches of `batch_size` (at least 1) over `ds`, in `order` if given.
    fn new(ds: &'a Dataset, batch_size: usize, order: Option<Tensor>) -> Self {
        Batches {
            ds,
            order,
            batch_size: batch_size.max(1) as i64,
            next: 0,
            len: ds.len() as i64,
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.len {
            return None;
        }
        let size = self.batch_size.min(self.len - self.next);
        let batch = match &self.order {
            Some(order) => {
                let idx = order.narrow(0, self.next, size);
                (
                    self.ds.images.index_select(0, &idx),
                    self.ds.labels.index_select(0, &idx),
                )
            }
            None => (
                self.ds.images.narrow(0, self.next, size),
                self.ds.labels.narrow(0, self.next, size),
            ),
        };
        self.next += size;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = ((self.len - self.next).max(0) + self.batch_size - 1) / self.batch_size;
        (left as usize, Some(left as usize))
    }
}

impl ExactSizeIterator for Batches<'_> {}

/// Seeded minibatch iteration over `ds` for one epoch: the examples are visited
/// in a permutation drawn from `ChaCha8Rng` seeded with `seed` on stream
/// `epoch`, so a run is reproducible and each epoch has its own order. The last
/// partial batch is kept; a `batch_size` of 0 is treated as 1.
pub fn shuffled_batches(ds: &Dataset, batch_size: usize, seed: u64, epoch: usize) -> Batches<'_> {
    let order = Tensor::from_slice(&epoch_order(ds.len(), seed, epoch)).to_device(ds.images.device());
    Batches::new(ds, batch_size, Some(order))
}

/// The visiting order of epoch `epoch` over `n` examples: `0..n` shuffled by
/// `ChaCha8Rng` seeded with `seed` on stream `epoch`. Shared by
/// [`shuffled_batches`] and [`super::loader`] so that both visit the same examples.
pub(crate) fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<i64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch as u64);
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(&mut rng);
    order
}

/// In-order minibatches over `ds` (for evaluation); the last partial batch is
/// kept and a `batch_size` of 0 is treated as 1.
pub fn ordered_batches(ds: &Dataset, batch_size: usize) -> Batches<'_> {
    Batches::new(ds, batch_size, None)
}
