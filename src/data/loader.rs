//! Training batches assembled in background threads, so that the training
//! step does not wait for gathering and augmentation.
//!
//! [`LoaderData`] keeps one contiguous copy of a set's images and labels;
//! [`LoaderData::epoch`] builds the batches in the consuming thread (`workers = 0`,
//! the default: on a machine whose cores all run the step's intra-op threads, a
//! loader thread waking every step stalls them) or starts worker threads that build the batches of
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
    images: Pixels,
    /// `[N]` labels.
    labels: Arc<[i64]>,
    /// `(C, H, W)` of one example.
    shape: (usize, usize, usize),
}

/// How the pixels are held.
#[derive(Debug, Clone)]
enum Pixels {
    /// As given.
    F32(Arc<[f32]>),
    /// As 8-bit codes with, per channel, the 256 values they stand for (a quarter of
    /// the memory): used when every value of the set is one of them, bit for bit (an
    /// image set read from 8-bit files and standardised, as every built-in dataset).
    U8 {
        codes: Arc<[u8]>,
        /// `values[c * 256 + u]`.
        values: Arc<[f32]>,
    },
}

/// The value of 8-bit code `u` of channel `c` as the loaders and [`super::prepare`]
/// compute it: u / 255, then standardised with the f32 `mean` and `std` (or not).
fn code_value(u: u8, mean: Option<(f32, f32)>) -> f32 {
    let x = f32::from(u) / 255.0;
    match mean {
        Some((m, s)) => (x - m) / s,
        None => x,
    }
}

/// Examples converted at a time by [`as_codes`] (so that no f32 copy of the whole set
/// is made).
const CODE_CHUNK: i64 = 512;

/// `images` (`[N, C, H, W]` f32 on the CPU) as 8-bit codes, if every value is exactly
/// the value of a code under `stats` (per-channel mean and std, or none); `None`
/// otherwise.
fn as_codes(images: &Tensor, stats: Option<(&[f64], &[f64])>) -> Option<(Vec<u8>, Vec<f32>)> {
    let &[n, c, h, w] = images.size().as_slice() else {
        return None;
    };
    let (channels, plane) = (c as usize, (h * w) as usize);
    let mut values = Vec::with_capacity(channels * 256);
    for c in 0..channels {
        let mean = match stats {
            Some((mean, std)) => Some((*mean.get(c)? as f32, *std.get(c)? as f32)),
            None => None,
        };
        values.extend((0..=255u8).map(|u| code_value(u, mean)));
    }
    // Codes must be told apart by their values, and ordered to search them.
    let table = |c: usize| &values[c * 256..(c + 1) * 256];
    if !(0..channels).all(|c| table(c).windows(2).all(|w| w[0] < w[1])) {
        return None;
    }
    // u ≈ 255·(v·std + mean): per channel, the scale and offset of that guess.
    let (spread, centre): (Vec<f64>, Vec<f64>) = (0..channels)
        .map(|c| match stats {
            Some((mean, std)) => (255.0 * std[c], 255.0 * mean[c]),
            None => (255.0, 0.0),
        })
        .unzip();
    let mut codes = Vec::with_capacity(images.numel());
    for start in (0..n).step_by(CODE_CHUNK as usize) {
        let chunk = images.narrow(0, start, CODE_CHUNK.min(n - start)).flatten(0, -1);
        for (i, &v) in Vec::<f32>::try_from(chunk).ok()?.iter().enumerate() {
            let c = (i / plane) % channels;
            let t = table(c);
            // The code whose value this is: guessed by inverting the standardisation,
            // searched for when the guess misses; kept only if exactly equal.
            let guess = (f64::from(v) * spread[c] + centre[c]).round().clamp(0.0, 255.0) as usize;
            let u = if t[guess] == v {
                guess
            } else {
                t.binary_search_by(|x| x.total_cmp(&v)).ok()?
            };
            codes.push(u as u8);
        }
    }
    Some((codes, values))
}

/// One epoch of batches from [`LoaderData::epoch`]: `(images [B, C, H', W']`
/// `Float, labels [B] Int64)` on the CPU, `H'`×`W'` being the augmentation's
/// output size. The last batch is smaller when the batch size does not divide
/// the length.
pub struct EpochBatches {
    /// The batches' builder: this thread or worker threads.
    source: Source,
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
    /// `[N, C, H, W]` or the counts differ. Images are held as given.
    pub fn new(ds: &Dataset) -> Result<LoaderData> {
        Self::build(ds, None)
    }

    /// [`Self::new`] for a set read from 8-bit images and standardised with `stats`
    /// (per-channel mean and std, as [`super::prepare`] records them; `None`: not
    /// standardised): held as 8-bit codes, a quarter of the memory, when every value
    /// is exactly a code's (the batches are then the same, bit for bit); as given
    /// otherwise.
    pub fn compact(ds: &Dataset, stats: Option<(&[f64], &[f64])>) -> Result<LoaderData> {
        Self::build(ds, Some(stats))
    }

    /// The buffers of `ds`: as 8-bit codes under `coding`'s statistics where they fit
    /// (`None`: as given).
    #[allow(clippy::option_option)]
    fn build(ds: &Dataset, coding: Option<Option<(&[f64], &[f64])>>) -> Result<LoaderData> {
        let size = ds.images.size();
        let &[n, c, h, w] = size.as_slice() else {
            bail!("loader: expected images of shape [N, C, H, W], got {size:?}");
        };
        if n as usize != ds.len() {
            bail!("loader: {n} images for {} labels", ds.len());
        }
        let images = ds.images.to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
        let labels = Vec::<i64>::try_from(ds.labels.to_device(Device::Cpu).to_kind(Kind::Int64))?;
        let images = match coding.and_then(|stats| as_codes(&images, stats)) {
            Some((codes, values)) => Pixels::U8 {
                codes: codes.into(),
                values: values.into(),
            },
            None => Pixels::F32(Vec::<f32>::try_from(images.flatten(0, -1))?.into()),
        };
        Ok(LoaderData {
            images,
            labels: labels.into(),
            shape: (c as usize, h as usize, w as usize),
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Bytes per pixel value held: 1 (8-bit codes) or 4 (f32).
    pub fn bytes_per_value(&self) -> usize {
        match self.images {
            Pixels::F32(_) => 4,
            Pixels::U8 { .. } => 1,
        }
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Start `workers` threads producing the batches of epoch
    /// `epoch`: examples visited in the same permutation as
    /// [`super::shuffled_batches`] with the same `seed` and `epoch`, each
    /// augmented by `augment` with its generator from [`Augment::rng`]. A
    /// `batch_size` of 0 is treated as 1. The result is identical whatever
    /// the number of workers (0: built by the consuming thread as it asks for
    /// them, no thread started); with `augment` off it equals
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
        let (_, h, w) = self.shape;
        let (oh, ow) = augment.output_size(h, w)?;
        let batch_size = batch_size.max(1);
        let order: Arc<[i64]> = epoch_order(self.len(), seed, epoch).into();
        let batches = self.len().div_ceil(batch_size);
        let first = first.min(batches);
        let plan = EpochPlan {
            data: self.clone(),
            order,
            batch_size,
            seed,
            epoch,
            augment,
            output: (oh, ow),
        };
        if workers == 0 {
            return Ok(EpochBatches {
                source: Source::Inline(plan),
                next: first,
                first,
                batches,
            });
        }
        let workers = workers.min((batches - first).max(1));
        let plan = Arc::new(plan);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for worker in 0..workers {
            let (tx, rx) = sync_channel(AHEAD_PER_WORKER);
            let plan = plan.clone();
            handles.push(std::thread::spawn(move || {
                for batch in (first + worker..batches).step_by(workers) {
                    // The consumer hung up (the iterator was dropped): stop.
                    if tx.send(plan.batch(batch)).is_err() {
                        return;
                    }
                }
            }));
            receivers.push(rx);
        }
        Ok(EpochBatches {
            source: Source::Threads {
                receivers,
                workers: handles,
            },
            next: first,
            first,
            batches,
        })
    }
}

/// What builds the batches of one epoch.
struct EpochPlan {
    data: LoaderData,
    /// The epoch's permutation of the examples.
    order: Arc<[i64]>,
    batch_size: usize,
    seed: u64,
    epoch: usize,
    augment: Augment,
    /// (H', W') of the augmented images.
    output: (usize, usize),
}

impl EpochPlan {
    /// Batch `batch` (0-based) of the epoch: its examples gathered and augmented.
    fn batch(&self, batch: usize) -> (Tensor, Tensor) {
        let (c, h, w) = self.data.shape;
        let (oh, ow) = self.output;
        let example = c * h * w;
        let out_example = c * oh * ow;
        let order = &self.order;
        let ids = &order[batch * self.batch_size..((batch + 1) * self.batch_size).min(order.len())];
        let mut images = vec![0f32; ids.len() * out_example];
        let mut labels = Vec::with_capacity(ids.len());
        let mut decoded = vec![];
        for (position, (&id, out)) in ids.iter().zip(images.chunks_exact_mut(out_example)).enumerate() {
            let id = id as usize;
            let src: &[f32] = match &self.data.images {
                Pixels::F32(images) => &images[id * example..(id + 1) * example],
                Pixels::U8 { codes, values } => {
                    let plane = h * w;
                    decoded.clear();
                    decoded.extend(
                        codes[id * example..(id + 1) * example]
                            .iter()
                            .enumerate()
                            .map(|(i, &u)| values[(i / plane) * 256 + usize::from(u)]),
                    );
                    &decoded
                }
            };
            if self.augment.is_off() {
                out.copy_from_slice(src);
            } else {
                let mut rng = Augment::rng(self.seed, self.epoch, batch, position);
                self.augment.apply(src, (c, h, w), out, &mut rng);
            }
            labels.push(self.data.labels[id]);
        }
        let b = ids.len() as i64;
        let images = Tensor::from_slice(&images).view([b, c as i64, oh as i64, ow as i64]);
        (images, Tensor::from_slice(&labels))
    }
}

/// Where an epoch's batches come from.
enum Source {
    /// Built by the consumer's own thread as it asks for them (`workers = 0`).
    Inline(EpochPlan),
    /// Built ahead by worker threads; batch `i` from worker `i % workers`.
    Threads {
        /// One channel per worker.
        receivers: Vec<Receiver<(Tensor, Tensor)>>,
        /// The worker threads, joined on drop.
        workers: Vec<JoinHandle<()>>,
    },
}

impl Iterator for EpochBatches {
    type Item = (Tensor, Tensor);

    fn next(&mut self) -> Option<Self::Item> {
        if self.next >= self.batches {
            return None;
        }
        let (receivers, workers) = match &mut self.source {
            Source::Inline(plan) => {
                let batch = plan.batch(self.next);
                self.next += 1;
                return Some(batch);
            }
            Source::Threads { receivers, workers } => (receivers, workers),
        };
        let worker = (self.next - self.first) % receivers.len();
        match receivers[worker].recv() {
            Ok(batch) => {
                self.next += 1;
                Some(batch)
            }
            // The worker ended before sending all its batches: it panicked;
            // pass its panic on rather than cutting the epoch short.
            Err(_) => {
                let panic = workers.remove(worker).join().err();
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
        if let Source::Threads { receivers, workers } = &mut self.source {
            // Hanging up makes every blocked or later `send` fail, so each worker
            // returns after at most the batch it is building.
            receivers.clear();
            for worker in workers.drain(..) {
                // A worker's panic was already passed on by `next` or, if the
                // epoch was abandoned, no longer matters.
                let _ = worker.join();
            }
        }
    }
}
