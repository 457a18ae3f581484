//! End-to-end behaviour of the trainers on real MNIST: accuracy, reproducibility,
//! locality of the block-local step, checkpoints, and the NaN guard.

mod common;
use common::{serial, snapshot};
use sll::checkpoint;
use sll::config::{Config, Method};
use sll::learner::Model;
use sll::train::{self, optim::LrSchedule, optim::Optimizer, sequential};
use tch::{Device, Kind, Tensor};

/// A small MLP on a 10,000-example MNIST subset.
fn small_config(method: &str, epochs: usize, extra: &[&str]) -> Config {
    let mut sets: Vec<String> = vec![
        format!("data.dir={:?}", common::REPO_DATA),
        "data.train_subset=10000".into(),
        "model.hidden=[256, 256, 256]".into(),
        "objective.d0=128".into(),
        format!("train.method={method:?}"),
        format!("train.epochs={epochs}"),
        "train.threads=2".into(),
    ];
    sets.extend(extra.iter().map(|s| s.to_string()));
    Config::load(None, &sets).unwrap()
}

fn train(config: Config) -> (sll::run::summary::Summary, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let summary = sll::run::run(config, &out).unwrap();
    (summary, dir)
}

/// Each method, 3 epochs on 20,000 MNIST examples (a few seconds each), must reach 94 %
/// (measured: sll 95.7 %, local 95.0 %, bp 95.8 %).
#[test]
fn short_runs_reach_stated_accuracy() {
    let _guard = serial();
    for (method, floor) in [("sll", 0.94), ("local", 0.94), ("bp", 0.94)] {
        let (summary, _dir) = train(small_config(method, 3, &["data.train_subset=20000"]));
        assert!(
            summary.test_accuracy >= floor,
            "{method}: test accuracy {} below {floor}",
            summary.test_accuracy
        );
        let heads = summary.block_test_accuracy.iter().filter(|a| a.is_some()).count();
        assert_eq!(
            heads,
            if method == "bp" { 1 } else { 3 },
            "{method}: heads reported"
        );
    }
}

#[test]
fn same_seed_gives_same_numbers() {
    let _guard = serial();
    let config = small_config("sll", 1, &["data.train_subset=3000"]);
    let (a, dir_a) = train(config.clone());
    let (b, dir_b) = train(config);
    assert_eq!(a.test_accuracy, b.test_accuracy);
    let metrics = |d: &tempfile::TempDir| {
        let text = std::fs::read_to_string(d.path().join("run/metrics.jsonl")).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        v["train_loss"].clone()
    };
    assert_eq!(metrics(&dir_a), metrics(&dir_b));
    let (c, _) = train(small_config(
        "sll",
        1,
        &["data.train_subset=3000", "train.seed=1"],
    ));
    assert_ne!(a.projection_seeds, c.projection_seeds);
}

fn tiny_model(config: &Config) -> Model {
    Model::new(config, 10, [1, 28, 28], Device::Cpu).unwrap()
}

fn same(a: &[Tensor], b: &[Tensor]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.equal(y))
}

#[test]
fn block_step_changes_only_its_block_and_no_gradient_crosses() {
    let _guard = serial();
    tch::manual_seed(3);
    let config = small_config("sll", 1, &[]);
    let model = tiny_model(&config);
    let x = Tensor::randn([16, 1, 28, 28], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [16], (Kind::Int64, Device::Cpu));
    let before: Vec<Vec<Tensor>> = (0..3).map(|i| snapshot(&model, i)).collect();
    let j = 1;
    let schedule = LrSchedule::new(&config.optim, 1, 1);
    let mut optimizer = Optimizer::new(&config.optim, &model.network.trainable(j), schedule).unwrap();
    // Block 1's output *with* its graph: block_step must cut it.
    let h1 = model.network.blocks[0].forward_t(&x, true);
    let log_q0 = model.input_message(&x, true);
    let log_q1 = model.rules[0].loss(&h1, &y, log_q0.as_ref(), true).passes_on;
    sequential::block_step(
        model.local_block(j),
        &mut optimizer,
        &h1,
        log_q1.as_ref(),
        &y,
        &|_| Ok(()),
    )
    .unwrap();
    for (i, before) in before.iter().enumerate() {
        let unchanged = same(before, &snapshot(&model, i));
        assert_eq!(unchanged, i != j, "block {}: unchanged = {unchanged}", i + 1);
    }
    for t in model.network.trainable(0) {
        assert!(
            !t.grad().defined(),
            "a gradient reached block 1 from block 2's loss"
        );
    }
    assert!(model.network.trainable(j).iter().all(|t| t.grad().defined()));
}

#[test]
fn checkpoint_round_trip_gives_identical_logits() {
    let _guard = serial();
    for head in ["linear", "projection"] {
        let config = small_config(
            "sll",
            1,
            &[&format!("objective.head={head:?}"), "objective.d0=10"],
        );
        tch::manual_seed(1);
        let model = tiny_model(&config);
        let x = Tensor::randn([32, 1, 28, 28], (Kind::Float, Device::Cpu));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        checkpoint::save(&model, &config, 1, &path).unwrap();
        tch::manual_seed(2);
        let reloaded = tiny_model(&config);
        let logits = |m: &Model| {
            m.block_logits(&x)
                .into_iter()
                .map(|l| l.unwrap())
                .collect::<Vec<_>>()
        };
        assert!(
            !same(&logits(&model), &logits(&reloaded)),
            "{head}: different seeds, same init?"
        );
        checkpoint::load(&reloaded, &path).unwrap();
        assert!(
            same(&logits(&model), &logits(&reloaded)),
            "{head}: logits differ after reload"
        );
        let seeds = checkpoint::read_metadata(&path).unwrap()[checkpoint::PROJECTION_SEEDS_KEY].clone();
        assert_eq!(seeds, serde_json::to_string(&model.projection_seeds()).unwrap());
    }
}

#[test]
fn checkpoint_errors_name_the_file_and_tensor() {
    let _guard = serial();
    let config = small_config("sll", 1, &[]);
    let model = tiny_model(&config);
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a checkpoint").unwrap();
    let e = format!("{:#}", checkpoint::load(&model, &garbage).unwrap_err());
    assert!(
        e.contains("garbage.safetensors") && e.contains("not a valid"),
        "{e}"
    );

    let wider = small_config("sll", 1, &["model.hidden=[256, 300, 256]"]);
    let path = dir.path().join("wider.safetensors");
    checkpoint::save(&tiny_model(&wider), &wider, 1, &path).unwrap();
    let e = format!("{:#}", checkpoint::load(&model, &path).unwrap_err());
    assert!(
        e.contains("wider.safetensors") && e.contains("block2.") && e.contains("300"),
        "{e}"
    );

    let reseeded = small_config("sll", 1, &["train.seed=5"]);
    let path = dir.path().join("reseeded.safetensors");
    checkpoint::save(&tiny_model(&reseeded), &reseeded, 1, &path).unwrap();
    let e = format!("{:#}", checkpoint::load(&model, &path).unwrap_err());
    assert!(e.contains("projection seeds"), "{e}");
}

#[test]
fn non_finite_loss_stops_and_names_block_and_epoch() {
    let _guard = serial();
    let config = small_config(
        "sll",
        2,
        &[
            "optim.lr=1e30",
            "optim.schedule=\"constant\"",
            "data.train_subset=2000",
            // Only the non-finite check (the explosion check would stop it first).
            "train.divergence_factor=0",
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let e = format!(
        "{:#}",
        sll::run::run(config, &dir.path().join("run")).unwrap_err()
    );
    assert!(
        e.contains("block") && e.contains("epoch 1") && e.contains("non-finite"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

#[test]
fn local_method_turns_the_divergence_off() {
    let _guard = serial();
    let config = small_config("local", 1, &[]);
    assert_eq!(config.train.method, Method::Local);
    let model = tiny_model(&config);
    assert_eq!(model.objective.beta, 0.0);
    assert!(model.projection_seeds().iter().all(Option::is_none));
}

fn cnn_config(extra: &[&str]) -> Config {
    let mut sets: Vec<String> = [
        "model.kind=\"cnn\"",
        "model.channels=[8, 16, 16]",
        "model.pool_after=[2, 3]",
        "objective.d0=32",
        "train.threads=2",
    ]
    .map(String::from)
    .to_vec();
    sets.extend(extra.iter().map(|s| s.to_string()));
    Config::load(None, &sets).unwrap()
}

/// Channels-last conv weights go through the fused Adam exactly as libtorch's Adam
/// updates contiguous ones, and a CNN checkpoint reloads to identical logits.
#[test]
fn cnn_channels_last_fused_adam_and_checkpoint() {
    let _guard = serial();
    let x = Tensor::randn([8, 3, 16, 16], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [8], (Kind::Int64, Device::Cpu));
    let trained = |extra: &[&str]| {
        let config = cnn_config(extra);
        tch::manual_seed(3);
        let model = Model::new(&config, 10, [3, 16, 16], Device::Cpu).unwrap();
        let schedule = LrSchedule::new(&config.optim, 3, 3);
        let mut optimizers = train::build_optimizers(&config, &model, &schedule).unwrap();
        for _ in 0..3 {
            train::train_step(config.train.method, &model, &mut optimizers, &x, &y).unwrap();
        }
        (config, model)
    };
    let (config, fused) = trained(&[]);
    let (_, reference) = trained(&["optim.fused=false", "model.channels_last=false"]);
    for i in 0..3 {
        for (a, b) in fused
            .network
            .trainable(i)
            .iter()
            .zip(reference.network.trainable(i))
        {
            assert!(a.allclose(&b, 1e-4, 1e-5, false), "block {} differs", i + 1);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cnn.safetensors");
    checkpoint::save(&fused, &config, 1, &path).unwrap();
    let reloaded = Model::new(&config, 10, [3, 16, 16], Device::Cpu).unwrap();
    checkpoint::load(&reloaded, &path).unwrap();
    let logits = |m: &Model| {
        m.block_logits(&x)
            .into_iter()
            .map(|l| l.unwrap())
            .collect::<Vec<_>>()
    };
    assert!(same(&logits(&fused), &logits(&reloaded)));
}

/// Counted FLOPs of a conv stage and of a linear layer, by hand.
#[test]
fn forward_flops_are_counted_by_hand() {
    // Building a model draws from libtorch's global generator: take the turn.
    let _guard = serial();
    let config = cnn_config(&[]);
    let model = Model::new(&config, 10, [3, 32, 32], Device::Cpu).unwrap();
    // conv 3→8 on 32×32: 2·3·9·8·32·32.
    assert_eq!(model.network.blocks[0].forward_flops(), (442_368.0, 442_368.0));
    // conv 16→16 after one max-pool: 2·16·9·16·16·16.
    assert_eq!(model.network.blocks[2].forward_flops().0, 1_179_648.0);
    let mlp = tiny_model(&small_config("sll", 1, &[]));
    assert_eq!(mlp.network.blocks[0].forward_flops().0, 2.0 * 784.0 * 256.0);
}

/// The CIFAR-10 VGG preset shrunk to a test: channels 16-32-64 with pooling after each,
/// one stage per block, 2 epochs on 8,000 training images (no augmentation, no warm-up),
/// evaluated on 2,000 test images. Must reach 35 % with SLL and 40 % with BP (chance is
/// 10 %; measured: sll 40.6 %, bp 47.7 %), with a head per block for SLL and metrics
/// recording every block's accuracy after every epoch.
#[test]
fn short_cifar_runs_reach_stated_accuracy() {
    let Some(shared) = common::shared_data("CIFAR-10", &[common::CIFAR10_ARCHIVE]) else {
        return;
    };
    let _guard = serial();
    for (method, floor) in [("sll", 0.35), ("bp", 0.40)] {
        let sets: Vec<String> = vec![
            format!("data.dir={shared:?}"),
            "data.train_subset=8000".into(),
            "data.test_subset=2000".into(),
            "model.channels=[16, 32, 64]".into(),
            "model.pool_after=[1, 2, 3]".into(),
            "model.block_size=1".into(),
            "optim.warmup_epochs=0".into(),
            "data.augment={}".into(),
            format!("train.method={method:?}"),
            "train.epochs=2".into(),
            "train.threads=2".into(),
        ];
        let config = Config::load(Some("cifar10-vgg"), &sets).unwrap();
        let (summary, dir) = train(config);
        assert!(
            summary.test_accuracy >= floor,
            "{method}: CIFAR-10 test accuracy {} below {floor}",
            summary.test_accuracy
        );
        let text = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
        let heads = if method == "bp" { 1 } else { 3 };
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let reported = v["block_test_accuracy"].as_array().unwrap();
            assert_eq!(reported.iter().filter(|a| !a.is_null()).count(), heads, "{line}");
        }
        assert_eq!(text.lines().count(), 2);
    }
}

/// The MNIST ViT preset shrunk to a test (width 64, depth 3, 4 heads; 2 epochs on 10,000
/// examples, no warm-up), with the trainable linear head and with the fixed projection
/// as head (d0 = classes): each must reach 45 % (chance is 10 %; measured: linear 51.8 %,
/// projection 59.3 % — a ViT learns slowly from 160 steps), and the saved checkpoint,
/// rebuilt from the run's config.toml, must give the same test accuracy exactly.
#[test]
fn short_vit_runs_reach_stated_accuracy_and_reload_exactly() {
    let _guard = serial();
    for head in ["linear", "projection"] {
        let sets: Vec<String> = vec![
            format!("data.dir={:?}", common::REPO_DATA),
            "data.train_subset=10000".into(),
            "data.test_subset=2000".into(),
            "model.width=64".into(),
            "model.depth=3".into(),
            "model.heads=4".into(),
            "optim.warmup_epochs=0".into(),
            format!("objective.head={head:?}"),
            "train.epochs=2".into(),
            "train.threads=2".into(),
        ];
        let config = Config::load(Some("mnist-vit"), &sets).unwrap();
        let (summary, dir) = train(config);
        assert!(
            summary.test_accuracy >= 0.45,
            "{head}: ViT test accuracy {} below 0.45",
            summary.test_accuracy
        );
        let run = dir.path().join("run");
        let text = std::fs::read_to_string(run.join("config.toml")).unwrap();
        let mut resolved = Config::from_toml(&text, "config.toml").unwrap();
        let (_, test) = sll::data::prepare(&mut resolved.data, Device::Cpu).unwrap();
        let model = Model::new(
            &resolved,
            test.classes,
            sll::data::input_shape(&test),
            Device::Cpu,
        )
        .unwrap();
        checkpoint::load(&model, &run.join("model.safetensors")).unwrap();
        assert_eq!(
            model.evaluate(&test, 500).accuracy,
            summary.test_accuracy,
            "{head}"
        );
    }
}
