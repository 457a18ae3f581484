//! A block of your own, trained with SLL: a residual MLP block
//! (h = x + W2·relu(W1·x)) in place of the preset's layers. A block is anything that
//! implements `Block`; `Model::with_network` gives it the rules, heads and projections
//! of the config's method, and the trainers do the rest.
//!
//!     cargo run --release --example custom_block

use anyhow::Result;
use sll::config::Config;
use sll::learner::Model;
use sll::model::{Block, Network, Pooling};
use sll::train;
use tch::{nn, nn::Module, Device, Tensor};

/// x + W2·relu(W1·x) on flattened inputs of `width` features (the first block projects
/// the image to `width` first).
#[derive(Debug)]
struct ResidualMlp {
    input: Option<nn::Linear>,
    inner: nn::Linear,
    outer: nn::Linear,
    width: i64,
}

impl ResidualMlp {
    fn new(path: nn::Path, in_dim: i64, width: i64) -> Self {
        Self {
            input: (in_dim != width).then(|| sll::model::linear(&path / "input", in_dim, width)),
            inner: sll::model::linear(&path / "inner", width, width),
            outer: sll::model::linear(&path / "outer", width, width),
            width,
        }
    }
}

impl Block for ResidualMlp {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let x = xs.flatten(1, -1);
        let x = match &self.input {
            Some(input) => input.forward(&x).relu(),
            None => x,
        };
        &x + self.outer.forward(&self.inner.forward(&x).relu())
    }

    fn pooling(&self) -> Pooling {
        Pooling::Flatten
    }

    fn pooled_dim(&self) -> i64 {
        self.width
    }

    fn forward_flops(&self) -> (f64, f64) {
        let square = 2.0 * (self.width * self.width) as f64;
        let input = self.input.as_ref().map_or(0.0, |l| 2.0 * l.ws.numel() as f64);
        (input + 2.0 * square, if input > 0.0 { input } else { square })
    }
}

fn main() -> Result<()> {
    let accuracy = train_residual_blocks(1)?;
    println!(
        "test accuracy of 3 residual blocks trained with SLL after 1 epoch: {:.2} %",
        100.0 * accuracy
    );
    Ok(())
}

/// Three residual blocks of width 256, SLL (the default preset's objective), 5,000
/// MNIST images.
fn train_residual_blocks(epochs: usize) -> Result<f64> {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data");
    let mut config = Config::load_quietly(
        Some("mnist-mlp"),
        &["data.train_subset=5000".into(), format!("data.dir={data:?}")],
    )?;
    train::init_runtime(&config);
    let (train_set, test_set) = sll::data::prepare(&mut config.data, Device::Cpu)?;
    let input = sll::data::input_shape(&train_set);
    let (width, blocks) = (256, 3);
    let stores: Vec<nn::VarStore> = (0..blocks).map(|_| nn::VarStore::new(Device::Cpu)).collect();
    let network = Network {
        blocks: stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let in_dim = if i == 0 { input.iter().product() } else { width };
                Box::new(ResidualMlp::new(Network::block_path(store, i), in_dim, width)) as Box<dyn Block>
            })
            .collect(),
        stores,
        input_pooling: Pooling::Flatten,
        input_dim: input.iter().product(),
    };
    let model = Model::with_network(&config, network, 10, input, Device::Cpu)?;
    train::fit(&config, &model, &train_set, epochs)?;
    Ok(model.evaluate(&test_set, config.data.eval_batch_size).accuracy)
}

#[test]
fn runs() {
    let accuracy = train_residual_blocks(1).unwrap();
    assert!(accuracy > 0.80, "{accuracy}");
}
