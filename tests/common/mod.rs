//! Helpers shared by the integration tests.

use sll::data::Dataset;
use std::path::Path;
use tch::{Kind, Tensor};

/// A synthetic set of `n` 1x2x2 images whose pixels all equal the example's
/// index, with label `index % 10`.
#[allow(dead_code)]
pub fn synthetic(n: i64) -> Dataset {
    Dataset {
        images: Tensor::arange(n, (Kind::Float, tch::Device::Cpu))
            .view([n, 1, 1, 1])
            .expand([n, 1, 2, 2], false)
            .contiguous(),
        labels: Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)).remainder(10),
        classes: 10,
    }
}

/// Every tensor of a run's checkpoint, by name.
#[allow(dead_code)] // not every test crate uses every helper
pub fn checkpoint(run: &Path) -> Vec<(String, Tensor)> {
    let mut tensors = Tensor::read_safetensors(run.join("model.safetensors")).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// Each epoch's losses and test accuracies (everything but the timings).
#[allow(dead_code)]
pub fn numbers(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let fields = v.as_object_mut().unwrap();
            fields.remove("seconds");
            fields.remove("wall_seconds");
            fields.remove("train_samples_per_second");
            v
        })
        .collect()
}

/// The small MNIST run of the pipeline tests (3 blocks, dropout on, 1,500 training
/// examples, 2 epochs, 1 intra-op thread), as config overrides.
#[allow(dead_code)]
pub fn small_sets() -> Vec<String> {
    vec![
        format!(
            "data.dir={:?}",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")
        ),
        "data.train_subset=1500".into(),
        "data.test_subset=1000".into(),
        "model.hidden=[256, 256, 256]".into(),
        "objective.d0=128".into(),
        "train.epochs=2".into(),
        "train.threads=1".into(),
    ]
}

/// Asserts that `run` trained exactly what `sequential` did (every checkpoint tensor
/// bit for bit, every epoch's losses and test accuracies) and that `sll eval` on it
/// reproduces its last accuracy; `what` names the run in failures.
#[allow(dead_code)]
pub fn assert_same_training(sequential: &Path, run: &Path, what: &str) {
    let (a, b) = (checkpoint(sequential), checkpoint(run));
    assert_eq!(a.len(), b.len(), "{what}");
    for ((name, x), (other, y)) in a.iter().zip(&b) {
        assert_eq!(name, other, "{what}");
        assert!(x.equal(y), "{what}: {name} differs from sequential training");
    }
    assert_eq!(numbers(sequential), numbers(run), "{what}");
    let evaluation = sll::cli::eval_command(&sll::cli::EvalArgs {
        run: run.to_path_buf(),
        data_dir: None,
    })
    .unwrap();
    assert_eq!(
        Some(evaluation.accuracy),
        numbers(run).last().unwrap()["test_accuracy"].as_f64(),
        "{what}"
    );
}
