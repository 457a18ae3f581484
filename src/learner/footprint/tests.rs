//! The footprint's tests: exact parameter counts against the built networks, the
//! refusal of a model too large, and the units.

use super::*;
use crate::learner::Model;
use crate::model::Network;

fn config(sets: &[&str]) -> Config {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Config::load(None, &sets).unwrap()
}

/// The estimated parameter count of the network, and of the network with its
/// heads, equals what the built network and model hold.
fn assert_exact(sets: &[&str], input: InputShape) {
    let _turn = crate::libtorch_turn();
    let config = config(sets);
    let net = Network::new(&config.model, input, Device::Cpu).unwrap();
    let shape = network(&config.model, input).unwrap();
    assert_eq!(shape.parameters(), net.parameter_count() as u128, "{sets:?}");
    assert_eq!(shape.blocks.len(), net.len(), "{sets:?}");
    for (estimated, block) in shape.blocks.iter().zip(&net.blocks) {
        assert_eq!(estimated.pooled_dim, block.pooled_dim() as u128, "{sets:?}");
    }
    assert_eq!(shape.input_dim, net.input_dim as u128, "{sets:?}");
    let model = Model::new(&config, 10, input, Device::Cpu).unwrap();
    let footprint = estimate(&config, 10, input).unwrap();
    assert_eq!(
        footprint.parameter_count,
        model.network.parameter_count() as u128,
        "{sets:?}"
    );
    assert!(footprint.activations > 0.0 && footprint.total().is_finite());
}

#[test]
fn mlp_parameter_counts_are_exact() {
    assert_exact(&["model.hidden=[16, 8, 4]", "objective.d0=8"], [1, 6, 6]);
    assert_exact(
        &[
            "model.hidden=[16, 8, 4]",
            "model.block_size=2",
            "model.norm=layer",
            "train.method=bp",
        ],
        [1, 6, 6],
    );
    assert_exact(
        &[
            "model.hidden=[16, 8, 4]",
            "objective.head=auglocal",
            "objective.aux_depth=1",
        ],
        [1, 6, 6],
    );
    // PredSim's similarity map is a linear map on vectors.
    assert_exact(&["model.hidden=[16, 8, 4]", "train.method=predsim"], [1, 6, 6]);
    assert_exact(
        &[
            "model.hidden=[12, 12]",
            "model.norm=batch",
            "objective.head=projection",
            "objective.d0=10",
        ],
        [3, 4, 4],
    );
}

#[test]
fn cnn_parameter_counts_are_exact() {
    let cnn = [
        "model.kind=cnn",
        "model.channels=[4, 8, 8]",
        "model.pool_after=[1, 3]",
        "objective.d0=8",
    ];
    assert_exact(&cnn, [3, 8, 8]);
    let mut bn = cnn.to_vec();
    bn.extend(["model.norm=batch", "model.block_size=2", "model.pool_grid=3"]);
    assert_exact(&bn, [3, 8, 8]);
    // Every head: SLL's default `pooled` above; the others, by rule or setting.
    for extra in [
        "objective.head=linear",
        "objective.head=mlp",
        "objective.head=auglocal",
        "train.method=dgl",
        "train.method=local",
        "train.method=infopro",
        "train.method=predsim",
        "train.method=bp",
    ] {
        let mut sets = cnn.to_vec();
        sets.push(extra);
        assert_exact(&sets, [3, 8, 8]);
    }
}

#[test]
fn resnet_parameter_counts_are_exact() {
    let resnet = [
        "model.kind=resnet",
        "model.stages=[2, 1, 1]",
        "model.channels=[4, 8, 16]",
        "objective.d0=8",
    ];
    assert_exact(&resnet, [3, 8, 8]);
    let mut other = resnet.to_vec();
    other.extend(["model.norm=batch", "model.stem=imagenet", "model.block_size=3"]);
    assert_exact(&other, [3, 16, 16]);
    // AugLocal heads copy later residual blocks (strided where the width grows),
    // tapered, with and without the 1-D norm of depth-1 nets.
    for depth in [
        "objective.aux_depth=1",
        "objective.aux_depth=2",
        "objective.aux_depth=3",
    ] {
        let mut aug = resnet.to_vec();
        aug.extend(["objective.head=auglocal", "model.modules=4", depth]);
        assert_exact(&aug, [3, 8, 8]);
    }
    for rule in ["train.method=infopro", "train.method=predsim"] {
        let mut sets = resnet.to_vec();
        sets.push(rule);
        assert_exact(&sets, [3, 8, 8]);
    }
    // Every rule × every head, with and without momentum heads.
    for rule in ["sll", "local", "dgl", "infopro", "predsim"] {
        for head in ["auto", "linear", "pooled", "conv", "mlp", "infopro", "auglocal"] {
            for momentum in ["false", "true"] {
                let sets: Vec<String> = [
                    format!("train.method={rule}"),
                    format!("objective.head={head}"),
                    format!("objective.momentum_head={momentum}"),
                    "model.norm=batch".into(),
                ]
                .into();
                let mut all = resnet.to_vec();
                all.extend(sets.iter().map(String::as_str));
                assert_exact(&all, [3, 8, 8]);
            }
        }
    }
}

#[test]
fn vit_parameter_counts_are_exact() {
    let vit = [
        "model.kind=vit",
        "model.patch_size=2",
        "model.width=8",
        "model.depth=3",
        "model.heads=2",
        "objective.d0=8",
    ];
    assert_exact(&vit, [1, 6, 6]);
    let mut other = vit.to_vec();
    other.extend([
        "model.block_size=2",
        "model.class_token=true",
        "model.token_pool=cls",
        "model.patch_embed=linear",
        "model.mlp_ratio=1.5",
    ]);
    assert_exact(&other, [3, 4, 4]);
    let mut aug = vit.to_vec();
    aug.push("objective.head=auglocal");
    assert_exact(&aug, [1, 6, 6]);
}

#[test]
fn a_model_too_large_for_any_machine_is_refused_naming_what_to_reduce() {
    let config = config(&["model.hidden=[1000000, 1000000, 1000000]"]);
    let footprint = estimate(&config, 10, [1, 28, 28]).unwrap();
    // 784·10⁶ + 2·10¹² weights, ×4 bytes, for parameters, gradients and 2 moments.
    assert!(
        footprint.parameters > 8e12 && footprint.total() > 32e12,
        "{footprint:?}"
    );
    let e = check(&config, 10, [1, 28, 28], Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("the model needs about "), "{e}");
    assert!(
        e.contains("TiB") && e.contains("available") && e.contains("model.hidden"),
        "{e}"
    );
    // A CUDA device is not checked against the host's memory.
    check(&config, 10, [1, 28, 28], Device::Cuda(0)).unwrap();
    // The default preset fits.
    check(&Config::load(None, &[]).unwrap(), 10, [1, 28, 28], Device::Cpu).unwrap();
}

#[test]
fn dense_projections_and_batches_are_counted() {
    let dense = config(&["objective.d0=65536", "objective.projection=gaussian"]);
    let f = estimate(&dense, 10, [1, 28, 28]).unwrap();
    // Three 1024 × 65536 blocks' R and the input's 784 × 65536, 4 bytes each.
    assert!(f.projections >= (3.0 * 1024.0 + 784.0) * 65536.0 * 4.0, "{f:?}");
    let e = advice(&dense, &f);
    assert!(e.contains("objective.d0"), "{e}");
    let big_batch = config(&["data.batch_size=1000000"]);
    let f = estimate(&big_batch, 10, [1, 28, 28]).unwrap();
    assert_eq!(f.batch, 1_000_000);
    assert!(advice(&big_batch, &f).contains("data.batch_size"));
    // train_subset caps the batch.
    let capped = config(&["data.batch_size=1000000", "data.train_subset=512"]);
    assert!(estimate(&capped, 10, [1, 28, 28]).unwrap().activations < f.activations);
}

#[test]
fn sizes_read_in_binary_units() {
    assert_eq!(human_bytes(512.0), "512 B");
    assert_eq!(human_bytes(1536.0), "1.5 KiB");
    assert_eq!(human_bytes(3.9 * 1024f64.powi(4)), "3.9 TiB");
    assert_eq!(
        meminfo_field("MemTotal: 10 kB\nMemAvailable:   22 kB\n", "MemAvailable"),
        Some(22 * 1024)
    );
}
