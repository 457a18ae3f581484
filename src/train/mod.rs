//! Trainers: they drive blocks through epochs, whatever the blocks contain.
//!
//! - [`sequential`]: SLL and `local`, block by block, each with its own optimizer;
//! - [`bp`]: end-to-end backpropagation through the same blocks;
//! - [`pipeline`]: the local step with blocks grouped into concurrent stages;
//! - `distributed` (feature `mpi`): the same with one stage per MPI rank.
//!
//! [`run`] is the whole training run behind `sll train`: data, model, epochs,
//! evaluation after each epoch, the run directory, the checkpoint.

pub mod bp;
#[cfg(feature = "mpi")]
pub mod distributed;
pub mod fused_adam;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod sequential;

use crate::checkpoint;
use crate::config::{Config, Method, Pipeline};
use crate::data::{self, loader::LoaderData, Dataset};
use crate::objective::LocalLoss;
use crate::report::{self, EpochMetrics, RunDir, Summary};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use model::Model;
use optim::{LrSchedule, Optimizer};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The loss terms of one block on one minibatch, read back as numbers.
#[derive(Debug, Clone, Copy)]
pub struct BlockLoss {
    /// 0-based block index.
    pub block: usize,
    /// Cross-entropy of the block's head.
    pub prediction: f64,
    /// Bhattacharyya distance to the prior (0 when off).
    pub divergence: f64,
}

impl BlockLoss {
    /// Reads the scalar terms of `loss` for block `block`.
    pub fn read(block: usize, loss: &LocalLoss) -> Self {
        Self {
            block,
            prediction: loss.prediction.double_value(&[]),
            divergence: loss.divergence.double_value(&[]),
        }
    }

    fn is_finite(&self) -> bool {
        self.prediction.is_finite() && self.divergence.is_finite()
    }
}

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

fn standardise(images: &Tensor, mean: &[f64], std: &[f64]) -> Result<Tensor> {
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

/// Sets libtorch's global state for a run: intra-op threads and the seed.
pub fn init_runtime(config: &Config) {
    if config.train.threads > 0 {
        tch::set_num_threads(config.train.threads as i32);
    }
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
        Method::Sll | Method::Local => blocks
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
        Method::Sll | Method::Local => sequential::step(model, optimizers, x, y),
    }
}

/// How the blocks of a run are scheduled.
enum Schedule {
    Sequential,
    Threads(pipeline::Stages),
    #[cfg(feature = "mpi")]
    Mpi(distributed::MpiPipeline),
}

impl Schedule {
    fn plan(config: &Config, blocks: usize) -> Result<Self> {
        Ok(match config.train.pipeline {
            Pipeline::None => Self::Sequential,
            Pipeline::Threads => Self::Threads(pipeline::Stages::plan(&config.train, blocks)?),
            #[cfg(feature = "mpi")]
            Pipeline::Mpi => {
                let mpi = distributed::MpiPipeline::init(&config.train, blocks)?;
                tch::set_num_threads(mpi.threads() as i32);
                Self::Mpi(mpi)
            }
            #[cfg(not(feature = "mpi"))]
            Pipeline::Mpi => bail!(
                "config key `train.pipeline` = \"mpi\" needs a build with the `mpi` feature (install OpenMPI, then `cargo build --release --features mpi`) started by mpirun"
            ),
        })
    }

    /// Whether this process writes the run directory (every process but MPI ranks > 0).
    fn is_root(&self) -> bool {
        match self {
            #[cfg(feature = "mpi")]
            Self::Mpi(mpi) => mpi.is_root(),
            _ => true,
        }
    }

    /// Whether this process reads the training data (all but MPI stages after the first).
    fn reads_data(&self) -> bool {
        match self {
            #[cfg(feature = "mpi")]
            Self::Mpi(mpi) => mpi.reads_data(),
            _ => true,
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Sequential => format!("{} threads", tch::get_num_threads()),
            Self::Threads(stages) => stages.to_string(),
            #[cfg(feature = "mpi")]
            Self::Mpi(mpi) => mpi.to_string(),
        }
    }
}

/// Trains `config` into the run directory `out` and returns its summary.
///
/// After every epoch: test evaluation, one line in `metrics.jsonl`, and the checkpoint
/// (written atomically), so a failure later loses nothing already written. A
/// non-finite loss stops the run with an error that names the block and the epoch
/// (and the stage, in a pipeline). With `train.pipeline = "threads"` the epoch's steps
/// run in [`pipeline`] stages; evaluation and checkpoints are the same either way.
pub fn run(config: Config, out: &Path) -> Result<Summary> {
    match run_rank(config, out)? {
        Some(summary) => Ok(summary),
        None => bail!("this process is an MPI rank > 0: rank 0 holds the summary"),
    }
}

/// [`run`] for any process of a run: `None` on MPI ranks other than 0 (which train
/// their stage and leave the run directory to rank 0). An error on an MPI rank stops
/// every rank of the job, after printing it with the rank named.
pub fn run_rank(mut config: Config, out: &Path) -> Result<Option<Summary>> {
    let device = crate::device::parse(&config.train.device)?;
    init_runtime(&config);
    let (train, test) = prepare_data(&mut config, device)?;
    let mut model = Model::new(&config, train.classes, input_shape(&test), device)?;
    let schedule = Schedule::plan(&config, model.network.len())?;
    if let Schedule::Threads(stages) = &schedule {
        stages.place(&mut model);
    }
    let result = train_epochs(config, out, model, &schedule, train, test);
    match (&schedule, result) {
        #[cfg(feature = "mpi")]
        (Schedule::Mpi(mpi), Err(e)) => mpi.abort(&e),
        (_, result) => result,
    }
}

/// The epochs of [`run_rank`], once the model is built and the schedule planned.
fn train_epochs(
    config: Config,
    out: &Path,
    mut model: Model,
    schedule: &Schedule,
    train: Dataset,
    test: Dataset,
) -> Result<Option<Summary>> {
    let device = test.images.device();
    let root = schedule.is_root();
    let train_len = train.len();
    let loader = if schedule.reads_data() {
        Some(LoaderData::new(&train)?)
    } else {
        None
    };
    drop(train);
    let run_dir = if root {
        let run_dir = RunDir::create(out)?;
        run_dir.write_config(&config)?;
        eprintln!(
            "training {} on {} with {} ({} blocks, {} parameters, {}) -> {}",
            config.preset,
            config.data.dataset,
            config.train.method,
            model.network.len(),
            model.network.parameter_count(),
            schedule.describe(),
            out.display()
        );
        Some(run_dir)
    } else {
        None
    };

    let batch_size = config.data.batch_size;
    let steps_per_epoch = train_len.div_ceil(batch_size);
    let total_steps = steps_per_epoch * config.train.epochs;
    let lr_schedule = LrSchedule::new(&config.optim, steps_per_epoch, total_steps);
    let mut optimizers = build_optimizers(&config, &model, &lr_schedule)?;

    let mut train_seconds = 0.0;
    let run_start = Instant::now();
    let mut history = vec![];
    let mut evaluation = None;
    for epoch in 1..=config.train.epochs {
        let kept = match &run_dir {
            Some(run_dir) if epoch > 1 => format!(
                "the checkpoint of epoch {} is kept in {}",
                epoch - 1,
                run_dir.checkpoint_path().display()
            ),
            _ => "no checkpoint was written yet".to_string(),
        };
        let bar = if root {
            progress_bar(steps_per_epoch, epoch, config.train.epochs)
        } else {
            ProgressBar::hidden()
        };
        let progress = EpochProgress::new(bar, epoch, kept);
        let learning_rate = optimizers[0].learning_rate();
        let start = Instant::now();
        let batches = match &loader {
            Some(loader) => Some(loader.epoch(
                batch_size,
                config.train.seed,
                epoch,
                config.data.augment,
                config.data.workers,
            )?),
            None => None,
        };
        let batches = batches
            .into_iter()
            .flatten()
            .map(|(x, y)| (x.to_device(device), y.to_device(device)));
        match schedule {
            Schedule::Sequential => {
                for (step, (x, y)) in batches.enumerate() {
                    let losses = train_step(config.train.method, &model, &mut optimizers, &x, &y)?;
                    progress.record(step, &losses, true)?;
                }
            }
            Schedule::Threads(stages) => {
                stages.train_epoch(&mut model, &mut optimizers, batches, &progress)?;
            }
            #[cfg(feature = "mpi")]
            Schedule::Mpi(mpi) => {
                mpi.train_epoch(&model, &mut optimizers, batches, steps_per_epoch, &progress)?;
            }
        }
        #[allow(unused_mut)]
        let mut sums = progress.finish();
        // An MPI epoch ends when every rank has trained and sent its blocks to rank 0
        // (rank 0 itself is done as soon as rank 1 has received its last minibatch).
        #[cfg(feature = "mpi")]
        if let Schedule::Mpi(mpi) = schedule {
            mpi.gather(&model, &mut sums)?;
        }
        let seconds = start.elapsed().as_secs_f64();
        train_seconds += seconds;
        let Some(run_dir) = &run_dir else {
            continue;
        };
        let eval = model.evaluate(&test, config.data.eval_batch_size);
        let mut metrics = EpochMetrics::new(
            epoch,
            learning_rate,
            &sums,
            steps_per_epoch,
            &eval,
            seconds,
            train_len,
        );
        metrics.wall_seconds = run_start.elapsed().as_secs_f64();
        eprintln!("{}", metrics.one_line(config.train.epochs));
        run_dir.append_metrics(&metrics)?;
        checkpoint::save(&model, &config, epoch, &run_dir.checkpoint_path())?;
        history.push(metrics);
        evaluation = Some(eval);
    }
    let Some(run_dir) = run_dir else {
        return Ok(None);
    };
    let evaluation = evaluation.expect("at least one epoch");
    let mut summary = Summary::new(&config, &model, &evaluation, train_seconds, train_len, device);
    summary.time_to_accuracy = report::compare::time_to_accuracy(&history, &report::compare::THRESHOLDS);
    run_dir.write_summary(&summary)?;
    report::print_final_table(&history, &evaluation);
    Ok(Some(summary))
}

/// Where the training steps of one epoch report their losses: per-block sums, the
/// progress bar, and the guard against non-finite losses. Shared by the stages of a
/// pipeline, each reporting its own blocks.
pub struct EpochProgress {
    bar: ProgressBar,
    sums: Mutex<Vec<BlockLoss>>,
    epoch: usize,
    kept: String,
}

impl EpochProgress {
    /// Progress of epoch `epoch`, shown on `bar`; `kept` says what a failure leaves
    /// behind (named in its error).
    pub fn new(bar: ProgressBar, epoch: usize, kept: String) -> Self {
        Self {
            bar,
            sums: Mutex::new(vec![]),
            epoch,
            kept,
        }
    }

    /// Adds the loss terms of some blocks at (0-based) step `step` to the sums;
    /// `completes` when they are the step's last (the bar advances). A non-finite loss
    /// is an error naming the block, epoch and step.
    pub fn record(&self, step: usize, losses: &[BlockLoss], completes: bool) -> Result<()> {
        if let Some(bad) = losses.iter().find(|l| !l.is_finite()) {
            self.bar.abandon();
            bail!(
                "block {} loss became non-finite (prediction {}, divergence {}) at epoch {}, step {}; training stopped; {} (try a lower optim.lr)",
                bad.block + 1,
                bad.prediction,
                bad.divergence,
                self.epoch,
                step + 1,
                self.kept
            );
        }
        let mut sums = self.sums.lock().unwrap_or_else(|e| e.into_inner());
        accumulate(&mut sums, losses);
        if completes {
            if step.is_multiple_of(20) {
                self.bar.set_message(loss_message(&sums, step + 1));
            }
            self.bar.inc(1);
        }
        Ok(())
    }

    /// Clears the bar and returns the per-block sums, in block order.
    pub fn finish(self) -> Vec<BlockLoss> {
        self.bar.finish_and_clear();
        self.sums.into_inner().unwrap_or_else(|e| e.into_inner())
    }
}

/// Adds `losses` to the sum of their blocks (a block seen for the first time gets a
/// sum of its own, kept in block order).
fn accumulate(sums: &mut Vec<BlockLoss>, losses: &[BlockLoss]) {
    for l in losses {
        let at = match sums.iter().position(|s| s.block >= l.block) {
            Some(at) if sums[at].block == l.block => at,
            position => {
                let at = position.unwrap_or(sums.len());
                sums.insert(
                    at,
                    BlockLoss {
                        prediction: 0.0,
                        divergence: 0.0,
                        ..*l
                    },
                );
                at
            }
        };
        sums[at].prediction += l.prediction;
        sums[at].divergence += l.divergence;
    }
}

fn loss_message(sums: &[BlockLoss], steps: usize) -> String {
    sums.iter()
        .map(|s| {
            format!(
                "b{} ce {:.3} db {:.3}",
                s.block + 1,
                s.prediction / steps as f64,
                s.divergence / steps as f64
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

fn progress_bar(steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:25}] {pos}/{len} {elapsed} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}
