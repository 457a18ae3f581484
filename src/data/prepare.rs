//! A run's data made ready: loaded, cut to the configured subsets, standardised with
//! the training set's statistics (recorded in the config), and placed on devices.

use super::{DataConfig, Dataset};
use anyhow::{bail, Result};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Loads the configured dataset, applies `train_subset`/`test_subset`, and standardises
/// both splits with the training set's per-channel statistics (recording them in
/// `d.mean` and `d.std` so that evaluation reuses exactly the same numbers). The
/// training split stays on the CPU (the batch loader reads it there); the test split
/// goes to `device`.
///
/// For `imagefolder`, whose training images are stored larger than the test images,
/// an unset `data.augment.crop_size` resolves to the image size (random crops).
pub fn prepare(d: &mut DataConfig, device: Device) -> Result<(Dataset, Dataset)> {
    let image_size = (d.image_size > 0).then_some(d.image_size);
    d.skipped.clear();
    let (mut train, mut test) = super::load_with(
        &d.dataset,
        Path::new(&d.dir),
        image_size,
        d.bad_files,
        &mut d.skipped,
    )?;
    if let Some(first) = d.skipped.first() {
        eprintln!(
            "warning: data.bad_files = \"skip\": left out {} file(s) that do not decode; the first: {first}",
            d.skipped.len()
        );
    }
    if d.dataset == "imagefolder" {
        if d.image_size == 0 {
            d.image_size = super::imagefolder::DEFAULT_IMAGE_SIZE;
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
            // In place: the same values as `standardise`, without a second copy of the set.
            let mut images = ds.images;
            standardise_in_place(&mut images, &d.mean, &d.std)?;
            images
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
pub fn standardise(images: &Tensor, mean: &[f64], std: &[f64]) -> Result<Tensor> {
    let (mean, std) = channel_tensors(images, mean, std)?;
    Ok((images - mean) / std)
}

/// [`standardise`] in place (the same values).
pub fn standardise_in_place(images: &mut Tensor, mean: &[f64], std: &[f64]) -> Result<()> {
    let (mean, std) = channel_tensors(images, mean, std)?;
    let _ = images.g_sub_(&mean).g_div_(&std);
    Ok(())
}

/// `mean` and `std` as f32 tensors broadcasting over `images`' channels.
fn channel_tensors(images: &Tensor, mean: &[f64], std: &[f64]) -> Result<(Tensor, Tensor)> {
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
    Ok((mean, std))
}

/// Shape of one example of `data` ([C, H, W]).
pub fn input_shape(data: &Dataset) -> [i64; 3] {
    let s = data.images.size();
    [s[1], s[2], s[3]]
}
