//! Tests of [`super`].

use super::*;

fn network(sets: &[&str], input: InputShape) -> Network {
    let mut sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    sets.extend(["model.kind=resnet".into(), "model.norm=batch".into()]);
    let config = crate::model::test_config(&sets, input[1] as usize).unwrap();
    Network::new(&config, input, Device::Cpu).unwrap()
}

/// Every batch-norm scale γ of the network.
fn norm_scales(net: &Network) -> Vec<f32> {
    let mut scales = vec![];
    for store in &net.stores {
        for (name, t) in store.variables() {
            if name.ends_with("norm.weight") {
                scales.extend(Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap());
            }
        }
    }
    scales
}

#[test]
fn norm_init_sets_the_batch_norm_scales() {
    let _turn = crate::libtorch_turn();
    tch::manual_seed(0);
    let input = [3, 32, 32];
    let ones = norm_scales(&network(&["model.norm_init=\"ones\""], input));
    // Stem + 3 stages × 3 blocks × 2 convs (+ the shortcut projections' norms).
    assert!(ones.len() >= 16 * 19, "{} scales", ones.len());
    assert!(ones.iter().all(|&g| g == 1.0));
    let uniform = norm_scales(&network(&[], input));
    assert_eq!(uniform.len(), ones.len());
    assert!(uniform.iter().all(|&g| (0.0..1.0).contains(&g)));
    let mean = uniform.iter().sum::<f32>() / uniform.len() as f32;
    assert!((mean - 0.5).abs() < 0.05, "U(0, 1) scales average {mean}");
}

fn output(net: &Network, x: &Tensor) -> Vec<Vec<i64>> {
    let mut h = x.shallow_clone();
    net.blocks
        .iter()
        .map(|b| {
            h = b.forward_t(&h, false);
            h.size()
        })
        .collect()
}

#[test]
fn resnet20_has_the_published_layout() {
    let _turn = crate::libtorch_turn();
    let net = network(
        &["model.stages=[3,3,3]", "model.channels=[16,32,64]"],
        [3, 32, 32],
    );
    assert_eq!(net.len(), 9);
    // Convs + BN of CIFAR ResNet-20 with 1×1 projection shortcuts, counted by hand:
    // stem 432 + 32; stage 1: 3·(2·2304 + 64); stage 2: 4608 + 9216 + 512 + 192 and
    // 2·(2·9216 + 128); stage 3: 18432 + 36864 + 2048 + 384 and 2·(2·36864 + 256).
    assert_eq!(net.parameter_count(), 271_824);
    let sizes = output(
        &net,
        &Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, Device::Cpu)),
    );
    assert_eq!(sizes[0], [2, 16, 32, 32]);
    assert_eq!(sizes[3], [2, 32, 16, 16]);
    assert_eq!(sizes[8], [2, 64, 8, 8]);
    assert_eq!(net.blocks[8].pooled_dim(), 64 * 4);
}

#[test]
fn block_size_groups_residual_blocks_and_imagenet_stem_downsamples() {
    let _turn = crate::libtorch_turn();
    let net = network(
        &[
            "model.stages=[2,2,2,2]",
            "model.channels=[64,128,256,512]",
            "model.stem=imagenet",
            "model.block_size=2",
        ],
        [3, 64, 64],
    );
    assert_eq!(net.len(), 4);
    let sizes = output(
        &net,
        &Tensor::randn([2, 3, 64, 64], (tch::Kind::Float, Device::Cpu)),
    );
    assert_eq!(
        sizes,
        [[2, 64, 16, 16], [2, 128, 8, 8], [2, 256, 4, 4], [2, 512, 2, 2]]
    );
    let (total, first) = net.blocks[0].forward_flops();
    // The 7×7 stem on a 32×32 output map is the first layer.
    assert_eq!(first, 2.0 * (3 * 49 * 64 * 32 * 32) as f64);
    assert!(total > first);
}

/// ResNet-32's 16 units (stem + 15 residual blocks) in K contiguous modules, as
/// InfoPro splits them: K = 16 gives the stem a module of its own.
#[test]
fn modules_split_the_units_into_contiguous_groups() {
    let _turn = crate::libtorch_turn();
    let mut config = ResnetConfig {
        stages: vec![5, 5, 5],
        channels: vec![16, 32, 64],
        ..Default::default()
    };
    config.modules = 16;
    let groups = unit_groups(&config, 15);
    assert_eq!(groups.len(), 16);
    assert_eq!(groups[0], (true, 0..0));
    assert_eq!(groups[1], (false, 0..1));
    assert_eq!(groups[15], (false, 14..15));
    config.modules = 4;
    assert_eq!(
        unit_groups(&config, 15),
        [(true, 0..3), (false, 3..7), (false, 7..11), (false, 11..15)]
    );
    config.modules = 2;
    assert_eq!(unit_groups(&config, 15), [(true, 0..7), (false, 7..15)]);
    // Not a divisor: near-equal contiguous groups (5 units in 3: 1, 2, 2).
    config.modules = 3;
    assert_eq!(
        unit_groups(&config, 4),
        [(true, 0..0), (false, 0..2), (false, 2..4)]
    );
    // 0: block_size residual blocks per module, the stem with the first.
    config.modules = 0;
    config.block_size = 5;
    assert_eq!(
        unit_groups(&config, 15),
        [(true, 0..5), (false, 5..10), (false, 10..15)]
    );
    // The network follows the groups: a stem-only first module, 16 in all.
    config.modules = 16;
    config.norm = Norm::Batch;
    let net = build(&config, [3, 32, 32], Device::Cpu);
    assert_eq!(net.len(), 16);
    let x = Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
    let sizes = output(&net, &x);
    assert_eq!(sizes[0], [2, 16, 32, 32]);
    assert_eq!(sizes[15], [2, 64, 8, 8]);
    assert_eq!(
        net.blocks[0].forward_flops().0,
        2.0 * (3 * 9 * 16 * 32 * 32) as f64
    );
}

#[test]
fn stages_and_channels_must_match() {
    let _turn = crate::libtorch_turn();
    let e = crate::model::test_config(
        &[
            "model.kind=resnet".into(),
            "model.stages=[3,3]".into(),
            "model.channels=[16,32,64]".into(),
        ],
        32,
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("model.channels"), "{e:#}");
}
