//! `metrics.jsonl`: one [`EpochMetrics`] line per epoch, and the final per-block
//! table a run prints.

use crate::learner::Evaluation;
use crate::rules::terms::{BlockLoss, Terms};
use serde::{Deserialize, Serialize};

/// Mean training loss terms of one block over an epoch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BlockTrainLoss {
    /// 1-based block number.
    pub block: usize,
    /// The rule's mean terms (`prediction`: the head's cross-entropy; SLL's
    /// `divergence`, InfoPro's `reconstruction`, PredSim's `similarity`).
    #[serde(flatten)]
    pub terms: Terms,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EpochMetrics {
    /// 1-based epoch.
    pub epoch: usize,
    /// Learning rate at the start of the epoch.
    pub learning_rate: f64,
    /// Per-block mean training losses.
    pub train_loss: Vec<BlockTrainLoss>,
    /// Test accuracy of the final classifier.
    pub test_accuracy: f64,
    /// Test accuracy of every block's head (null where a block has none).
    pub block_test_accuracy: Vec<Option<f64>>,
    /// Test accuracy of the averaged heads' softmaxes.
    pub ensemble_test_accuracy: f64,
    /// Training time of this epoch (evaluation excluded).
    pub seconds: f64,
    /// Training throughput of this epoch.
    pub train_samples_per_second: f64,
    /// Wall-clock seconds from the start of training to the end of this epoch's
    /// evaluation (0 in runs written before it was recorded).
    #[serde(default)]
    pub wall_seconds: f64,
}

impl EpochMetrics {
    /// Metrics of an epoch from its summed losses over `steps` steps and its evaluation.
    pub fn new(
        epoch: usize,
        learning_rate: f64,
        sums: &[BlockLoss],
        steps: usize,
        eval: &Evaluation,
        seconds: f64,
        samples: usize,
    ) -> Self {
        let train_loss = sums
            .iter()
            .map(|s| BlockTrainLoss {
                block: s.block + 1,
                terms: s.terms.divided(steps as f64),
            })
            .collect();
        Self {
            epoch,
            learning_rate,
            train_loss,
            test_accuracy: eval.accuracy,
            block_test_accuracy: eval.block_accuracy.clone(),
            ensemble_test_accuracy: eval.ensemble_accuracy,
            seconds,
            train_samples_per_second: samples as f64 / seconds,
            wall_seconds: 0.0,
        }
    }

    /// The line printed after each epoch.
    pub fn one_line(&self, epochs: usize) -> String {
        let blocks: Vec<String> = self
            .block_test_accuracy
            .iter()
            .map(|a| a.map_or("-".into(), |a| format!("{:.2}", 100.0 * a)))
            .collect();
        let losses: Vec<String> = self
            .train_loss
            .iter()
            .map(|l| {
                let values: Vec<String> = l.terms.0.iter().map(|(_, v)| format!("{v:.3}")).collect();
                values.join("/")
            })
            .collect();
        let names: Vec<&str> = self.train_loss.first().map_or(vec![], |l| {
            l.terms
                .0
                .iter()
                .map(|(n, _)| crate::rules::terms::short_name(n))
                .collect()
        });
        format!(
            "epoch {}/{epochs}  test {:.2}%  blocks {}  loss {} {}  {:.1}s  {:.0} samples/s",
            self.epoch,
            100.0 * self.test_accuracy,
            blocks.join(" "),
            names.join("/"),
            losses.join(" "),
            self.seconds,
            self.train_samples_per_second
        )
    }
}
/// Prints the final per-block table: head accuracy and last epoch's loss terms.
pub fn print_final_table(history: &[EpochMetrics], eval: &Evaluation) {
    let last = history.last().expect("at least one epoch");
    let mut names: Vec<String> = vec![];
    for l in &last.train_loss {
        for (n, _) in &l.terms.0 {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let header: Vec<String> = names
        .iter()
        .map(|n| format!("  {:>20}", format!("train {n}")))
        .collect();
    println!("{:>6}  {:>14}{}", "block", "head accuracy", header.concat());
    for (i, accuracy) in eval.block_accuracy.iter().enumerate() {
        let loss = last.train_loss.iter().find(|l| l.block == i + 1);
        let cells: Vec<String> = names
            .iter()
            .map(|n| {
                let v = loss.and_then(|l| l.terms.get(n));
                format!("  {:>20}", v.map_or("-".to_string(), |v| format!("{v:.4}")))
            })
            .collect();
        println!(
            "{:>6}  {:>14}{}",
            i + 1,
            accuracy.map_or("-".into(), |a| format!("{:.2}%", 100.0 * a)),
            cells.concat()
        );
    }
    println!(
        "test accuracy (final classifier): {:.2}%   averaged heads: {:.2}%",
        100.0 * eval.accuracy,
        100.0 * eval.ensemble_accuracy
    );
}
