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
