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

use super::optim::Optimizer;
use super::pipeline::{stage_name, train_blocks, Minibatch, Stages, QUEUE};
use super::progress::EpochProgress;
use crate::config::TrainConfig;
use crate::learner::{LocalBlock, Model};
use crate::rules::terms::{BlockLoss, Terms};
use anyhow::{bail, Context, Result};
use mpi::collective::SystemOperation;
use mpi::request::{Request, StaticScope};
use mpi::topology::{Process, SimpleCommunicator};
use mpi::traits::*;
use std::collections::VecDeque;
use tch::{Device, Kind, Tensor};

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

/// Replica `replica`'s rows of a minibatch of `rows` rows, as (first row, count): the
/// `replicas` split it in order into runs that differ by at most one row.
fn share(rows: i64, replicas: usize, replica: usize) -> (i64, i64) {
    let (r, j) = (replicas as i64, replica as i64);
    let start = rows * j / r;
    (start, rows * (j + 1) / r - start)
}

/// Loss sums as numbers: per block its index, its number of terms, their values (the
/// names are the block's rule's, known to every rank).
fn encode_losses(sums: &[BlockLoss]) -> Vec<f64> {
    sums.iter()
        .flat_map(|l| {
            [l.block as f64, l.terms.0.len() as f64]
                .into_iter()
                .chain(l.terms.0.iter().map(|(_, v)| *v))
        })
        .collect()
}

/// Reads back what [`encode_losses`] wrote, naming the terms after `model`'s rules.
fn decode_losses(model: &Model, mut values: &[f64]) -> Result<Vec<BlockLoss>> {
    let mut out = vec![];
    while let [block, n, rest @ ..] = values {
        let (block, n) = (*block as usize, *n as usize);
        let rule = model.rules.get(block).context("loss of an unknown block")?;
        let names = rule.term_names();
        if rest.len() < n || n != names.len() {
            bail!("malformed loss message for block {}", block + 1);
        }
        let terms = names
            .iter()
            .zip(&rest[..n])
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        out.push(BlockLoss {
            block,
            terms: Terms(terms),
        });
        values = &rest[n..];
    }
    if !values.is_empty() {
        bail!("malformed loss message");
    }
    Ok(out)
}

/// Little-endian i64 words, as the header of a minibatch message.
fn push_words(out: &mut Vec<u8>, words: &[i64]) {
    out.extend(words.iter().flat_map(|w| w.to_le_bytes()));
}

/// Appends a tensor's dims (count first) to `header` and its bytes (as `kind`) to `data`.
fn push_tensor(header: &mut Vec<i64>, data: &mut Vec<u8>, t: &Tensor, kind: Kind) {
    let t = t.to_device(Device::Cpu).to_kind(kind).contiguous();
    let dims = t.size();
    header.push(dims.len() as i64);
    header.extend(&dims);
    let start = data.len();
    data.resize(start + t.numel() * kind.elt_size_in_bytes(), 0);
    t.copy_data_u8(&mut data[start..], t.numel());
}

/// One minibatch as bytes: header length, then the header (step, then each tensor's
/// dims: h, what the rule passes on (0 dims when absent), y), then h and the message
/// as f32 and y as i64.
fn encode(m: &Minibatch) -> Vec<u8> {
    let (mut header, mut data) = (vec![m.step as i64], vec![]);
    push_tensor(&mut header, &mut data, &m.h, Kind::Float);
    match &m.passed {
        Some(passed) => push_tensor(&mut header, &mut data, passed, Kind::Float),
        None => header.push(0),
    }
    push_tensor(&mut header, &mut data, &m.y, Kind::Int64);
    let mut out = Vec::with_capacity(8 * (header.len() + 1) + data.len());
    push_words(&mut out, &[header.len() as i64]);
    push_words(&mut out, &header);
    out.extend(data);
    out
}

/// Reads back what [`encode`] wrote, onto `device`.
fn decode(bytes: &[u8], device: Device) -> Result<Minibatch> {
    let mut words = bytes
        .chunks_exact(8)
        .map(|w| i64::from_le_bytes(w.try_into().expect("8 bytes")));
    let mut word = || words.next().context("message too short");
    let header_len = word()? as usize;
    let mut header = Vec::with_capacity(header_len);
    for _ in 0..header_len {
        header.push(word()?);
    }
    let mut data = bytes.get(8 * (header_len + 1)..).context("message too short")?;
    let mut header = header.into_iter();
    let step = header.next().context("empty header")? as usize;
    let mut tensor = |kind: Kind| -> Result<Option<Tensor>> {
        let rank = header.next().context("header too short")? as usize;
        if rank == 0 {
            return Ok(None);
        }
        let dims: Vec<i64> = header.by_ref().take(rank).collect();
        let len = dims.iter().product::<i64>() as usize * kind.elt_size_in_bytes();
        if dims.len() != rank || data.len() < len {
            bail!("message too short for a tensor of shape {dims:?}");
        }
        let t = Tensor::from_data_size(&data[..len], &dims, kind).to_device(device);
        data = &data[len..];
        Ok(Some(t))
    };
    let h = tensor(Kind::Float)?.context("no activations")?;
    let passed = tensor(Kind::Float)?;
    let y = tensor(Kind::Int64)?.context("no labels")?;
    Ok(Minibatch { step, h, passed, y })
}

/// Block `i`'s tensors (parameters and buffers, its head's included) in name order, as
/// one f32 vector.
fn block_values(model: &Model, i: usize) -> Result<Vec<f32>> {
    let mut values = vec![];
    for (_, t) in sorted_variables(model, i) {
        values.extend(Vec::<f32>::try_from(
            &t.to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1),
        )?);
    }
    Ok(values)
}

/// Copies what [`block_values`] produced on another rank into block `i` of `model`.
fn load_block(model: &Model, i: usize, values: &[f32]) -> Result<()> {
    let variables = sorted_variables(model, i);
    let expected: usize = variables.iter().map(|(_, t)| t.numel()).sum();
    if values.len() != expected {
        bail!(
            "{} values, expected {expected} (different configs on different ranks?)",
            values.len()
        );
    }
    let mut at = 0;
    tch::no_grad(|| {
        for (_, mut t) in variables {
            let n = t.numel();
            let source = Tensor::from_slice(&values[at..at + n]).reshape(t.size());
            t.copy_(&source.to_kind(t.kind()).to_device(t.device()));
            at += n;
        }
    });
    Ok(())
}

fn sorted_variables(model: &Model, i: usize) -> Vec<(String, Tensor)> {
    let mut variables: Vec<_> = model.network.stores[i].variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    variables
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_share_a_minibatch_in_order() {
        assert_eq!(share(128, 1, 0), (0, 128));
        let shares: Vec<_> = (0..3).map(|j| share(100, 3, j)).collect();
        assert_eq!(shares, vec![(0, 33), (33, 33), (66, 34)]);
        assert_eq!(share(1, 2, 0), (0, 0));
    }

    #[test]
    fn minibatch_messages_round_trip() {
        let _turn = crate::libtorch_turn();
        let h = Tensor::randn([5, 3, 2, 2], (Kind::Float, Device::Cpu));
        let log_q = Tensor::randn([5, 7], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[3i64, 1, 4, 1, 5]);
        for log_q in [Some(log_q), None] {
            let m = Minibatch {
                step: 42,
                h: h.shallow_clone(),
                passed: log_q.as_ref().map(|t| t.shallow_clone()),
                y: y.shallow_clone(),
            };
            let back = decode(&encode(&m), Device::Cpu).unwrap();
            assert_eq!(back.step, 42);
            assert!(back.h.equal(&h));
            assert_eq!(back.passed.is_some(), log_q.is_some());
            if let (Some(a), Some(b)) = (&back.passed, &log_q) {
                assert!(a.equal(b));
            }
            assert!(back.y.equal(&y));
            let bytes = encode(&m);
            assert!(decode(&bytes[..bytes.len() - 1], Device::Cpu).is_err());
            assert!(decode(&bytes[..12], Device::Cpu).is_err());
        }
    }
}
