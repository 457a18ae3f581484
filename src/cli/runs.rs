//! Options of the commands that read finished run directories: `sll eval`, `sll
//! predict` and `sll report`.

use crate::learner::Evaluation;
use crate::predict::Inputs;
use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

/// `sll eval` options.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Run directory written by `sll train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Data folder, if not the one recorded in the run's config.
    #[arg(long)]
    pub data_dir: Option<String>,
}

/// `sll predict` options.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Run directory written by `sll train`.
    #[arg(long)]
    pub run: PathBuf,
    /// Image files to classify (PNG or JPEG; centre-cropped to a square and resized to
    /// the run's input, grey-scale for MNIST-like runs).
    pub files: Vec<PathBuf>,
    /// Classify the first `--first` examples of this split of the run's dataset instead
    /// (`test` or `train`).
    #[arg(long, conflicts_with = "files")]
    pub split: Option<String>,
    /// Examples of `--split` to classify.
    #[arg(long, default_value_t = 10, requires = "split")]
    pub first: usize,
    /// Classes to print per input, most probable first.
    #[arg(long, default_value_t = 3)]
    pub top: usize,
    /// One JSON object per input instead of a line of text.
    #[arg(long)]
    pub json: bool,
    /// Data folder, if not the one recorded in the run's config (for `--split`, and
    /// an image folder's class names).
    #[arg(long)]
    pub data_dir: Option<String>,
}

/// `sll report` options.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directories written by `sll train`.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Accuracy thresholds in percent, comma-separated [default: the three highest of
    /// 50,60,70,80,85,90,95,97,98,99 that some run reached].
    #[arg(long, value_delimiter = ',')]
    pub thresholds: Vec<f64>,
    /// Also draw the learning curves (accuracy by epoch and by wall time) into this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also draw each run's test accuracy against its counted training FLOPs per
    /// example into this PNG.
    #[arg(long)]
    pub flops_plot: Option<PathBuf>,
}

/// `sll eval` (see [`crate::eval::evaluate_run`]).
pub fn eval_command(args: &EvalArgs) -> Result<Evaluation> {
    crate::eval::evaluate_run(&args.run, args.data_dir.as_deref())
}

impl PredictArgs {
    /// What to classify: the files, or the first `--first` examples of `--split`.
    pub(super) fn inputs(&self) -> Result<Inputs> {
        match &self.split {
            Some(split) => Ok(Inputs::Split {
                split: split.clone(),
                first: self.first,
            }),
            None if self.files.is_empty() => bail!("give image files to classify, or --split test|train"),
            None => Ok(Inputs::Files(self.files.clone())),
        }
    }
}
