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
pub mod interrupt;
pub mod model;
pub mod optim;
pub mod pipeline;
pub mod sequential;
pub mod state;
pub mod tensor_optim;

use crate::checkpoint;
use crate::config::{Config, Method, Pipeline};
use crate::data::{self, loader::LoaderData, Dataset};
use crate::report::{self, EpochMetrics, RunDir, RunStatus, Summary};
use anyhow::{anyhow, bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use model::{Evaluation, Model};
use optim::{LrSchedule, Optimizer};
use state::Progress;
use std::cell::Cell;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// Named loss terms, in the rule's order (`prediction` first); written to JSON as an
/// object `{"prediction": …, "divergence": …}` (so earlier runs' files still read).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Terms(pub Vec<(String, f64)>);

impl Terms {
    /// The value of term `name`, if present.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The sum of every term.
    pub fn sum(&self) -> f64 {
        self.0.iter().map(|(_, v)| v).sum()
    }

    /// Every term divided by `n` (means from sums).
    pub fn divided(&self, n: f64) -> Terms {
        Terms(self.0.iter().map(|(k, v)| (k.clone(), v / n)).collect())
    }

    /// Adds `other` term by term (a name seen for the first time is appended).
    pub fn add(&mut self, other: &Terms) {
        for (name, value) in &other.0 {
            match self.0.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => *v += value,
                None => self.0.push((name.clone(), *value)),
            }
        }
    }

    /// `name value` pairs in short form (`ce 0.123 db 0.456`).
    pub fn short(&self, digits: usize) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{} {v:.digits$}", short_name(n)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The short name of a loss term in progress lines: `ce`, `db`, `rec`, `sim`.
pub fn short_name(term: &str) -> &str {
    match term {
        "prediction" => "ce",
        "divergence" => "db",
        "reconstruction" => "rec",
        "similarity" => "sim",
        other => other,
    }
}

impl serde::Serialize for Terms {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> serde::Deserialize<'de> for Terms {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Terms;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("named loss terms")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Terms, A::Error> {
                let mut terms = vec![];
                while let Some((k, v)) = map.next_entry::<String, f64>()? {
                    terms.push((k, v));
                }
                Ok(Terms(terms))
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// The loss terms of one block on one minibatch (or their sums), read back as numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BlockLoss {
    /// 0-based block index.
    pub block: usize,
    /// The rule's terms (unweighted).
    #[serde(flatten)]
    pub terms: Terms,
}

impl BlockLoss {
    /// Reads the scalar `terms` named `names` of block `block`.
    pub fn read(block: usize, names: &[&str], terms: &[Tensor]) -> Self {
        Self {
            block,
            terms: Terms(
                names
                    .iter()
                    .zip(terms)
                    .map(|(n, t)| (n.to_string(), t.double_value(&[])))
                    .collect(),
            ),
        }
    }

    /// The term `prediction` (the head's cross-entropy; 0 if absent).
    pub fn prediction(&self) -> f64 {
        self.terms.get("prediction").unwrap_or(0.0)
    }

    fn is_finite(&self) -> bool {
        self.terms.0.iter().all(|(_, v)| v.is_finite())
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
/// train` is [`run`]).
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

/// How the blocks of a run are scheduled.
enum Schedule {
    Sequential,
    Threads(pipeline::Stages),
    #[cfg(feature = "mpi")]
    Mpi(distributed::MpiPipeline),
}

impl Schedule {
    fn plan(config: &Config, model: &Model) -> Result<Self> {
        Ok(match config.train.pipeline {
            Pipeline::None => Self::Sequential,
            Pipeline::Threads => Self::Threads(pipeline::Stages::plan_by_cost(&config.train, &model.block_costs())?),
            #[cfg(feature = "mpi")]
            Pipeline::Mpi => {
                let mpi = distributed::MpiPipeline::init(&config.train, model.network.len())?;
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

    /// The pipeline this schedule runs.
    fn kind(&self) -> Pipeline {
        match self {
            Self::Sequential => Pipeline::None,
            Self::Threads(_) => Pipeline::Threads,
            #[cfg(feature = "mpi")]
            Self::Mpi(_) => Pipeline::Mpi,
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

/// Trains `config` into the run directory `out` (a new or empty folder) and returns its
/// summary.
///
/// After every epoch: test evaluation, the resumable state ([`state`]), the checkpoint
/// and the epoch's line in `metrics.jsonl`, in that order and each written atomically,
/// so a failure or a kill later loses nothing already written and `--resume` continues
/// from the last state. A non-finite or exploding loss (the divergence guard,
/// `train.divergence_factor`) stops the run with an error that names the block, the
/// epoch and the step (and the stage, in a pipeline). With `train.pipeline = "threads"`
/// the epoch's steps run in [`pipeline`] stages; evaluation and checkpoints are the
/// same either way.
pub fn run(config: Config, out: &Path) -> Result<Summary> {
    match run_rank(config, out)? {
        Some(summary) => Ok(summary),
        None => bail!("this process is an MPI rank > 0: rank 0 holds the summary"),
    }
}

/// [`run`] for any process of a run: `None` on MPI ranks other than 0 (which train
/// their stage and leave the run directory to rank 0). An error on an MPI rank stops
/// every rank of the job, after printing it with the rank named.
pub fn run_rank(config: Config, out: &Path) -> Result<Option<Summary>> {
    start(config, out, false)
}

/// Continues the run in `dir` from its last resumable state (from its start when it
/// was stopped before its first one), reading the run's own `config.toml`; `epochs`
/// extends (or restates) its length. With the same build and threads the result is
/// bit-identical to a run that was never interrupted (with `epochs` changed, the
/// learning-rate schedule changes with it). A finished run is returned as it is.
pub fn resume(dir: &Path, epochs: Option<usize>) -> Result<Summary> {
    let run_dir = RunDir::reopen(dir)?;
    let config_path = dir.join("config.toml");
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| anyhow!("cannot read {}: {e}", config_path.display()))?;
    let mut config = Config::from_toml(&text, &config_path.display().to_string())?;
    if let Some(epochs) = epochs {
        config.train.epochs = epochs;
    }
    config.validate()?;
    if config.train.pipeline == Pipeline::Mpi {
        bail!(
            "--resume {}: runs of the MPI pipeline cannot be resumed (each rank holds its blocks' optimizer state); start it again, or train it with `--pipeline threads`",
            dir.display()
        );
    }
    if let Some(summary) = report::read_summary(run_dir.path()) {
        if summary.finished_all(config.train.epochs) {
            eprintln!(
                "{} finished all {} epochs already; nothing to do (give --epochs N to train it longer)",
                dir.display(),
                summary.epochs_completed
            );
            return Ok(summary);
        }
    }
    match start(config, dir, true)? {
        Some(summary) => Ok(summary),
        None => bail!("this process is an MPI rank > 0: rank 0 holds the summary"),
    }
}

/// [`run_rank`] and [`resume`]: builds data, model and schedule, then trains.
fn start(mut config: Config, out: &Path, resuming: bool) -> Result<Option<Summary>> {
    let device = crate::device::parse(&config.train.device)?;
    init_runtime(&config);
    let (train, test) = prepare_data(&mut config, device)?;
    if config.train.keep_freed_memory {
        crate::malloc::keep_freed_memory();
    }
    let mut model = Model::new(&config, train.classes, input_shape(&test), device)?;
    let schedule = Schedule::plan(&config, &model)?;
    if let Schedule::Threads(stages) = &schedule {
        stages.place(&mut model);
    }
    let result = train_epochs(config, out, resuming, model, &schedule, train, test);
    match (&schedule, result) {
        #[cfg(feature = "mpi")]
        (Schedule::Mpi(mpi), Err(e)) => mpi.abort(&e),
        (_, result) => result,
    }
}

/// The seed of libtorch's generator before step `step` (0-based) of epoch `epoch`:
/// whatever a step draws from it (ViT's `model.dropout`, dropout off the CPU) is then a
/// function of the run's seed and the step's position, so a resumed run draws it again.
fn step_seed(seed: u64, epoch: usize, step: usize) -> i64 {
    let epoch_seed = crate::objective::projection_seed(seed ^ 0x5EED_0F57_E950_0000, epoch);
    crate::objective::projection_seed(epoch_seed, step) as i64
}

/// The epochs of [`start`], once the model is built and the schedule planned.
fn train_epochs(
    config: Config,
    out: &Path,
    resuming: bool,
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
    let batch_size = config.data.batch_size;
    let steps_per_epoch = train_len.div_ceil(batch_size);
    let total_steps = steps_per_epoch * config.train.epochs;
    let lr_schedule = LrSchedule::new(&config.optim, steps_per_epoch, total_steps);
    let mut optimizers = build_optimizers(&config, &model, &lr_schedule)?;

    let mut progress = Progress::default();
    let run_dir = if root {
        let run_dir = if resuming {
            RunDir::reopen(out)?
        } else {
            RunDir::create(out)?
        };
        if resuming && run_dir.state_path().exists() {
            progress = state::load(&run_dir.state_path(), &model, &mut optimizers)?;
            if progress.epoch > config.train.epochs {
                bail!(
                    "--epochs {}: the run in {} has trained {} epochs already",
                    config.train.epochs,
                    out.display(),
                    progress.epoch
                );
            }
            // A kill between the state and the files after it: bring them level.
            if progress.step == 0 && progress.epoch > 0 {
                checkpoint::save(&model, &config, progress.epoch, &run_dir.checkpoint_path())?;
            }
        }
        run_dir.write_config(&config)?;
        run_dir.write_metrics(&progress.history)?;
        let from = match (progress.epoch, progress.step) {
            (0, 0) => String::new(),
            (e, 0) => format!(", resumed after epoch {e}"),
            (e, s) => format!(", resumed at epoch {}, step {s}", e + 1),
        };
        eprintln!(
            "training {} on {} with {} ({} blocks, {} parameters, {}{from}) -> {}",
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

    let guard = LossGuard::new(config.train.divergence_factor, progress.loss_references.clone());
    // Interrupts stop a sequential or thread-pipeline epoch after the current step; the
    // ranks of an MPI pipeline expect every minibatch, so there they end the process.
    let stoppable = !matches!(schedule.kind(), Pipeline::Mpi);
    // The summary of the run as it stands (stopped, or finished).
    let summary_now = |model: &Model, history: &[EpochMetrics], train_seconds: f64| {
        stopped_summary(&config, model, history, train_seconds, train_len, device)
    };
    let _armed = stoppable.then(interrupt::arm);
    let wall_start = Instant::now();
    let wall_before = progress.wall_seconds;
    let mut train_seconds = progress.train_seconds;
    let mut history = progress.history.clone();
    let first_epoch = progress.epoch + 1;
    for epoch in first_epoch..=config.train.epochs {
        let (first_step, earlier_sums, earlier_seconds) = if epoch == first_epoch {
            (
                progress.step,
                progress.partial_sums.clone(),
                progress.partial_seconds,
            )
        } else {
            (0, vec![], 0.0)
        };
        let kept = match &run_dir {
            Some(run_dir) if epoch > 1 => format!(
                "the checkpoint of epoch {} is kept in {}",
                epoch - 1,
                run_dir.path().display()
            ),
            _ => "no checkpoint was written yet".to_string(),
        };
        let bar = if root {
            progress_bar(steps_per_epoch, epoch, config.train.epochs)
        } else {
            ProgressBar::hidden()
        };
        bar.set_position(first_step as u64);
        let epoch_progress =
            EpochProgress::new(bar, epoch, kept, &guard).starting_at(first_step, earlier_sums);
        let learning_rate = lr_schedule.at((epoch - 1) * steps_per_epoch);
        let start = Instant::now();
        let batches = match &loader {
            Some(loader) => Some(loader.epoch_from(
                batch_size,
                config.train.seed,
                epoch,
                config.data.augment,
                config.data.workers,
                first_step,
            )?),
            None => None,
        };
        let taken = Cell::new(0usize);
        let batches = batches
            .into_iter()
            .flatten()
            .take_while(|_| !(stoppable && interrupt::requested()))
            .inspect(|_| {
                taken.set(taken.get() + 1);
                interrupt::crash_point(epoch, first_step + taken.get());
            })
            .map(|(x, y)| (x.to_device(device), y.to_device(device)));
        let trained = match schedule {
            Schedule::Sequential => batches.enumerate().try_for_each(|(i, (x, y))| {
                tch::manual_seed(step_seed(config.train.seed, epoch, first_step + i));
                let losses = train_step(config.train.method, &model, &mut optimizers, &x, &y)?;
                epoch_progress.record(i, &losses, true)
            }),
            Schedule::Threads(stages) => stages
                .train_epoch(&mut model, &mut optimizers, batches, &epoch_progress)
                .map(|_| ()),
            #[cfg(feature = "mpi")]
            Schedule::Mpi(mpi) => {
                mpi.train_epoch(&model, &mut optimizers, batches, steps_per_epoch, &epoch_progress)
            }
        };
        #[allow(unused_mut)]
        let mut sums = epoch_progress.finish();
        if let Err(e) = trained {
            if let (Some(run_dir), Some(why)) = (&run_dir, guard.tripped()) {
                let summary = summary_now(&model, &history, train_seconds);
                run_dir.write_summary(&Summary {
                    status: RunStatus::Diverged,
                    stopped: Some(why),
                    ..summary
                })?;
            }
            return Err(e);
        }
        // An MPI epoch ends when every rank has trained and sent its blocks to rank 0
        // (rank 0 itself is done as soon as rank 1 has received its last minibatch).
        #[cfg(feature = "mpi")]
        if let Schedule::Mpi(mpi) = schedule {
            mpi.gather(&model, &mut sums)?;
        }
        let seconds = earlier_seconds + start.elapsed().as_secs_f64();
        let steps_done = first_step + taken.get();
        let wall_seconds = wall_before + wall_start.elapsed().as_secs_f64();
        if stoppable && steps_done < steps_per_epoch {
            // Interrupted part-way through the epoch: keep its position.
            let Some(run_dir) = &run_dir else {
                bail!("interrupted");
            };
            progress = Progress {
                epoch: epoch - 1,
                step: steps_done,
                partial_sums: sums,
                partial_seconds: seconds,
                train_seconds,
                wall_seconds,
                loss_references: guard.references(),
                history: history.clone(),
                ..Progress::default()
            };
            state::save(&run_dir.state_path(), &model, &optimizers, &progress)?;
            let at = format!("epoch {epoch}, step {steps_done} of {steps_per_epoch}");
            return Err(interrupted(
                run_dir,
                &at,
                summary_now(&model, &history, train_seconds),
            ));
        }
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
        metrics.wall_seconds = wall_seconds;
        eprintln!("{}", metrics.one_line(config.train.epochs));
        history.push(metrics);
        progress = Progress {
            epoch,
            train_seconds,
            wall_seconds,
            loss_references: guard.references(),
            history: history.clone(),
            ..Progress::default()
        };
        state::save(&run_dir.state_path(), &model, &optimizers, &progress)?;
        checkpoint::save(&model, &config, epoch, &run_dir.checkpoint_path())?;
        run_dir.write_metrics(&history)?;
        if stoppable && interrupt::requested() && epoch < config.train.epochs {
            let at = format!("the end of epoch {epoch}");
            return Err(interrupted(
                run_dir,
                &at,
                summary_now(&model, &history, train_seconds),
            ));
        }
    }
    let Some(run_dir) = run_dir else {
        return Ok(None);
    };
    let mut summary = summary_now(&model, &history, train_seconds);
    summary.time_to_accuracy = report::compare::time_to_accuracy(&history, &report::compare::THRESHOLDS);
    run_dir.write_summary(&summary)?;
    let last = history.last().expect("at least one epoch");
    report::print_final_table(&history, &evaluation_of(last));
    Ok(Some(summary))
}

/// The evaluation an epoch's metrics recorded.
fn evaluation_of(metrics: &EpochMetrics) -> Evaluation {
    Evaluation {
        accuracy: metrics.test_accuracy,
        block_accuracy: metrics.block_test_accuracy.clone(),
        ensemble_accuracy: metrics.ensemble_test_accuracy,
    }
}

/// The summary of a run after the epochs of `history` (all of them: a finished run;
/// its accuracies are the last epoch's, 0 when none was completed).
fn stopped_summary(
    config: &Config,
    model: &Model,
    history: &[EpochMetrics],
    train_seconds: f64,
    train_len: usize,
    device: Device,
) -> Summary {
    let eval = history.last().map(evaluation_of).unwrap_or(Evaluation {
        accuracy: 0.0,
        block_accuracy: vec![None; model.network.len()],
        ensemble_accuracy: 0.0,
    });
    Summary::new(
        config,
        model,
        &eval,
        history.len(),
        train_seconds,
        train_len,
        device,
    )
}

/// Writes `summary` of a run interrupted at `at`, marked so, and returns the error that
/// ends the run, which says how to resume.
fn interrupted(run_dir: &RunDir, at: &str, summary: Summary) -> anyhow::Error {
    let why = format!("interrupted at {at}");
    let written = run_dir.write_summary(&Summary {
        status: RunStatus::Interrupted,
        stopped: Some(why.clone()),
        ..summary
    });
    match written {
        Ok(()) => anyhow!(
            "{why}; the checkpoint is in {dir}; continue with: sll train --resume {dir}",
            dir = run_dir.path().display()
        ),
        Err(e) => e.context(why),
    }
}

/// The divergence guard: a step's loss that is not finite, or above
/// `train.divergence_factor` times the block's loss on the run's first step, stops the
/// run. Shared by every stage of a pipeline; its references are part of the
/// resumable state.
pub struct LossGuard {
    factor: f64,
    references: Mutex<Vec<Option<f64>>>,
    tripped: Mutex<Option<String>>,
}

impl LossGuard {
    /// A guard with factor `factor` (0 = non-finite losses only) and the references of
    /// an earlier session (empty for a new run).
    pub fn new(factor: f64, references: Vec<Option<f64>>) -> Self {
        Self {
            factor,
            references: Mutex::new(references),
            tripped: Mutex::new(None),
        }
    }

    /// Each block's reference loss (its first step's), `None` before its first step.
    pub fn references(&self) -> Vec<Option<f64>> {
        self.references.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the guard stopped the run, once it has.
    pub fn tripped(&self) -> Option<String> {
        self.tripped.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Checks one block's loss; `Err` with the reason when it stops the run.
    fn check(&self, loss: &BlockLoss) -> std::result::Result<(), String> {
        let total = loss.terms.sum();
        let why = if !loss.is_finite() {
            Some("became non-finite".to_string())
        } else {
            let mut references = self.references.lock().unwrap_or_else(|e| e.into_inner());
            if references.len() <= loss.block {
                references.resize(loss.block + 1, None);
            }
            let reference = *references[loss.block].get_or_insert(total);
            (self.factor > 0.0 && total > self.factor * reference.max(1e-3)).then(|| {
                format!(
                    "exploded to {total:.4e}, more than train.divergence_factor = {} times its first step's {reference:.4}",
                    self.factor
                )
            })
        };
        match why {
            None => Ok(()),
            Some(why) => {
                let terms: Vec<String> = loss.terms.0.iter().map(|(n, v)| format!("{n} {v}")).collect();
                let why = format!("block {} loss {why} ({})", loss.block + 1, terms.join(", "));
                *self.tripped.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
                Err(why)
            }
        }
    }
}

/// Where the training steps of one epoch report their losses: per-block sums, the
/// progress bar, and the divergence guard. Shared by the stages of a pipeline, each
/// reporting its own blocks.
pub struct EpochProgress<'a> {
    bar: ProgressBar,
    sums: Mutex<Vec<BlockLoss>>,
    epoch: usize,
    first_step: usize,
    kept: String,
    guard: &'a LossGuard,
}

impl<'a> EpochProgress<'a> {
    /// Progress of epoch `epoch`, shown on `bar`, losses checked by `guard`; `kept`
    /// says what a failure leaves behind (named in its error).
    pub fn new(bar: ProgressBar, epoch: usize, kept: String, guard: &'a LossGuard) -> Self {
        Self {
            bar,
            sums: Mutex::new(vec![]),
            epoch,
            first_step: 0,
            kept,
            guard,
        }
    }

    /// The same for an epoch resumed after `first_step` steps whose loss sums were `sums`.
    pub fn starting_at(mut self, first_step: usize, sums: Vec<BlockLoss>) -> Self {
        self.first_step = first_step;
        self.sums = Mutex::new(sums);
        self
    }

    /// Adds the loss terms of some blocks at step `step` (0-based, counted from where
    /// this epoch's trainer started) to the sums; `completes` when they are the step's
    /// last (the bar advances). A non-finite or exploding loss is an error naming the
    /// block, epoch and step.
    pub fn record(&self, step: usize, losses: &[BlockLoss], completes: bool) -> Result<()> {
        let step = self.first_step + step;
        for loss in losses {
            if let Err(why) = self.guard.check(loss) {
                self.bar.abandon();
                bail!(
                    "{why} at epoch {}, step {}; training stopped; {} (try a lower optim.lr)",
                    self.epoch,
                    step + 1,
                    self.kept
                );
            }
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
                        block: l.block,
                        terms: Terms::default(),
                    },
                );
                at
            }
        };
        sums[at].terms.add(&l.terms);
    }
}

fn loss_message(sums: &[BlockLoss], steps: usize) -> String {
    sums.iter()
        .map(|s| format!("b{} {}", s.block + 1, s.terms.divided(steps as f64).short(3)))
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
