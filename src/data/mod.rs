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

pub mod augment;
pub mod cifar;
pub mod fetch;
pub mod idx;
pub mod imagefolder;
pub mod loader;

use anyhow::{anyhow, bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// One file of a dataset: its official name (without `.gz`) and the SHA-256 of
/// its decompressed bytes, which [`load`] and [`fetch::fetch`] check.
pub(crate) struct DataFile {
    /// Official file name, without the `.gz` suffix.
    pub(crate) name: &'static str,
    /// Lower-case hex SHA-256 of the decompressed file.
    pub(crate) sha256: &'static str,
}

/// Everything the crate knows about a named dataset.
pub(crate) struct DatasetSpec {
    /// Name used on the command line and as the folder name under the data dir.
    pub(crate) name: &'static str,
    /// Number of classes; every label must be below it.
    pub(crate) classes: usize,
    /// Base URL that [`fetch::fetch`] downloads from by default.
    pub(crate) mirror: &'static str,
    /// The four files, in the order train images, train labels, test images,
    /// test labels.
    pub(crate) files: [DataFile; 4],
}

/// The datasets this crate can load, with the checksums of the official files.
const SPECS: &[DatasetSpec] = &[
    DatasetSpec {
        name: "mnist",
        classes: 10,
        mirror: "https://ossci-datasets.s3.amazonaws.com/mnist/",
        files: [
            DataFile {
                name: "train-images-idx3-ubyte",
                sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            },
            DataFile {
                name: "train-labels-idx1-ubyte",
                sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            },
            DataFile {
                name: "t10k-images-idx3-ubyte",
                sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            },
            DataFile {
                name: "t10k-labels-idx1-ubyte",
                sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            },
        ],
    },
    DatasetSpec {
        name: "fashion-mnist",
        classes: 10,
        mirror: "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        files: [
            DataFile {
                name: "train-images-idx3-ubyte",
                sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            },
            DataFile {
                name: "train-labels-idx1-ubyte",
                sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            },
            DataFile {
                name: "t10k-images-idx3-ubyte",
                sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            },
            DataFile {
                name: "t10k-labels-idx1-ubyte",
                sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            },
        ],
    },
];

/// The names [`load`] accepts.
const NAMES: &[&str] = &["mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"];

/// Which datasets [`load`] knows by name ("mnist", "fashion-mnist", "cifar10",
/// "cifar100", "imagefolder"), for `--help` texts and error messages.
pub fn known_datasets() -> &'static [&'static str] {
    NAMES
}

/// The spec of the named IDX dataset; any other name is an error listing the
/// names [`load`] knows.
pub(crate) fn spec(name: &str) -> Result<&'static DatasetSpec> {
    SPECS
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow!("unknown dataset `{name}`; known datasets: {}", NAMES.join(", ")))
}

/// A checksum recorded for a file: SHA-256 where one is known, else MD5 (the
/// only value published for some archives).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Checksum {
    /// Lower-case hex SHA-256.
    Sha256(&'static str),
    /// Lower-case hex MD5.
    Md5(&'static str),
}

impl Checksum {
    /// Whether `bytes` have this checksum; the error says "<algo> mismatch
    /// (expected …, got …)".
    pub(crate) fn check(&self, bytes: &[u8]) -> Result<(), String> {
        let got = match self {
            Checksum::Sha256(_) => sha256_hex(bytes),
            Checksum::Md5(_) => format!("{:x}", md5::Md5::digest(bytes)),
        };
        self.check_hex(&got)
    }

    /// Whether `got`, the hex digest of this checksum's algorithm, matches.
    pub(crate) fn check_hex(&self, got: &str) -> Result<(), String> {
        let (algo, expected) = match self {
            Checksum::Sha256(h) => ("SHA-256", h),
            Checksum::Md5(h) => ("MD5", h),
        };
        if got == *expected {
            Ok(())
        } else {
            Err(format!("{algo} mismatch (expected {expected}, got {got})"))
        }
    }
}

/// The copy of `file` in `dir` that [`load`] reads: `<file>.gz` if present,
/// else the raw `<file>`, else none.
pub(crate) fn locate(dir: &Path, file: &str) -> Option<PathBuf> {
    [format!("{file}.gz"), file.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Lower-case hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// What to tell the user to run to (re)download `spec` into `data_dir`.
fn fetch_command(spec: &DatasetSpec, data_dir: &Path) -> String {
    fetch_command_for(spec.name, data_dir)
}

/// What to tell the user to run to (re)download dataset `name` into `data_dir`.
pub(crate) fn fetch_command_for(name: &str, data_dir: &Path) -> String {
    format!("sll fetch {name} --data-dir {}", data_dir.display())
}

/// Read `file` of `spec` from `data_dir` (the `.gz` copy, else the raw one),
/// parse it and check the SHA-256 of its decompressed bytes. Parsing comes first
/// so that a damaged file gets the more telling message ("truncated", "wrong
/// magic number") rather than a bare checksum mismatch.
fn read_idx(spec: &DatasetSpec, data_dir: &Path, file: &DataFile) -> Result<(PathBuf, idx::IdxArray)> {
    let fetch = fetch_command(spec, data_dir);
    let dir = data_dir.join(spec.name);
    let path = locate(&dir, file.name).ok_or_else(|| {
        anyhow!(
            "{}: file not found (nor {}); run `{fetch}` to download it, or copy the files there by hand",
            dir.join(format!("{}.gz", file.name)).display(),
            file.name,
        )
    })?;
    let advice = format!("the file is corrupt: delete it and run `{fetch}`");
    let bytes = idx::read_file_advising(&path, &advice)?;
    let array = idx::parse(&bytes).map_err(|e| anyhow!("{}: {e}; {advice}", path.display()))?;
    let got = sha256_hex(&bytes);
    if got != file.sha256 {
        bail!(
            "{}: SHA-256 mismatch (expected {}, got {got}); {advice}",
            path.display(),
            file.sha256,
        );
    }
    Ok((path, array))
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

/// Load one split (train or test) from its images and labels files, checking
/// the labels against the number of classes and the two counts against each
/// other.
fn load_split(
    spec: &DatasetSpec,
    data_dir: &Path,
    images_file: &DataFile,
    labels_file: &DataFile,
) -> Result<Dataset> {
    let advice = format!(
        "the file is corrupt: delete it and run `{}`",
        fetch_command(spec, data_dir)
    );
    let (images_path, images) = read_idx(spec, data_dir, images_file)?;
    let &[n, h, w] = images.dims.as_slice() else {
        bail!(
            "{}: expected images of dimensions [N, H, W], found {:?}; {advice}",
            images_path.display(),
            images.dims
        );
    };
    let (labels_path, labels) = read_idx(spec, data_dir, labels_file)?;
    idx::check_labels(&labels, spec.classes)
        .map_err(|e| anyhow!("{}: {e}; {advice}", labels_path.display()))?;
    if labels.dims[0] != n {
        bail!(
            "{}: {} labels for {n} images in {}; {advice}",
            labels_path.display(),
            labels.dims[0],
            images_path.display()
        );
    }

    let mut images = Tensor::from_slice(&images.data)
        .to_kind(Kind::Float)
        .view([n as i64, 1, h as i64, w as i64]);
    images /= 255.0;
    Ok(Dataset {
        images,
        labels: Tensor::from_slice(&labels.data).to_kind(Kind::Int64),
        classes: spec.classes as i64,
    })
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
    if name == "imagefolder" {
        let size = image_size.unwrap_or(imagefolder::DEFAULT_IMAGE_SIZE);
        return imagefolder::load_image_folder(data_dir, size);
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
        None => load_idx(spec(name)?, data_dir),
    }
}

/// Loads `(train, test)` of an IDX dataset.
fn load_idx(spec: &DatasetSpec, data_dir: &Path) -> Result<(Dataset, Dataset)> {
    let [train_images, train_labels, test_images, test_labels] = &spec.files;
    let train = load_split(spec, data_dir, train_images, train_labels)?;
    let test = load_split(spec, data_dir, test_images, test_labels)?;
    Ok((train, test))
}

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
/// [`shuffled_batches`] and [`loader`] so that both visit the same examples.
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
