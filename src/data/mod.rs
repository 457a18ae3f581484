//! Datasets: loading image sets from disk into tensors, checking them against
//! known checksums, iterating over them in seeded minibatches, and producing
//! augmented batches in background threads.
//!
//! On disk a dataset lives in `<data_dir>/<folder>/`, as distributed upstream:
//! - `mnist`, `fashion-mnist`: the four IDX files under their official names,
//!   raw or gzip-compressed (`.gz`), read by [`idx`];
//! - `cifar10`, `cifar100`: `cifar-10/` (resp. `cifar-100/`) holding the
//!   official binary archive or its extracted folder, read by [`cifar`];
//! - `imagefolder`: the data dir itself is an ImageNette-style root with
//!   `train/<class>/` and `val/<class>/` image folders, read by
//!   [`imagefolder`] (`sll fetch imagenette` puts one in
//!   `<data_dir>/imagenette/imagenette2-160/`).
//!
//! [`fetch`] downloads missing files; [`load`] never touches the network.
//! [`augment`] and [`loader`] turn a loaded set into augmented training batches.
//!
//! Inside: `mnist.rs` (the IDX datasets' files, checksums and loading), `files.rs`
//! (locating and checking a dataset's files) and `batches.rs` (in-order and seeded
//! shuffled minibatches); this file holds [`Dataset`] and dispatches by name.

pub mod augment;
mod batches;
pub mod cifar;
pub mod config;
pub mod fetch;
mod files;
pub mod idx;
pub mod imagefolder;
pub mod loader;
mod mnist;
pub mod prepare;
pub mod resized;

pub(crate) use batches::epoch_order;
pub use batches::{ordered_batches, shuffled_batches, Batches};
pub use config::{BadFiles, DataConfig};
pub(crate) use files::{fetch_command_for, locate, sha256_hex, Checksum};
pub(crate) use mnist::{spec, DataFile};
pub use prepare::{input_shape, prepare, standardise};

use anyhow::{anyhow, bail, Result};
use std::path::Path;
use tch::Tensor;

/// The names [`load`] accepts.
const NAMES: &[&str] = &["mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"];

/// Which datasets [`load`] knows by name ("mnist", "fashion-mnist", "cifar10",
/// "cifar100", "imagefolder"), for `--help` texts and error messages.
pub fn known_datasets() -> &'static [&'static str] {
    NAMES
}

/// A labelled image set held in memory as tensors on the CPU.
#[derive(Debug)]
pub struct Dataset {
    /// `[N, C, H, W]`, `Kind::Float`, raw pixel values scaled to `[0, 1]` (not
    /// yet standardised).
    pub images: Tensor,
    /// `[N]`, `Kind::Int64`, values in `0..classes`.
    pub labels: Tensor,
    /// Number of classes.
    pub classes: i64,
}

impl Dataset {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.size().first().map_or(0, |&n| n as usize)
    }

    /// Whether the set has no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` examples (`n` clamped to the length), copied so that
    /// in-place changes to either set leave the other alone; used by tests and
    /// by `data.train_subset` to train on a prefix of the training set.
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len()) as i64;
        Dataset {
            images: self.images.narrow(0, 0, n).copy(),
            labels: self.labels.narrow(0, 0, n).copy(),
            classes: self.classes,
        }
    }

    /// Per-channel mean and (population) standard deviation over all pixels of
    /// this set, each of shape `[C]`, for standardising inputs with statistics
    /// of the training set only.
    pub fn channel_stats(&self) -> (Tensor, Tensor) {
        let (std, mean) = self.images.std_mean_dim(&[0i64, 2, 3][..], false, false);
        (mean, std)
    }
}

/// Shape `[C, H, W]` of one example of the named dataset as the network sees it, and
/// its number of classes (`None` for `imagefolder`, whose classes are its folders),
/// without reading any file; `image_size` is the `imagefolder` side (0 = default).
pub fn example_shape(name: &str, image_size: usize) -> Result<([i64; 3], Option<i64>)> {
    if name == "imagefolder" {
        let size = if image_size == 0 {
            imagefolder::DEFAULT_IMAGE_SIZE
        } else {
            image_size
        } as i64;
        return Ok(([3, size, size], None));
    }
    match cifar::cifar_spec(name) {
        Some(c) => Ok(([3, 32, 32], Some(c.classes as i64))),
        None => spec(name).map(|s| ([1, 28, 28], Some(s.classes as i64))),
    }
}

/// The class names of the named dataset, by label: the digits, Fashion-MNIST's and
/// CIFAR-10's published names, an image folder's class folders under `data_dir/train`
/// (the order of its labels); CIFAR-100's `classes` labels as numbers.
pub fn class_names(name: &str, data_dir: &Path, classes: Option<i64>) -> Result<Vec<String>> {
    const FASHION: [&str; 10] = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ];
    const CIFAR10: [&str; 10] = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ];
    Ok(match name {
        "mnist" => (0..10).map(|d| d.to_string()).collect(),
        "fashion-mnist" => FASHION.map(String::from).to_vec(),
        "cifar10" => CIFAR10.map(String::from).to_vec(),
        "imagefolder" => imagefolder::image_folder_classes(data_dir).map_err(|e| {
            anyhow!("the class names of an image-folder run come from its data folder: {e} (give it with --data-dir)")
        })?,
        _ => (0..classes.unwrap_or(0)).map(|c| c.to_string()).collect(),
    })
}

/// Loads `(train, test)` of the named dataset (see [`known_datasets`]) from
/// `data_dir`, images of the image folder at
/// [`imagefolder::DEFAULT_IMAGE_SIZE`]; see [`load_sized`].
pub fn load(name: &str, data_dir: &Path) -> Result<(Dataset, Dataset)> {
    load_sized(name, data_dir, None)
}

/// Loads `(train, test)` of the named dataset from `data_dir`.
///
/// - `mnist`, `fashion-mnist`: `<data_dir>/<name>/<official file names>`, each
///   file raw or `.gz` (the `.gz` wins when both are present); the SHA-256 of
///   each decompressed file is checked, labels must be below the number of
///   classes and each split needs as many labels as images.
/// - `cifar10`, `cifar100`: see [`cifar::load_cifar`] (checksums verified).
/// - `imagefolder`: `data_dir` is the root; see
///   [`imagefolder::load_image_folder`], with `image_size` (default
///   [`imagefolder::DEFAULT_IMAGE_SIZE`]).
///
/// `image_size` is an error for the fixed-size datasets unless it equals
/// their size. A missing file is an error naming its path and the `sll fetch`
/// command that downloads it.
pub fn load_sized(name: &str, data_dir: &Path, image_size: Option<usize>) -> Result<(Dataset, Dataset)> {
    load_with(name, data_dir, image_size, BadFiles::Error, &mut vec![])
}

/// [`load_sized`] with the image folder's policy for files that do not decode; the
/// files left out (`skip`) are added to `skipped` as `path: reason`.
pub fn load_with(
    name: &str,
    data_dir: &Path,
    image_size: Option<usize>,
    bad_files: BadFiles,
    skipped: &mut Vec<String>,
) -> Result<(Dataset, Dataset)> {
    if name == "imagefolder" {
        let size = image_size.unwrap_or(imagefolder::DEFAULT_IMAGE_SIZE);
        return imagefolder::load_image_folder_with(data_dir, size, bad_files, skipped);
    }
    let native = match cifar::cifar_spec(name) {
        Some(_) => 32,
        None => spec(name).map(|_| 28)?,
    };
    if let Some(size) = image_size.filter(|&s| s != native) {
        bail!("dataset `{name}` has {native}x{native} images; an image size ({size}) applies only to `imagefolder`");
    }
    match cifar::cifar_spec(name) {
        Some(_) => cifar::load_cifar(name, data_dir, true),
        None => mnist::load_idx(spec(name)?, data_dir),
    }
}

/// `text` on one line: trimmed, line breaks and other control characters
/// escaped (`\n`, `\u{1b}`), since a library's message may end in a newline or
/// quote bytes of the damaged file (a tar entry's name, say).
pub(crate) fn one_line(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}
