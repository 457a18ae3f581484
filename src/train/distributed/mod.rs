//! The block-local step across MPI ranks (`train.pipeline = "mpi"`, cargo feature
//! `mpi`): `mpirun -np K sll train --pipeline mpi ...` starts K copies of `sll`, and
//! rank r trains stage r+1 — a run of consecutive blocks, planned as for the thread
//! pipeline ([`Stages::plan`] with one stage per rank).
//!
//! - **Same start everywhere.** Every rank resolves the same config, builds the whole
//!   model from the seed (so the same initial weights) and trains only its own blocks.
//! - **Forward only.** Rank 0 reads the data, computes the priors that depend on no
//!   block (log q_0, log t_y), trains its blocks, and sends each minibatch's detached
//!   (h, log q, y) to rank 1 with a non-blocking send; rank r receives from r−1 in
//!   order, trains, and sends on to r+1. At most [`QUEUE`] sends are in flight per
//!   rank: a rank further ahead waits for the oldest to be received (back-pressure).
//!   Nothing ever travels backwards during an epoch.
//! - **Epoch ends.** Every rank sends its blocks' tensors (parameters and buffers)
//!   and loss sums to rank 0, which then holds the whole trained network: it
//!   evaluates it exactly as sequential training evaluates (same code, same weights),
//!   writes `metrics.jsonl` and the checkpoint (every stage's blocks in one file, so
//!   `sll eval` loads it), while the other ranks start the next epoch. Only rank 0
//!   writes the run directory and prints progress.
//! - **Failure.** A rank that fails prints its error, naming its rank, stage and
//!   blocks, and aborts the job (`MPI_Abort`): mpirun stops every rank and exits
//!   non-zero; what rank 0 already wrote stays.
//! - **Same numbers as sequential training** with the same intra-op thread count:
//!   the minibatch order is the loader's, and every block draws its dropout masks from
//!   its own stream (tested in `tests/mpi.rs`, bit for bit).
//! - **Threads.** `train.threads` per rank, or the cores of the rank's host shared out
//!   among the ranks on that host.

mod wire;

use super::optim::Optimizer;
use super::pipeline::{stage_name, train_blocks, Minibatch, Stages, QUEUE};
use super::progress::EpochProgress;
use crate::config::TrainConfig;
use crate::learner::{LocalBlock, Model};
use crate::rules::terms::BlockLoss;
use anyhow::{bail, Context, Result};
use mpi::collective::SystemOperation;
use mpi::request::{Request, StaticScope};
use mpi::topology::{Process, SimpleCommunicator};
use mpi::traits::*;
use std::collections::VecDeque;
use tch::{Device, Kind, Tensor};
use wire::{block_values, decode, decode_losses, encode, encode_losses, load_block, share};

/// This process's place in an MPI pipeline.
pub struct MpiPipeline {
    world: SimpleCommunicator,
    /// The ranks of this rank's stage (its data-parallel replicas), in replica order.
    stage_ranks: SimpleCommunicator,
    rank: usize,
    /// This rank's stage (0-based) and replica within it.
    stage: usize,
    replica: usize,
    replicas: usize,
    stages: Stages,
    /// Finalises MPI when dropped (after the communicators above).
    _universe: mpi::environment::Universe,
}

impl MpiPipeline {
    /// Initialises MPI and plans one stage per rank for a model of `blocks` blocks.
    pub fn init(train: &TrainConfig, blocks: usize) -> Result<Self> {
        let universe = mpi::initialize()
            .context("cannot initialise MPI (it was already initialised in this process)")?;
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let replicas = train.replicas.max(1);
        if !size.is_multiple_of(replicas) {
            bail!(
                "config key `train.replicas` = {replicas} does not divide the {size} ranks mpirun started (ranks = stages × replicas)"
            );
        }
        let count = size / replicas;
        if train.stages != 0 && train.stages != count {
            bail!(
                "config key `train.stages` = {} but mpirun started {size} ranks for {replicas} replica(s) per stage, i.e. {count} stages (start {} ranks, or leave train.stages at 0)",
                train.stages,
                train.stages * replicas
            );
        }
        let (stage, replica) = (rank / replicas, rank % replicas);
        let stage_ranks = world
            .split_by_color(mpi::topology::Color::with_value(stage as i32))
            .context("MPI could not form the communicator of a stage's replicas")?;
        let on_this_host = world.split_shared(0).size() as usize;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let plan = TrainConfig {
            stages: count,
            threads: if train.threads > 0 {
                train.threads
            } else {
                (cores / on_this_host).max(1)
            },
            ..train.clone()
        };
        let stages = Stages::plan(&plan, blocks)?;
        Ok(Self {
            world,
            stage_ranks,
            rank,
            stage,
            replica,
            replicas,
            stages,
            _universe: universe,
        })
    }

    /// Whether this is rank 0 (the one that writes the run directory).
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Whether this rank reads the training data (the first stage's replicas do).
    pub fn reads_data(&self) -> bool {
        self.stage == 0
    }

    /// Intra-op threads of this rank.
    pub fn threads(&self) -> usize {
        self.stages.threads
    }

    /// `rank 2, stage 3 (block 3)` (`, replica 2` with replicas): how this rank is
    /// named in errors.
    pub fn name(&self) -> String {
        let replica = if self.replicas > 1 {
            format!(", replica {}", self.replica + 1)
        } else {
            String::new()
        };
        format!(
            "rank {}, {}{replica}",
            self.rank,
            stage_name(self.stage, &self.stages.blocks[self.stage])
        )
    }

    /// The world rank of replica `replica` of stage `stage`.
    fn rank_of(&self, stage: usize, replica: usize) -> i32 {
        (stage * self.replicas + replica) as i32
    }

    /// Averages block `i`'s gradients over this stage's replicas: summed on the first
    /// replica and broadcast, so every replica steps with the same bits.
    fn average_gradients(&self, model: &Model, i: usize) -> Result<()> {
        if self.replicas == 1 {
            return Ok(());
        }
        let grads: Vec<Tensor> = model
            .network
            .trainable(i)
            .iter()
            .map(Tensor::grad)
            .filter(Tensor::defined)
            .collect();
        let flat = Tensor::cat(&grads.iter().map(|g| g.flatten(0, -1)).collect::<Vec<_>>(), 0);
        let local = Vec::<f32>::try_from(&flat.to_device(Device::Cpu))?;
        let mut total = vec![0f32; local.len()];
        let first = self.stage_ranks.process_at_rank(0);
        if self.replica == 0 {
            first.reduce_into_root(&local[..], &mut total[..], SystemOperation::sum());
        } else {
            first.reduce_into(&local[..], SystemOperation::sum());
        }
        first.broadcast_into(&mut total[..]);
        let mean = Tensor::from_slice(&total).to_device(flat.device()) / self.replicas as f64;
        let mut at = 0;
        tch::no_grad(|| {
            for mut g in grads {
                let n = g.numel() as i64;
                g.copy_(&mean.narrow(0, at, n).view_as(&g));
                at += n;
            }
        });
        Ok(())
    }

    /// Prints `error` as this rank's and stops every rank of the job (never returns).
    pub fn abort(&self, error: &anyhow::Error) -> ! {
        eprintln!("error: {}: {}", self.name(), crate::one_line_error(error));
        self.world.abort(1)
    }

    /// Trains this rank's blocks for one epoch of `steps` minibatches: the first stage
    /// takes them from `batches` (each replica its share of the rows), the others
    /// receive them from the same replica of the stage before. Returns when every
    /// minibatch has been trained and sent on (and received by the next rank).
    pub fn train_epoch(
        &self,
        model: &Model,
        optimizers: &mut [Optimizer],
        batches: impl Iterator<Item = (Tensor, Tensor)>,
        steps: usize,
        progress: &EpochProgress,
    ) -> Result<()> {
        let range = self.stages.blocks[self.stage].clone();
        let parts: Vec<LocalBlock<'_>> = range.clone().map(|i| model.local_block(i)).collect();
        let optimizers = &mut optimizers[range];
        let next = (self.stage + 1 < self.stages.blocks.len()).then(|| {
            self.world
                .process_at_rank(self.rank_of(self.stage + 1, self.replica))
        });
        let sync = |i: usize| self.average_gradients(model, i);
        let mut sends = Sends::default();
        let mut train = |mut minibatch: Minibatch| -> Result<()> {
            let losses = train_blocks(&parts, optimizers, &mut minibatch, &sync)?;
            progress.record(minibatch.step, &losses, self.is_root())?;
            if let Some(next) = &next {
                sends.push(next, encode(&minibatch));
            }
            Ok(())
        };
        if self.reads_data() {
            for (step, (x, y)) in batches.enumerate() {
                let (start, rows) = share(x.size()[0], self.replicas, self.replica);
                if rows == 0 {
                    bail!(
                        "minibatch {} has {} examples, fewer than the {} replicas",
                        step + 1,
                        x.size()[0],
                        self.replicas
                    );
                }
                let (x, y) = if self.replicas > 1 {
                    (x.narrow(0, start, rows), y.narrow(0, start, rows))
                } else {
                    (x, y)
                };
                train(Minibatch {
                    step,
                    passed: model.input_message(&x, true),
                    h: x,
                    y,
                })?;
            }
        } else {
            let from = self.rank_of(self.stage - 1, self.replica);
            let previous = self.world.process_at_rank(from);
            let device = model.network.stores[0].device();
            for _ in 0..steps {
                let (bytes, _) = previous.receive_vec::<u8>();
                let minibatch = decode(&bytes, device)
                    .with_context(|| format!("malformed minibatch from rank {from}"))?;
                train(minibatch)?;
            }
        }
        Ok(())
    }

    /// Brings every stage's blocks and loss sums to rank 0 after an epoch, from the
    /// stage's first replica: rank 0 copies the tensors into `model` and adds the sums
    /// to `sums` (kept in block order). The replicas of a stage first check that their
    /// parameters are still identical (an error if not).
    pub fn gather(&self, model: &Model, sums: &mut Vec<BlockLoss>) -> Result<()> {
        let range = self.stages.blocks[self.stage].clone();
        if self.replicas > 1 {
            let mine: f64 = range
                .clone()
                .flat_map(|i| model.network.trainable(i))
                .map(|t| t.to_kind(Kind::Double).abs().sum(Kind::Double).double_value(&[]))
                .sum();
            let (mut low, mut high) = (0.0f64, 0.0f64);
            self.stage_ranks
                .all_reduce_into(&mine, &mut low, SystemOperation::min());
            self.stage_ranks
                .all_reduce_into(&mine, &mut high, SystemOperation::max());
            if low != high {
                bail!("the replicas of this stage no longer hold the same parameters (sums of |w| from {low} to {high})");
            }
        }
        if self.replica != 0 {
            return Ok(());
        }
        if self.is_root() {
            for (stage, range) in self.stages.blocks.iter().enumerate().skip(1) {
                let rank = self.rank_of(stage, 0);
                let source = self.world.process_at_rank(rank);
                let (losses, _) = source.receive_vec::<f64>();
                sums.extend(decode_losses(model, &losses)?);
                for i in range.clone() {
                    let (values, _) = source.receive_vec::<f32>();
                    load_block(model, i, &values)
                        .with_context(|| format!("rank {rank} sent block {}", i + 1))?;
                }
            }
            sums.sort_by_key(|l| l.block);
        } else {
            let root = self.world.process_at_rank(0);
            let losses = encode_losses(sums);
            root.send(&losses[..]);
            for i in range {
                root.send(&block_values(model, i)?[..]);
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for MpiPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages = self.stages.to_string();
        let stages = stages.strip_prefix("pipeline of ").unwrap_or(&stages);
        let ranks = self.stages.blocks.len() * self.replicas;
        if self.replicas > 1 {
            write!(
                f,
                "MPI pipeline, {ranks} ranks: {stages}, {} replicas per stage",
                self.replicas
            )
        } else {
            write!(f, "MPI pipeline, {ranks} ranks: {stages}")
        }
    }
}

/// The non-blocking sends of one rank still in flight, oldest first. Their buffers are
/// leaked to MPI while it holds them and reclaimed once each send has completed.
#[derive(Default)]
struct Sends {
    pending: VecDeque<Request<'static, [u8], StaticScope>>,
}

impl Sends {
    /// Starts sending `bytes` to `to`, first waiting for the oldest sends until fewer
    /// than [`QUEUE`] are in flight.
    fn push(&mut self, to: &Process<'_>, bytes: Vec<u8>) {
        while self.pending.len() >= QUEUE {
            self.wait_oldest();
        }
        let buffer: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        self.pending.push_back(to.immediate_send(StaticScope, buffer));
    }

    fn wait_oldest(&mut self) {
        if let Some(request) = self.pending.pop_front() {
            let buffer = request.wait_for_data();
            // SAFETY: `buffer` was leaked from a Box in `push`, and MPI no longer reads it
            // now that its send has completed; nothing else refers to it.
            drop(unsafe { Box::from_raw(buffer as *const [u8] as *mut [u8]) });
        }
    }
}

impl Drop for Sends {
    /// Waits for every send (an incomplete request may not be dropped): the next rank
    /// receives them in order, so this returns unless that rank has died, in which
    /// case mpirun stops this one too.
    fn drop(&mut self) {
        while !self.pending.is_empty() {
            self.wait_oldest();
        }
    }
}
