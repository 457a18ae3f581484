//! Trainers: they drive blocks through epochs, whatever the blocks contain.
//!
//! - [`sequential`]: SLL and `local`, block by block, each with its own optimizer;
//! - [`bp`]: end-to-end backpropagation through the same blocks;
//! - [`pipeline`]: the local step with blocks grouped into concurrent stages;
//! - `distributed` (feature `mpi`): the same with one stage per MPI rank.
//!
//! [`progress`] is what their steps report to. The whole training run behind `sll
//! train` (epochs, evaluation, the run directory, checkpoints) is [`crate::run`].

pub mod bp;
#[cfg(feature = "mpi")]
pub mod distributed;
pub mod fused_adam;
pub mod optim;
pub mod pipeline;
pub mod progress;
pub mod sequential;
pub mod tensor_optim;

use crate::config::{Config, Method};
use crate::data::{self, Dataset};
use crate::learner::Model;
use crate::rules::terms::BlockLoss;
use anyhow::{bail, Result};
use optim::{LrSchedule, Optimizer};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Loads the configured dataset, applies `train_subset`/`test_subset`, and standardises
/// both splits with the training set's per-channel statistics (recording them in
/// `config.data.mean/std` so that evaluation reuses exactly the same numbers). The
/// training split stays on the CPU (the batch loader reads it there); the test split
/// goes to `device`.
///
/// For `imagefolder`, whose training images are stored larger than the test images,
/// an unset `data.augment.crop_size` resolves to the image size (random crops).
pub fn prepare_data(config: &mut Config, device: Device) -> Result<(Dataset, Dataset)> {
    let d = &mut config.data;
    let image_size = (d.image_size > 0).then_some(d.image_size);
    let (mut train, mut test) = data::load_sized(&d.dataset, Path::new(&d.dir), image_size)?;
    if d.dataset == "imagefolder" {
        if d.image_size == 0 {
            d.image_size = data::imagefolder::DEFAULT_IMAGE_SIZE;
        }
        d.augment.crop_size.get_or_insert(d.image_size);
    }
    if d.train_subset > 0 {
        train = train.take(d.train_subset);
    }
    if d.test_subset > 0 {
        test = test.take(d.test_subset);
    }
    if d.normalize && d.mean.is_empty() {
        let (mean, std) = train.channel_stats();
        d.mean = Vec::<f64>::try_from(&mean.to_kind(Kind::Double))?;
        d.std = Vec::<f64>::try_from(&std.to_kind(Kind::Double))?;
    }
    let prepare = |ds: Dataset, device: Device| -> Result<Dataset> {
        let images = if d.normalize {
            standardise(&ds.images, &d.mean, &d.std)?
        } else {
            ds.images
        };
        Ok(Dataset {
            images: images.to_device(device),
            labels: ds.labels.to_device(device),
            classes: ds.classes,
        })
    };
    Ok((prepare(train, Device::Cpu)?, prepare(test, device)?))
}

/// `images` standardised per channel with `mean` and `std` (one entry per channel).
pub(crate) fn standardise(images: &Tensor, mean: &[f64], std: &[f64]) -> Result<Tensor> {
    let channels = images.size()[1] as usize;
    if mean.len() != channels {
        bail!(
            "config key `data.mean` has {} entries but the images have {channels} channels",
            mean.len()
        );
    }
    let shape = [1, channels as i64, 1, 1];
    let mean = Tensor::from_slice(mean).to_kind(Kind::Float).reshape(shape);
    let std = Tensor::from_slice(std).to_kind(Kind::Float).reshape(shape);
    Ok((images - mean) / std)
}

/// Shape of one example of `data` ([C, H, W]).
pub fn input_shape(data: &Dataset) -> [i64; 3] {
    let s = data.images.size();
    [s[1], s[2], s[3]]
}

/// Sets libtorch's global state for a run: intra-op threads, flushing of subnormal
/// numbers and the seed.
pub fn init_runtime(config: &Config) {
    if config.train.threads > 0 {
        tch::set_num_threads(config.train.threads as i32);
    }
    crate::denormals::apply(config.train.flush_denormals);
    tch::manual_seed(config.train.seed as i64);
}

/// The optimizers of a method: one per block for `sll`/`local`, one over every
/// parameter for `bp`, all on `schedule`.
pub fn build_optimizers(config: &Config, model: &Model, schedule: &LrSchedule) -> Result<Vec<Optimizer>> {
    let blocks = 0..model.network.len();
    match config.train.method {
        Method::Bp => {
            let params: Vec<Tensor> = blocks.flat_map(|i| model.network.trainable(i)).collect();
            Ok(vec![Optimizer::new(&config.optim, &params, schedule.clone())?])
        }
        _ => blocks
            .map(|i| Optimizer::new(&config.optim, &model.network.trainable(i), schedule.clone()))
            .collect(),
    }
}

/// One training step of the configured method on a minibatch; returns the loss terms.
pub fn train_step(
    method: Method,
    model: &Model,
    optimizers: &mut [Optimizer],
    x: &Tensor,
    y: &Tensor,
) -> Result<Vec<BlockLoss>> {
    match method {
        Method::Bp => bp::step(model, &mut optimizers[0], x, y),
        _ => sequential::step(model, optimizers, x, y),
    }
}

/// Trains `model` on `data` for `epochs` epochs with the optimizers and schedule of
/// `config`, in memory: the plain loop of shuffled minibatches and [`train_step`], with
/// no run directory, checkpoint, evaluation or pipeline (what `examples/` use; `sll
/// train` is [`crate::run::run`]).
pub fn fit(config: &Config, model: &Model, data: &Dataset, epochs: usize) -> Result<()> {
    let steps = data.len().div_ceil(config.data.batch_size);
    let schedule = LrSchedule::new(&config.optim, steps, steps * epochs);
    let mut optimizers = build_optimizers(config, model, &schedule)?;
    for epoch in 1..=epochs {
        for (x, y) in data::shuffled_batches(data, config.data.batch_size, config.train.seed, epoch) {
            train_step(config.train.method, model, &mut optimizers, &x, &y)?;
        }
    }
    Ok(())
}
