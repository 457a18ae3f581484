//! One training run, behind `sll train`: data, model and schedule, then epoch after
//! epoch the trainer's steps ([`crate::train`]), evaluation, the resumable state
//! ([`state`]), the checkpoint and the epoch's line in the run directory ([`dir`],
//! [`metrics`], [`summary`]); interrupts ([`interrupt`]) and the divergence guard stop
//! it with everything written kept, and [`resume`] continues it.

pub mod dir;
pub mod interrupt;
pub mod metrics;
pub mod open;
mod schedule;
pub mod state;
pub mod summary;
pub mod time_to_accuracy;

use crate::checkpoint;
use crate::config::{Config, Pipeline};
use crate::data::{loader::LoaderData, Dataset};
use crate::learner::{Evaluation, Model};
use crate::train::progress::{progress_bar, EpochProgress, LossGuard};
use crate::train::{self, optim, train_step};
use anyhow::{anyhow, bail, Result};
use dir::RunDir;
use metrics::EpochMetrics;
use optim::LrSchedule;
use schedule::Schedule;
use state::Progress;
use std::cell::Cell;
use std::path::Path;
use std::time::Instant;
use summary::{RunStatus, Summary};
use tch::Device;

/// Trains `config` into the run directory `out` (a new or empty folder) and returns its
/// summary.
///
/// After every epoch: test evaluation, the resumable state ([`state`]), the checkpoint
/// and the epoch's line in `metrics.jsonl`, in that order and each written atomically,
/// so a failure or a kill later loses nothing already written and `--resume` continues
/// from the last state. A non-finite or exploding loss (the divergence guard,
/// `train.divergence_factor`) stops the run with an error that names the block, the
/// epoch and the step (and the stage, in a pipeline). With `train.pipeline = "threads"`
/// the epoch's steps run in [`crate::train::pipeline`] stages; evaluation and checkpoints are the
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
    if let Some(summary) = summary::read_summary(run_dir.path()) {
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
    // `auto` becomes what this machine runs natively; config.toml records the result,
    // so that resume, eval and sweeps keep the precision the run started with.
    let (precision, why) = crate::precision::resolve(config.train.precision, device)?;
    config.train.precision = precision;
    if precision == crate::config::Precision::Bf16 && !crate::precision::native_bf16(device).0 {
        eprintln!("warning: train.precision = \"bf16\" on a device without native bf16: {why}");
    }
    train::init_runtime(&config);
    let (train, test) = crate::data::prepare(&mut config.data, device)?;
    if config.train.keep_freed_memory {
        crate::malloc::keep_freed_memory();
    }
    let input = crate::data::input_shape(&test);
    let mut model = Model::new(&config, train.classes, input, device)?;
    let schedule = Schedule::plan(&mut config, &model, train.classes, input)?;
    if let Schedule::Threads(stages) = &schedule {
        stages.place(&mut model);
    }
    let opening = Opening {
        resuming,
        precision: format!("{precision} ({why})"),
    };
    let result = train_epochs(config, out, &opening, model, &schedule, train, test);
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

/// How [`start`] opens the run: resuming or not, and the precision with its reason
/// (for the start line).
struct Opening {
    resuming: bool,
    precision: String,
}

/// The epochs of [`start`], once the model is built and the schedule planned.
fn train_epochs(
    config: Config,
    out: &Path,
    opening: &Opening,
    mut model: Model,
    schedule: &Schedule,
    train: Dataset,
    test: Dataset,
) -> Result<Option<Summary>> {
    let resuming = opening.resuming;
    let device = test.images.device();
    let root = schedule.is_root();
    let train_len = train.len();
    let loader = if schedule.reads_data() {
        let d = &config.data;
        let stats = d.normalize.then_some((d.mean.as_slice(), d.std.as_slice()));
        Some(LoaderData::compact(&train, stats)?)
    } else {
        None
    };
    drop(train);
    let batch_size = config.data.batch_size;
    let steps_per_epoch = train_len.div_ceil(batch_size);
    let total_steps = steps_per_epoch * config.train.epochs;
    let lr_schedule = LrSchedule::new(&config.optim, steps_per_epoch, total_steps);
    let mut optimizers = train::build_optimizers(&config, &model, &lr_schedule)?;

    let (run_dir, mut progress) = if root {
        let (run_dir, progress) = open::open_run(&config, out, resuming, &model, &mut optimizers)?;
        eprintln!(
            "training {} on {} with {} ({} blocks, {} parameters, {}, {}{}) -> {}",
            config.preset,
            config.data.dataset,
            config.train.method,
            model.network.len(),
            model.network.parameter_count(),
            schedule.describe(),
            opening.precision,
            open::resumed_from(&progress),
            out.display()
        );
        (Some(run_dir), progress)
    } else {
        (None, Progress::default())
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
            indicatif::ProgressBar::hidden()
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
                step: steps_done,
                partial_sums: sums,
                partial_seconds: seconds,
                ..Progress::at_epoch(
                    epoch - 1,
                    train_seconds,
                    wall_seconds,
                    guard.references(),
                    history.clone(),
                )
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
        progress = Progress::at_epoch(
            epoch,
            train_seconds,
            wall_seconds,
            guard.references(),
            history.clone(),
        );
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
    summary.time_to_accuracy = time_to_accuracy::time_to_accuracy(&history, &time_to_accuracy::THRESHOLDS);
    run_dir.write_summary(&summary)?;
    let last = history.last().expect("at least one epoch");
    metrics::print_final_table(&history, &evaluation_of(last));
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
