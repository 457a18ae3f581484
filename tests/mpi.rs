//! The MPI pipeline (feature `mpi`) under a real `mpirun` with 3 ranks on MNIST: the
//! same weights, losses and evaluations as sequential training, a checkpoint that
//! `sll eval` loads, and a failing rank that stops the job, named.
//!
//! Needs OpenMPI's `mpirun` on PATH (`.ci/run` installs it). The ranks run as separate
//! processes, so 3 ranks on 2 cores use `--oversubscribe`.
#![cfg(feature = "mpi")]

use sll::config::Config;
use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{assert_same_training, numbers, small_sets};

/// `mpirun -np <ranks> sll train --pipeline mpi` with the small run's settings and
/// `extra` overrides, into `out`.
fn mpirun(ranks: usize, out: &Path, extra: &[&str]) -> Output {
    let mut command = Command::new("mpirun");
    command
        .args(["-np", &ranks.to_string(), "--oversubscribe"])
        .arg(env!("CARGO_BIN_EXE_sll"))
        .args(["train", "--pipeline", "mpi", "--out"])
        .arg(out);
    for set in small_sets()
        .iter()
        .map(String::as_str)
        .chain(extra.iter().copied())
    {
        command.args(["--set", set]);
    }
    // OpenMPI refuses to start as root (CI containers) without these.
    command
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    command.output().expect("mpirun runs (is OpenMPI installed?)")
}

/// 3 ranks, one block each, train bit-identical weights to sequential training with
/// the same seed and thread count, with the same per-block losses and evaluations
/// after each epoch; rank 0's checkpoint holds every block and `sll eval` reproduces
/// its accuracy.
#[test]
fn three_ranks_train_the_same_weights_as_sequential() {
    let dir = tempfile::tempdir().unwrap();
    let sequential = dir.path().join("sequential");
    sll::run::run(Config::load(None, &small_sets()).unwrap(), &sequential).unwrap();
    let run = dir.path().join("mpi");
    let output = mpirun(3, &run, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mpirun failed: {stderr}");
    assert!(stderr.contains("MPI pipeline, 3 ranks"), "{stderr}");
    assert_same_training(&sequential, &run, "3 MPI ranks");
}

/// The `error: rank ...` line of a job that must have failed.
fn rank_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    stderr
        .lines()
        .find(|l| l.starts_with("error: rank "))
        .unwrap_or_else(|| panic!("no rank error in: {stderr}"))
        .to_string()
}

/// A rank whose loss turns non-finite aborts the job: mpirun exits non-zero and the
/// error names the rank, its stage and the block. (mpirun returning is the check that
/// nothing hangs.)
#[test]
fn failing_rank_stops_every_rank_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = mpirun(
        3,
        &dir.path().join("run"),
        // Only the non-finite check (the explosion check would stop it first).
        &[
            "optim.lr=1e30",
            "optim.schedule=\"constant\"",
            "train.divergence_factor=0",
        ],
    );
    let error = rank_error(&output);
    assert!(
        error.contains("stage ") && error.contains("non-finite") && error.contains("epoch 1"),
        "{error}"
    );
}

/// An exploding (finite) loss stops an MPI job too, through the same guard.
#[test]
fn exploding_loss_stops_every_rank_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let output = mpirun(3, &dir.path().join("run"), &["optim.lr=1e4"]);
    let error = rank_error(&output);
    assert!(
        error.contains("stage ") && error.contains("loss exploded") && error.contains("epoch 1"),
        "{error}"
    );
}

/// 2 stages × 2 data-parallel replicas (4 ranks): each replica trains on half of every
/// minibatch with gradients averaged in its stage; the run checks after every epoch
/// that a stage's replicas still hold identical parameters, and reaches about the
/// sequential accuracy (58.7 % on this small run; 58.5 % measured with replicas).
#[test]
fn replicated_stages_stay_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = mpirun(4, &run, &["train.replicas=2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mpirun failed: {stderr}");
    assert!(
        stderr.contains("MPI pipeline, 4 ranks: 2 stages") && stderr.contains("2 replicas per stage"),
        "{stderr}"
    );
    let accuracy = numbers(&run).last().unwrap()["test_accuracy"].as_f64().unwrap();
    assert!(accuracy >= 0.55, "accuracy {accuracy}");
}

/// `train.stages` must match the number of ranks.
#[test]
fn stage_count_must_match_the_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let output = mpirun(3, &dir.path().join("run"), &["train.stages=2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("train.stages") && stderr.contains("3 ranks"),
        "{stderr}"
    );
}
