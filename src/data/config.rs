//! The `[data]` section.

use super::augment::Augment;
use serde::{Deserialize, Serialize};

/// Data section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset name (`mnist`, `fashion-mnist`, `cifar10`, `cifar100`, `imagefolder`).
    pub dataset: String,
    /// Folder holding `<dataset>/<official file names>`; for `imagefolder`, the root
    /// holding `train/<class>/` and `val/<class>/`.
    pub dir: String,
    /// `imagefolder`: side of the square images the network sees (0 = 64).
    pub image_size: usize,
    /// Training-time augmentation (seeded; off by default): `crop_padding`, `crop_size`,
    /// `flip`, `cutout`.
    pub augment: Augment,
    /// Background threads assembling (and augmenting) training batches; 0 = none, the
    /// training thread builds each batch as it needs it (the default: on a machine whose
    /// cores all run intra-op threads, a loader thread waking every step stalls them).
    pub workers: usize,
    /// Minibatch size for training.
    pub batch_size: usize,
    /// Minibatch size for evaluation (does not change results, only speed).
    pub eval_batch_size: usize,
    /// Standardise inputs per channel with the training set's mean and std.
    pub normalize: bool,
    /// Per-channel mean used for standardisation; filled in from the training set when empty.
    pub mean: Vec<f64>,
    /// Per-channel std used for standardisation; filled in from the training set when empty.
    pub std: Vec<f64>,
    /// Train on the first N training examples only (0 = all); for quick experiments and tests.
    pub train_subset: usize,
    /// Evaluate on the first N test examples only (0 = all).
    pub test_subset: usize,
    /// `imagefolder`: what an image that does not decode (unreadable, truncated, not an
    /// image) does: `error` (the default: an error naming the file and its class) or
    /// `skip` (left out, counted, named in the run's summary).
    pub bad_files: BadFiles,
    /// Filled in when the data is prepared: the files left out under `bad_files =
    /// "skip"`, each as `path: reason` (not part of config.toml).
    #[serde(skip)]
    pub skipped: Vec<String>,
}

/// What an image folder does with a file that does not decode.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BadFiles {
    /// Stop with an error naming the file and its class.
    #[default]
    Error,
    /// Leave the file out and count it.
    Skip,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: "mnist".into(),
            dir: "data".into(),
            image_size: 0,
            augment: Augment::default(),
            workers: 0,
            batch_size: 128,
            eval_batch_size: 1000,
            normalize: true,
            mean: vec![],
            std: vec![],
            train_subset: 0,
            test_subset: 0,
            bad_files: BadFiles::Error,
            skipped: vec![],
        }
    }
}
