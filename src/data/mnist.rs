//! MNIST and Fashion-MNIST: their four IDX files under their official names (raw or
//! gzip-compressed), the SHA-256 of each, and loading them into a [`Dataset`] pair.

use super::{fetch_command_for, idx, locate, sha256_hex, Dataset};
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// One file of a dataset: its official name (without `.gz`) and the SHA-256 of
/// its decompressed bytes, which [`super::load`] and [`super::fetch::fetch`] check.
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
    /// Base URL that [`super::fetch::fetch`] downloads from by default.
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

/// The spec of the named IDX dataset; any other name is an error listing the
/// names [`super::load`] knows.
pub(crate) fn spec(name: &str) -> Result<&'static DatasetSpec> {
    SPECS.iter().find(|s| s.name == name).ok_or_else(|| {
        anyhow!(
            "unknown dataset `{name}`; known datasets: {}",
            super::known_datasets().join(", ")
        )
    })
}

/// What to tell the user to run to (re)download `spec` into `data_dir`.
fn fetch_command(spec: &DatasetSpec, data_dir: &Path) -> String {
    fetch_command_for(spec.name, data_dir)
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

/// Loads `(train, test)` of an IDX dataset.
pub(super) fn load_idx(spec: &DatasetSpec, data_dir: &Path) -> Result<(Dataset, Dataset)> {
    let [train_images, train_labels, test_images, test_labels] = &spec.files;
    let train = load_split(spec, data_dir, train_images, train_labels)?;
    let test = load_split(spec, data_dir, test_images, test_labels)?;
    Ok((train, test))
}
