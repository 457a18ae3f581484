//! Your own tch layers trained block by block with SLL on the shipped MNIST, in ten
//! lines: any `nn::ModuleT` is a block (`Network::builder`), the preset gives the rest.
//!
//!     cargo run --release --example own_layers

use sll::{config::Config, learner::Model, model::Network, train};
use tch::{nn, Device};

fn train_own_layers() -> anyhow::Result<f64> {
    let mut config = Config::load_quietly(Some("mnist-mlp"), &[])?;
    (config.data.dir, config.data.train_subset) = (concat!(env!("CARGO_MANIFEST_DIR"), "/data").into(), 5000);
    train::init_runtime(&config);
    let (train_set, test_set) = sll::data::prepare(&mut config.data, Device::Cpu)?;
    let layer = |p: nn::Path, i, o| {
        nn::seq_t()
            .add_fn(|x| x.flatten(1, -1))
            .add(nn::linear(p / "fc", i, o, Default::default()))
            .add_fn(|x| x.relu())
    };
    let network = Network::builder([1, 28, 28], Device::Cpu)
        .block(move |p| layer(p, 784, 256))
        .block(move |p| layer(p, 256, 256))
        .build()?;
    let model = Model::with_network(&config, network, 10, [1, 28, 28], Device::Cpu)?;
    train::fit(&config, &model, &train_set, 1)?;
    Ok(model.evaluate(&test_set, config.data.eval_batch_size).accuracy)
}

fn main() -> anyhow::Result<()> {
    println!(
        "test accuracy after 1 epoch on 5,000 images: {:.2} %",
        100.0 * train_own_layers()?
    );
    Ok(())
}

#[test]
fn runs() {
    let accuracy = train_own_layers().unwrap();
    assert!(accuracy > 0.75, "{accuracy}");
}

/// `fit` returns each epoch's mean loss terms per block and calls back after each
/// epoch; the loss falls from the first epoch to the second; BP's inner blocks have none.
#[test]
fn fit_reports_each_epoch() {
    let mut config = Config::load_quietly(Some("mnist-mlp"), &[]).unwrap();
    (config.data.dir, config.data.train_subset) = (concat!(env!("CARGO_MANIFEST_DIR"), "/data").into(), 2000);
    train::init_runtime(&config);
    let (train_set, _) = sll::data::prepare(&mut config.data, Device::Cpu).unwrap();
    let model = Model::new(&config, 10, [1, 28, 28], Device::Cpu).unwrap();
    let mut seen = vec![];
    let history = train::fit_with(&config, &model, &train_set, 2, |e| {
        seen.push(e.epoch);
        Ok(())
    })
    .unwrap();
    assert_eq!(seen, [1, 2]);
    let prediction = |e: usize, b: usize| history[e].losses[b].as_ref().unwrap().get("prediction").unwrap();
    assert_eq!(history[0].losses.len(), model.network.len());
    assert!(history[0]
        .losses
        .iter()
        .all(|l| l.as_ref().is_some_and(|t| t.get("divergence").is_some())));
    assert!(prediction(1, 2) < prediction(0, 2), "{history:?}");
    config.train.method = sll::config::Method::Bp;
    let model = Model::new(&config, 10, [1, 28, 28], Device::Cpu).unwrap();
    let history = train::fit(&config, &model, &train_set, 1).unwrap();
    assert!(history[0].losses[0].is_none() && history[0].losses[2].is_some());
}
