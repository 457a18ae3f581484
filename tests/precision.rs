//! Mixed precision (`train.precision = "bf16"`): one bf16 step tracks the fp32 step
//! for every rule and every kind of model, with fp32 master weights, gradients and
//! optimizer state after it; a bf16 run records its precision, its checkpoint is fp32
//! and `sll eval` (fp32) reproduces its recorded accuracy.

mod common;
use common::{serial, sll, REPO_DATA};
use sll::config::{Config, Precision};
use sll::learner::Model;
use sll::train::{build_optimizers, optim::LrSchedule, train_step};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// A tiny model of `kind` trained by `method` in `precision`.
fn config(kind: &str, method: &str, precision: &str) -> Config {
    let mut sets: Vec<String> = vec![
        format!("train.method={method:?}"),
        format!("train.precision={precision:?}"),
        "train.threads=1".into(),
        "objective.d0=64".into(),
        "optim.schedule=\"constant\"".into(),
    ];
    let (preset, model): (&str, &[&str]) = match kind {
        "mlp" => ("mnist-mlp", &["model.hidden=[64, 48, 32]"]),
        "cnn" => (
            "mnist-mlp",
            &[
                "model.kind=\"cnn\"",
                "model.channels=[8, 16, 16]",
                "model.pool_after=[2, 3]",
                "model.norm=\"batch\"",
            ],
        ),
        "resnet" => (
            "cifar10-resnet32",
            &[
                "model.stages=[1, 1, 1]",
                "model.channels=[8, 16, 16]",
                "model.modules=4",
            ],
        ),
        "vit" => ("mnist-vit", &["model.width=32", "model.depth=2", "model.heads=2"]),
        other => panic!("no model {other}"),
    };
    sets.extend(model.iter().map(|s| s.to_string()));
    Config::load_quietly(Some(preset), &sets).unwrap()
}

/// The loss terms of one training step from seed 5, and the model and optimizers after it.
fn one_step(config: &Config, input: [i64; 3]) -> (Vec<f64>, Model, Vec<sll::train::optim::Optimizer>) {
    tch::manual_seed(5);
    let model = Model::new(config, 10, input, Device::Cpu).unwrap();
    let schedule = LrSchedule::new(&config.optim, 1, 1);
    let mut optimizers = build_optimizers(config, &model, &schedule).unwrap();
    let x = Tensor::randn([32, input[0], input[1], input[2]], (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [32], (Kind::Int64, Device::Cpu));
    let losses = train_step(config.train.method, &model, &mut optimizers, &x, &y).unwrap();
    let terms = losses
        .iter()
        .flat_map(|l| l.terms.0.iter().map(|(_, v)| *v))
        .collect();
    (terms, model, optimizers)
}

#[test]
fn a_bf16_step_tracks_the_fp32_step_with_fp32_weights_and_state() {
    let _guard = serial();
    let mut cases: Vec<(&str, &str)> = ["sll", "local", "dgl", "infopro", "predsim", "bp"]
        .iter()
        .map(|m| ("cnn", *m))
        .collect();
    for kind in ["mlp", "resnet", "vit"] {
        cases.extend([(kind, "sll"), (kind, "bp")]);
    }
    for (kind, method) in cases {
        let what = format!("{kind} {method}");
        let input = if kind == "resnet" {
            [3, 32, 32]
        } else {
            [1, 28, 28]
        };
        let fp32 = config(kind, method, "fp32");
        let bf16 = config(kind, method, "bf16");
        let (expected, _, _) = one_step(&fp32, input);
        let (got, model, optimizers) = one_step(&bf16, input);
        assert_eq!(model.precision, Precision::Bf16);
        assert_eq!(expected.len(), got.len(), "{what}");
        // Really computed in bf16: not the fp32 numbers.
        assert_ne!(expected, got, "{what}: the bf16 step gave the fp32 step's losses");
        for (e, g) in expected.iter().zip(&got) {
            // bf16 keeps 8 bits of mantissa: the products round at ~0.4 %; the losses,
            // computed in fp32 from them, moved by at most 0.13 % when this was written.
            assert!(
                (e - g).abs() <= 0.01 * e.abs() + 1e-3,
                "{what}: bf16 loss term {g} against fp32 {e}"
            );
        }
        for store in &model.network.stores {
            for (name, t) in store.variables() {
                assert_eq!(t.kind(), Kind::Float, "{what}: {name} is not fp32 after the step");
                if t.requires_grad() {
                    let g = t.grad();
                    assert!(
                        !g.defined() || g.kind() == Kind::Float,
                        "{what}: {name}'s gradient"
                    );
                }
            }
        }
        for optimizer in &optimizers {
            for t in optimizer.state().tensors {
                assert_eq!(t.kind(), Kind::Float, "{what}: optimizer state is not fp32");
            }
        }
    }
}

/// `sll train` of a small MNIST MLP for 1 epoch in `precision` into `run`.
fn train_small(run: &Path, precision: &str, train: usize) -> std::process::Output {
    let sets = [
        format!("data.dir={REPO_DATA:?}"),
        format!("data.train_subset={train}"),
        format!("data.test_subset={}", train / 4),
        "model.hidden=[64, 64]".to_string(),
    ];
    let mut args = vec![
        "train",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--precision",
        precision,
    ];
    for set in &sets {
        args.extend(["--set", set]);
    }
    let run = run.display().to_string();
    args.extend(["--out", &run]);
    sll(&args, Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// A bf16 run records `precision = "bf16"`, saves fp32 weights, and `sll eval`, which
/// evaluates in fp32, gives exactly the accuracy it recorded.
#[test]
fn a_bf16_checkpoint_is_fp32_and_evaluates_to_its_recorded_accuracy() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let trained = train_small(&run, "bf16", 2000);
    let stderr = String::from_utf8_lossy(&trained.stderr);
    assert!(trained.status.success(), "{stderr}");
    assert!(
        stderr.contains("bf16 ("),
        "the start line names the precision: {stderr}"
    );
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("precision = \"bf16\""), "{config}");
    let bytes = std::fs::read(run.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, view) in file.tensors() {
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
    }
    let out = sll(&["eval", "--run", &run.display().to_string()], root.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(identical)"));
}

/// `auto` is resolved when a run starts: config.toml holds fp32 or bf16, as this
/// machine's native arithmetic says.
#[test]
fn auto_is_recorded_as_what_it_resolved_to() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let trained = train_small(&run, "auto", 400);
    assert!(
        trained.status.success(),
        "{}",
        String::from_utf8_lossy(&trained.stderr)
    );
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let native = sll::precision::native_bf16(Device::Cpu).0;
    let expected = if native { "bf16" } else { "fp32" };
    assert!(
        config.contains(&format!("precision = \"{expected}\"")),
        "{config}"
    );
}

/// In bf16 as in fp32, the thread pipeline trains bit for bit what the sequential
/// trainer does (each stage thread opens its own autocast regions).
#[test]
fn the_thread_pipeline_trains_bf16_as_the_sequential_trainer_does() {
    let _guard = serial();
    let dir = tempfile::tempdir().unwrap();
    let sets = |extra: &[&str]| -> Vec<String> {
        let mut s: Vec<String> = [
            "model.kind=\"cnn\"",
            "model.channels=[8, 16, 16]",
            "model.pool_after=[2, 3]",
            "model.norm=\"batch\"",
            "objective.d0=64",
            "train.threads=1",
            "train.epochs=1",
            "train.precision=\"bf16\"",
            "data.train_subset=600",
            "data.test_subset=300",
        ]
        .map(String::from)
        .to_vec();
        s.push(format!("data.dir={REPO_DATA:?}"));
        s.extend(extra.iter().map(|e| e.to_string()));
        s
    };
    let sequential = dir.path().join("sequential");
    sll::run::run(Config::load(None, &sets(&[])).unwrap(), &sequential).unwrap();
    let piped = dir.path().join("pipeline");
    let config = Config::load(None, &sets(&["train.pipeline=\"threads\"", "train.stages=2"])).unwrap();
    sll::run::run(config, &piped).unwrap();
    common::assert_same_training(&sequential, &piped, "bf16");
}
