//! `sll eval`: a finished run re-evaluated from its checkpoint, and checked against the
//! test accuracy it recorded.

use crate::checkpoint;
use crate::learner::Evaluation;
use crate::predict::TrainedRun;
use crate::run::metrics::EpochMetrics;
use anyhow::{bail, Result};
use std::path::Path;

/// Rebuilds the model of the run in `run` from its `config.toml`, loads its
/// `model.safetensors`, evaluates it on the test set (read from `data_dir` if given,
/// else from the run's recorded data folder) and compares with the test accuracy
/// `metrics.jsonl` recorded for the checkpoint's epoch: an error when the weights hold
/// a NaN or an infinity, or when the accuracy differs from the recorded one.
pub fn evaluate_run(run: &Path, data_dir: Option<&str>) -> Result<Evaluation> {
    let TrainedRun {
        mut config,
        model,
        device,
        ..
    } = TrainedRun::load(run, data_dir)?;
    let (_, test) = crate::data::prepare(&mut config.data, device)?;
    let weights = run.join("model.safetensors");
    let eval = model.evaluate(&test, config.data.eval_batch_size);
    for (i, a) in eval.block_accuracy.iter().enumerate() {
        if let Some(a) = a {
            println!("block {} head accuracy: {:.2}%", i + 1, 100.0 * a);
        }
    }
    println!(
        "test accuracy: {:.2}% ({} test examples)",
        100.0 * eval.accuracy,
        test.len()
    );
    let epoch: Option<usize> = checkpoint::read_metadata(&weights)?
        .get("epoch")
        .and_then(|e| e.parse().ok());
    let recorded = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<EpochMetrics>(line).ok())
        .find(|m| Some(m.epoch) == epoch);
    if let Some(recorded) = recorded {
        if recorded.test_accuracy != eval.accuracy {
            bail!(
                "{}: re-evaluated test accuracy {:.4}% differs from the {:.4}% recorded after epoch {} in metrics.jsonl",
                run.display(),
                100.0 * eval.accuracy,
                100.0 * recorded.test_accuracy,
                recorded.epoch
            );
        }
        println!(
            "recorded test accuracy after epoch {}: {:.2}% (identical)",
            recorded.epoch,
            100.0 * recorded.test_accuracy
        );
    }
    Ok(eval)
}
