//! A local rule of your own: each block trains a linear head on its pooled output with
//! label-smoothed cross-entropy (no divergence term), on the default MLP. Any
//! `LocalRule` can stand in for the built-in ones (`Model::from_parts`); the trainer
//! only calls `loss`.
//!
//!     cargo run --release --example custom_rule

use anyhow::Result;
use sll::config::Config;
use sll::data::Dataset;
use sll::learner::Model;
use sll::model::{InputShape, Network, Pooling};
use sll::rules::{LocalLoss, LocalRule};
use sll::train;
use tch::{nn, nn::Module, Device, Tensor};

/// CE with smoothed labels through a linear head on pool(h).
#[derive(Debug)]
struct SmoothedCe {
    head: nn::Linear,
    pooling: Pooling,
    smoothing: f64,
}

impl LocalRule for SmoothedCe {
    fn term_names(&self) -> &'static [&'static str] {
        &["prediction"]
    }

    fn loss(&self, h: &Tensor, y: &Tensor, _passed: Option<&Tensor>, train: bool) -> LocalLoss {
        let logits = self.logits_t(h, train);
        let prediction =
            logits.cross_entropy_loss::<Tensor>(y, None, tch::Reduction::Mean, -100, self.smoothing);
        LocalLoss {
            total: prediction.shallow_clone(),
            terms: vec![prediction],
            passes_on: None,
        }
    }

    fn logits(&self, h: &Tensor) -> Option<Tensor> {
        Some(self.logits_t(h, false))
    }
}

impl SmoothedCe {
    fn logits_t(&self, h: &Tensor, _train: bool) -> Tensor {
        self.head.forward(&self.pooling.apply(h))
    }
}

fn main() -> Result<()> {
    let accuracy = train_with_smoothed_ce(1)?;
    println!(
        "test accuracy with the custom rule after 1 epoch: {:.2} %",
        100.0 * accuracy
    );
    Ok(())
}

/// Trains the default preset's MLP (5,000 images) with the custom rule.
fn train_with_smoothed_ce(epochs: usize) -> Result<f64> {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data");
    let mut config = Config::load_quietly(
        Some("mnist-mlp"),
        &[
            "data.train_subset=5000".into(),
            format!("data.dir={data:?}"),
            "train.method=\"local\"".into(),
        ],
    )?;
    train::init_runtime(&config);
    let (train_set, test_set): (Dataset, Dataset) = sll::data::prepare(&mut config.data, Device::Cpu)?;
    let input: InputShape = sll::data::input_shape(&train_set);
    let network = Network::new(&config.model, input, Device::Cpu)?;
    // Our rule for every block; its head lives in the block's own var store, so the
    // block's optimizer trains it with the block. No built-in head is made.
    let model = Model::from_parts(&config, network, input, Device::Cpu, |block| {
        Ok(Box::new(SmoothedCe {
            head: nn::linear(
                &block.path / "smoothed_head",
                block.pooled_dim,
                10,
                Default::default(),
            ),
            pooling: block.pooling,
            smoothing: 0.1,
        }) as Box<dyn LocalRule>)
    })?;
    // Only the blocks and our heads are trained and checkpointed.
    let names: Vec<String> = model
        .network
        .stores
        .iter()
        .flat_map(|s| s.variables().into_keys())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".head.")), "{names:?}");
    train::fit(&config, &model, &train_set, epochs)?;
    let eval = model.evaluate(&test_set, config.data.eval_batch_size);
    Ok(eval.accuracy)
}

#[test]
fn runs() {
    let accuracy = train_with_smoothed_ce(1).unwrap();
    assert!(accuracy > 0.80, "{accuracy}");
}
