//! The thread pipeline on real MNIST: the same weights, losses and evaluations as
//! sequential training (which proves minibatch order and accuracy parity at once), and
//! a failing stage that stops the run, named, without hanging.

use sll::cli::{resolve_train_config, TrainArgs};
use sll::config::{Config, Pipeline};

mod common;
use common::{assert_same_training, serial, small_sets};

/// A small SLL MLP (3 blocks, dropout on) on 1,500 MNIST examples, 1 intra-op thread.
fn small_config(extra: &[&str]) -> Config {
    let mut sets = small_sets();
    sets.extend(extra.iter().map(|s| s.to_string()));
    Config::load(None, &sets).unwrap()
}

/// Two epochs with the pipeline (one stage per block, and 2 stages) give bit-identical
/// weights, the same per-block loss sums and the same evaluations after each epoch as
/// the sequential local step; the checkpoint loads in `sll eval`.
#[test]
fn pipeline_trains_the_same_weights_as_sequential() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let sequential = dir.path().join("sequential");
    sll::run::run(small_config(&[]), &sequential).unwrap();
    // The last setting also places each stage on a device of its own (both the CPU
    // here: what runs is the placement and the per-stage moves of a multi-GPU run).
    for (stages, devices) in [(0, "[]"), (2, "[\"cpu\", \"cpu\"]")] {
        let run = dir.path().join(format!("stages{stages}"));
        let config = small_config(&[
            "train.pipeline=\"threads\"",
            &format!("train.stages={stages}"),
            &format!("train.stage_devices={devices}"),
        ]);
        sll::run::run(config, &run).unwrap();
        assert_same_training(&sequential, &run, &format!("stages = {stages}"));
    }
}

/// A stage whose loss turns non-finite stops every stage and the feeder; the run's
/// one-line error names the stage and the block. (The test returning is the check that
/// nothing hangs.)
#[test]
fn failing_stage_stops_the_pipeline_and_is_named() {
    let _guard = serial();
    let config = small_config(&[
        "train.pipeline=\"threads\"",
        "optim.lr=1e30",
        "optim.schedule=\"constant\"",
        // Only the non-finite check (the explosion check would stop it first).
        "train.divergence_factor=0",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        sll::run::run(config, &dir.path().join("run")).unwrap_err()
    );
    assert!(
        e.starts_with("stage ") && e.contains("(block") && e.contains("non-finite") && e.contains("epoch 1"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn pipeline_settings_are_checked_and_reach_the_config() {
    // `train::run` seeds libtorch's global generator and builds a model before it
    // refuses the stage count: take the turn, or it races the other tests' training.
    let _guard = serial();
    let config = resolve_train_config(&TrainArgs {
        pipeline: Some(Pipeline::Threads),
        stages: Some(2),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        (config.train.pipeline, config.train.stages),
        (Pipeline::Threads, 2)
    );
    let e = Config::load(
        None,
        &["train.pipeline=\"threads\"".into(), "train.method=\"bp\"".into()],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("train.pipeline") && e.contains("bp"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let too_many = small_config(&["train.pipeline=\"threads\"", "train.stages=4"]);
    let e = sll::run::run(too_many, &dir.path().join("run"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.stages") && e.contains("3 blocks"), "{e}");
    let devices = small_config(&[
        "train.pipeline=\"threads\"",
        "train.stages=2",
        "train.stage_devices=[\"cpu\"]",
    ]);
    let e = sll::run::run(devices, &dir.path().join("devices"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.stage_devices") && e.contains("2 stages"), "{e}");
    let e = Config::load(
        None,
        &[
            "train.pipeline=\"threads\"".into(),
            "train.stage_devices=[\"gpu7\"]".into(),
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("train.stage_devices") && e.contains("gpu7"), "{e}");
    #[cfg(not(feature = "mpi"))]
    {
        let mpi = small_config(&["train.pipeline=\"mpi\""]);
        let e = sll::run::run(mpi, &dir.path().join("mpi"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("train.pipeline") && e.contains("--features mpi"),
            "{e}"
        );
    }
}
