//! Training batches assembled in background threads, so that the training
//! step does not wait for gathering and augmentation.
//!
//! [`LoaderData`] keeps one contiguous copy of a set's images and labels;
//! [`LoaderData::epoch`] starts a few worker threads that build the batches of
//! one epoch, in the order [`super::shuffled_batches`] visits, augment them
//! with [`Augment`], and hand them over as CPU tensors through bounded
//! channels. Batches are assembled in Rust and turned into tensors with a
//! single copy (`Tensor::from_slice`), so no libtorch thread pool is used.
//! Dropping the iterator stops the workers.

use super::augment::Augment;
use super::{epoch_order, Dataset};
use anyhow::{bail, Result};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use tch::{Device, Kind, Tensor};

/// Batches each worker may have ready ahead of the consumer.
const AHEAD_PER_WORKER: usize = 2;

/// A training set held as plain buffers, shareable with worker threads.
#[derive(Debug, Clone)]
pub struct LoaderData {
    /// `[N, C, H, W]` pixels, row-major.
    images: Arc<[f32]>,
    /// `[N]` labels.
    labels: Arc<[i64]>,
    /// `(C, H, W)` of one example.
    shape: (usize, usize, usize),
}

/// One epoch of batches from [`LoaderData::epoch`]: `(images [B, C, H', W']`
/// `Float, labels [B] Int64)` on the CPU, `H'`×`W'` being the augmentation's
/// output size. The last batch is smaller when the batch size does not divide
/// the length.
pub struct EpochBatches {
    /// One channel per worker; batch `i` comes from worker `i % workers`.
    receivers: Vec<Receiver<(Tensor, Tensor)>>,
    /// The worker threads, joined on drop.
    workers: Vec<JoinHandle<()>>,
    /// Index of the next batch.
    next: usize,
    /// Index of the first batch (the epoch may start part-way, in a resumed run).
    first: usize,
    /// Number of batches of the epoch.
    batches: usize,
}

impl LoaderData {
    /// Copy `ds` (images as `Float`, labels as `Int64`, moved to the CPU if
    /// needed) into contiguous buffers; an error if the images are not
    /// `[N, C, H, W]` or the counts differ.
    pub fn new(ds: &Dataset) -> Result<LoaderData> {
        let size = ds.images.size();
        let &[n, c, h, w] = size.as_slice() else {
            bail!("loader: expected images of shape [N, C, H, W], got {size:?}");
        };
        if n as usize != ds.len() {
            bail!("loader: {n} images for {} labels", ds.len());
        }
        let images = ds.images.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let images = Vec::<f32>::try_from(images.flatten(0, -1))?;
        let labels = Vec::<i64>::try_from(ds.labels.to_device(Device::Cpu).to_kind(Kind::Int64))?;
        Ok(LoaderData {
            images: images.into(),
            labels: labels.into(),
            shape: (c as usize, h as usize, w as usize),
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Start `workers` threads (at least 1) producing the batches of epoch
    /// `epoch`: examples visited in the same permutation as
    /// [`super::shuffled_batches`] with the same `seed` and `epoch`, each
    /// augmented by `augment` with its generator from [`Augment::rng`]. A
    /// `batch_size` of 0 is treated as 1. The result is identical whatever
    /// the number of workers; with `augment` off it equals
    /// [`super::shuffled_batches`]. An error if the crop does not fit the
    /// images.
    pub fn epoch(
        &self,
        batch_size: usize,
        seed: u64,
        epoch: usize,
        augment: Augment,
        workers: usize,
    ) -> Result<EpochBatches> {
        self.epoch_from(batch_size, seed, epoch, augment, workers, 0)
    }

    /// [`Self::epoch`] from batch `first` on (0-based): the same batches as the full
    /// epoch's from that one, so that a run resumed part-way through an epoch sees what
    /// it would have seen.
    pub fn epoch_from(
        &self,
        batch_size: usize,
        seed: u64,
        epoch: usize,
        augment: Augment,
        workers: usize,
        first: usize,
    ) -> Result<EpochBatches> {
        let (c, h, w) = self.shape;
        let (oh, ow) = augment.output_size(h, w)?;
        let batch_size = batch_size.max(1);
        let order: Arc<[i64]> = epoch_order(self.len(), seed, epoch).into();
        let batches = self.len().div_ceil(batch_size);
        let first = first.min(batches);
        let workers = workers.clamp(1, (batches - first).max(1));
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for worker in 0..workers {
            let (tx, rx) = sync_channel(AHEAD_PER_WORKER);
            let (data, order) = (self.clone(), order.clone());
            handles.push(std::thread::spawn(move || {
                let example = c * h * w;
                let out_example = c * oh * ow;
                for batch in (first + worker..batches).step_by(workers) {
                    let ids = &order[batch * batch_size..((batch + 1) * batch_size).min(order.len())];
                    let mut images = vec![0f32; ids.len() * out_example];
                    let mut labels = Vec::with_capacity(ids.len());
                    for (position, (&id, out)) in
                        ids.iter().zip(images.chunks_exact_mut(out_example)).enumerate()
                    {
                        let id = id as usize;
                        let src = &data.images[id * example..(id + 1) * example];
                        if augment.is_off() {
                            out.copy_from_slice(src);
                        } else {
                            let mut rng = Augment::rng(seed, epoch, batch, position);
                            augment.apply(src, (c, h, w), out, &mut rng);
                        }
                        labels.push(data.labels[id]);
                    }
                    let b = ids.len() as i64;
                    let images = Tensor::from_slice(&images).view([b, c as i64, oh as i64, ow as i64]);
                    // The consumer hung up (the iterator was dropped): stop.
                    if tx.send((images, Tensor::from_slice(&labels))).is_err() {
                        return;
                    }
                }
            }));
            receivers.push(rx);
        }
        Ok(EpochBatches {
            receivers,
            workers: handles,
            next: first,
            first,
            batches,
        })
    }
}

impl Iterator for EpochBatches {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.batches {
            return None;
        }
        let worker = (self.next - self.first) % self.receivers.len();
        match self.receivers[worker].recv() {
            Ok(batch) => {
                self.next += 1;
                Some(batch)
            }
            // The worker ended before sending all its batches: it panicked;
            // pass its panic on rather than cutting the epoch short.
            Err(_) => {
                let panic = self.workers.remove(worker).join().err();
                std::panic::resume_unwind(panic.unwrap_or_else(|| Box::new("loader worker stopped early")))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.batches - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches {}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Hanging up makes every blocked or later `send` fail, so each worker
        // returns after at most the batch it is building.
        self.receivers.clear();
        for worker in self.workers.drain(..) {
            // A worker's panic was already passed on by `next` or, if the
            // epoch was abandoned, no longer matters.
            let _ = worker.join();
        }
    }
}
