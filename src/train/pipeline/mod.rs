//! The block-local step as a pipeline of threads (`train.pipeline = "threads"`).
//!
//! SLL's blocks never wait for a backward pass: block i needs only the detached
//! (h_{i-1}, log q_{i-1}) and the labels. So the blocks are grouped into stages of
//! consecutive blocks, each stage on a thread of its own with its blocks' objectives and
//! optimizers, and minibatches flow through bounded queues: while stage s trains on
//! minibatch t, stage s+1 trains on minibatch t−1. The calling thread feeds the first
//! queue from the loader (computing the block-independent priors log q_0 and log t_y).
//!
//! - **Same numbers as sequential training.** Every block sees the minibatches in the
//!   same order, with the same inputs, and draws its dropout masks from its own stream
//!   (seeded per block, counted per call), so with the same intra-op thread count the
//!   weights after each epoch are bit-identical to [`super::sequential`]'s. Nothing in
//!   the step of an MLP, CNN or ResNet block draws from libtorch's global generator;
//!   what does (ViT's `model.dropout`, and the objective's dropout off the CPU) stays
//!   correct but is then no longer reproducible, the threads drawing in turn.
//! - **Back-pressure.** Queues hold [`QUEUE`] minibatches; a stage ahead of the next
//!   blocks on its send, so at most a few minibatches are in flight.
//! - **Shutdown.** The feeder closes the first queue after the epoch's last minibatch;
//!   each stage drains its input, closes its output, and returns. A stage that fails
//!   (a non-finite loss, an error from libtorch, a panic) returns at once and drops both
//!   of its queues: the stages after it see their input closed and stop, the stages
//!   before it (and the feeder) see their send refused and stop. The epoch's error
//!   names the failing stage and its blocks. No timeout is involved.
//! - **Epochs.** The stages are joined at the end of every epoch, so evaluation and
//!   the checkpoint see a quiescent model and are exactly the sequential ones.
//! - **Threads.** Each stage sets its own intra-op thread count (libtorch's OpenMP
//!   count, which our kernels and the fused Adam also follow, is per calling thread):
//!   `train.threads`, or the cores shared out among the stages when it is 0.

use super::optim::Optimizer;
use super::progress::EpochProgress;
use super::sequential::block_step;
use crate::config::TrainConfig;
use crate::learner::{LocalBlock, Model};
use crate::model::Block;
use crate::rules::terms::BlockLoss;
use crate::rules::LocalRule;
use anyhow::{anyhow, bail, Result};
use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use tch::{Device, Tensor};

/// Minibatches a queue between two stages holds before its sender waits.
pub const QUEUE: usize = 2;

/// How the blocks are grouped into stages and how many threads each stage uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Stages {
    /// The 0-based block indices of each stage, consecutive and covering every block.
    pub blocks: Vec<Range<usize>>,
    /// Intra-op threads of each stage.
    pub threads: usize,
    /// The device of each stage (`train.stage_devices`; empty: the model's device).
    pub devices: Vec<Device>,
    /// Each stage's share of the counted cost, in [0, 1] (empty when planned by count).
    pub shares: Vec<f64>,
}

/// One minibatch on its way through the pipeline: the output and posterior of the
/// last block it went through (detached), and what every block needs besides.
pub(super) struct Minibatch {
    pub(super) step: usize,
    pub(super) h: Tensor,
    /// What the last block's rule passed on (SLL: log q; InfoPro: the input).
    pub(super) passed: Option<Tensor>,
    pub(super) y: Tensor,
}

impl Minibatch {
    /// Moves every tensor to `device` (a stage on another GPU).
    fn move_to(&mut self, device: Device) {
        self.h = self.h.to_device(device);
        self.passed = self.passed.as_ref().map(|t| t.to_device(device));
        self.y = self.y.to_device(device);
    }
}

/// Trains `parts` (consecutive blocks, with their optimizers) on `minibatch`, which
/// leaves holding the last block's output and posterior; returns the blocks' losses.
/// `sync(i)` runs between block i's backward pass and its optimizer step.
pub(super) fn train_blocks(
    parts: &[LocalBlock<'_>],
    optimizers: &mut [Optimizer],
    minibatch: &mut Minibatch,
    sync: &dyn Fn(usize) -> Result<()>,
) -> Result<Vec<BlockLoss>> {
    let mut losses = Vec::with_capacity(parts.len());
    for (part, optimizer) in parts.iter().zip(optimizers.iter_mut()) {
        let m = &*minibatch;
        let out = block_step(*part, optimizer, &m.h, m.passed.as_ref(), &m.y, sync)?;
        losses.push(out.loss);
        (minibatch.h, minibatch.passed) = (out.h, out.passed);
    }
    Ok(losses)
}

/// One stage's share of the model: consecutive blocks with their objectives and
/// optimizers, borrowed mutably (so they may move to the stage's thread).
struct Stage<'a> {
    /// Where the stage's blocks live, when not on the feeder's device.
    device: Option<Device>,
    name: String,
    first: usize,
    blocks: &'a mut [Box<dyn Block>],
    rules: &'a mut [Box<dyn LocalRule>],
    optimizers: &'a mut [Optimizer],
    threads: usize,
    /// The arithmetic of its steps (each stage thread opens its own autocast regions).
    precision: crate::config::Precision,
}

impl Stages {
    /// The stages of `train` for a model of `blocks` blocks: `train.stages` runs of
    /// consecutive blocks (one block each when 0), as even as possible, earlier stages
    /// taking the remainder (the first blocks of a network are usually the cheaper ones).
    pub fn plan(train: &TrainConfig, blocks: usize) -> Result<Self> {
        let mut stages = Self::plan_by_cost(train, &vec![1.0; blocks])?;
        stages.shares.clear();
        Ok(stages)
    }

    /// The stages of `train` for blocks of the given costs (FLOPs of a training step,
    /// say): `train.stages` runs of consecutive blocks whose largest total cost is as
    /// small as possible (the pipeline runs at the pace of its slowest stage); among
    /// equally good splits, earlier stages take more blocks.
    pub fn plan_by_cost(train: &TrainConfig, costs: &[f64]) -> Result<Self> {
        let blocks = costs.len();
        let count = if train.stages == 0 { blocks } else { train.stages };
        if count > blocks {
            bail!(
                "config key `train.stages` = {count} exceeds the model's {blocks} blocks (a stage holds at least one block)"
            );
        }
        let ranges = balanced_ranges(costs, count);
        let total: f64 = costs.iter().sum();
        let shares = ranges
            .iter()
            .map(|r: &Range<usize>| costs[r.clone()].iter().sum::<f64>() / total.max(f64::MIN_POSITIVE))
            .collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = if train.threads > 0 {
            train.threads
        } else {
            (cores / count).max(1)
        };
        let devices = train
            .stage_devices
            .iter()
            .map(|name| crate::device::parse(name))
            .collect::<Result<Vec<_>>>()?;
        if !devices.is_empty() && devices.len() != count {
            bail!(
                "config key `train.stage_devices` lists {} devices for {count} stages (one per stage)",
                devices.len()
            );
        }
        Ok(Self {
            blocks: ranges,
            threads,
            devices,
            shares,
        })
    }

    /// Moves each stage's blocks to its device (`train.stage_devices`), before the
    /// optimizers are built; the input priors stay on the model's device.
    pub fn place(&self, model: &mut Model) {
        for (range, &device) in self.blocks.iter().zip(&self.devices) {
            for i in range.clone() {
                model.place_block(i, device);
            }
        }
    }

    /// Trains `model` for one epoch on `batches` (in order), one thread per stage;
    /// returns when every stage has finished, with the CPU seconds each thread spent
    /// (the feeder's first, then each stage's: how well the stages are balanced, what
    /// the machine's load does not change), or with the first failing stage's error
    /// once all have stopped.
    pub fn train_epoch(
        &self,
        model: &mut Model,
        optimizers: &mut [Optimizer],
        batches: impl Iterator<Item = (Tensor, Tensor)>,
        progress: &EpochProgress,
    ) -> Result<Vec<f64>> {
        let precision = model.precision;
        let parts = model.pipeline_parts();
        let input = parts.input;
        let (mut blocks, mut rules, mut optimizers) = (parts.blocks, parts.rules, optimizers);
        let (senders, receivers): (Vec<_>, Vec<_>) = self.blocks.iter().map(|_| sync_channel(QUEUE)).unzip();
        let mut senders = senders.into_iter();
        let feed: SyncSender<Minibatch> = senders.next().expect("at least one stage");
        std::thread::scope(|scope| {
            let mut handles = vec![];
            for ((number, range), receiver) in self.blocks.iter().enumerate().zip(receivers) {
                let n = range.len();
                let stage_blocks;
                let stage_rules;
                let stage_optimizers;
                (stage_blocks, blocks) = std::mem::take(&mut blocks).split_at_mut(n);
                (stage_rules, rules) = std::mem::take(&mut rules).split_at_mut(n);
                (stage_optimizers, optimizers) = std::mem::take(&mut optimizers).split_at_mut(n);
                let stage = Stage {
                    device: self.devices.get(number).copied(),
                    name: stage_name(number, range),
                    first: range.start,
                    blocks: stage_blocks,
                    rules: stage_rules,
                    optimizers: stage_optimizers,
                    threads: self.threads,
                    precision,
                };
                let sender = senders.next();
                handles.push((
                    stage.name.clone(),
                    scope.spawn(move || stage.run(receiver, sender, progress)),
                ));
            }
            let feeder_start = thread_cpu_seconds();
            for (step, (x, y)) in batches.enumerate() {
                let minibatch = Minibatch {
                    step,
                    passed: input.message(&x, true),
                    h: x,
                    y,
                };
                if feed.send(minibatch).is_err() {
                    break; // The first stage stopped: its error is reported below.
                }
            }
            drop(feed);
            let mut cpu_seconds = vec![thread_cpu_seconds() - feeder_start];
            let mut first_error = None;
            for (name, handle) in handles {
                let error = match handle.join() {
                    Ok(Ok(seconds)) => {
                        cpu_seconds.push(seconds);
                        continue;
                    }
                    Ok(Err(e)) => anyhow!("{name}: {e:#}"),
                    Err(_) => anyhow!("{name} panicked"),
                };
                first_error.get_or_insert(error);
            }
            first_error.map_or(Ok(cpu_seconds), Err)
        })
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let groups: Vec<String> = self.blocks.iter().map(block_list).collect();
        let plural = if self.threads > 1 { "s" } else { "" };
        write!(
            f,
            "pipeline of {} stages (blocks {}), {} thread{plural} each",
            self.blocks.len(),
            groups.join(" | "),
            self.threads
        )?;
        if !self.devices.is_empty() {
            let devices: Vec<String> = self.devices.iter().map(|&d| crate::device::name(d)).collect();
            write!(f, ", on {}", devices.join(" | "))?;
        }
        if self.shares.len() > 1 {
            let shares: Vec<String> = self
                .shares
                .iter()
                .map(|s| format!("{:.0} %", 100.0 * s))
                .collect();
            write!(f, "; counted FLOPs per stage {}", shares.join(" | "))?;
        }
        Ok(())
    }
}

/// `count` runs of consecutive blocks minimising the largest run's total cost; ties go
/// to splits whose earlier runs are longer. Exact (dynamic programming over split
/// points), O(count · blocks²).
pub fn balanced_ranges(costs: &[f64], count: usize) -> Vec<Range<usize>> {
    let n = costs.len();
    let count = count.clamp(1, n.max(1));
    let prefix: Vec<f64> = std::iter::once(0.0)
        .chain(costs.iter().scan(0.0, |s, &c| {
            *s += c;
            Some(*s)
        }))
        .collect();
    let cost = |a: usize, b: usize| prefix[b] - prefix[a];
    // best[k][i]: the smallest largest cost of splitting blocks i.. into k runs, and
    // where the first of those runs ends.
    let mut best = vec![vec![(f64::INFINITY, n); n + 1]; count + 1];
    best[0][n] = (0.0, n);
    for k in 1..=count {
        for i in (0..n).rev() {
            // The first run is i..j; at least k − 1 blocks stay for the other runs.
            for j in (i + 1..=n + 1 - k).rev() {
                let rest = best[k - 1][j].0;
                if rest.is_infinite() {
                    continue;
                }
                let worst = cost(i, j).max(rest);
                // Longest first run among ties (j descending, strict improvement only),
                // with a relative tolerance for rounding.
                if worst < best[k][i].0 * (1.0 - 1e-12) {
                    best[k][i] = (worst, j);
                }
            }
        }
    }
    let mut ranges = vec![];
    let mut i = 0;
    for k in (1..=count).rev() {
        let j = best[k][i].1;
        ranges.push(i..j);
        i = j;
    }
    ranges
}

/// `stage 2 (blocks 3–4)`: how errors name a stage.
pub(super) fn stage_name(number: usize, blocks: &Range<usize>) -> String {
    let plural = if blocks.len() > 1 { "s" } else { "" };
    format!("stage {} (block{plural} {})", number + 1, block_list(blocks))
}

/// 1-based block numbers of a range: `3` or `3–4`.
fn block_list(blocks: &Range<usize>) -> String {
    if blocks.len() == 1 {
        format!("{}", blocks.start + 1)
    } else {
        format!("{}–{}", blocks.start + 1, blocks.end)
    }
}

impl Stage<'_> {
    /// Trains this stage's blocks on every minibatch of `input`, in arrival order, and
    /// passes each on to `output` (the last stage has none). Returns the thread's CPU
    /// seconds when `input` is closed and drained, or `output` is refused (a later stage
    /// stopped), or the first error; the queues close when it returns.
    fn run(
        self,
        input: Receiver<Minibatch>,
        output: Option<SyncSender<Minibatch>>,
        progress: &EpochProgress,
    ) -> Result<f64> {
        let start = thread_cpu_seconds();
        tch::set_num_threads(self.threads as i32);
        let parts = self.blocks.iter().zip(self.rules.iter());
        let parts: Vec<LocalBlock<'_>> = parts
            .enumerate()
            .map(|(j, (block, rule))| {
                LocalBlock::new(self.first + j, block.as_ref(), rule.as_ref(), self.precision)
            })
            .collect();
        for mut minibatch in input {
            if let Some(device) = self.device {
                minibatch.move_to(device);
            }
            let losses = train_blocks(&parts, self.optimizers, &mut minibatch, &|_| Ok(()))?;
            progress.record(minibatch.step, &losses, output.is_none())?;
            if let Some(output) = &output {
                if output.send(minibatch).is_err() {
                    break; // A later stage stopped: its error is reported.
                }
            }
        }
        Ok(thread_cpu_seconds() - start)
    }
}

/// CPU seconds the calling thread has run (not counting time it waited or was
/// preempted).
pub fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to; the clock id is a constant.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) } == 0;
    if ok {
        t.tv_sec as f64 + 1e-9 * t.tv_nsec as f64
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests;
