//! The config's tests: presets, `--set`, validation.

use super::*;

#[test]
fn presets_parse_and_validate() {
    for (name, _) in PRESETS {
        Config::load(Some(name), &[]).unwrap();
    }
}

#[test]
fn set_overrides_values() {
    let c = Config::load(None, &["objective.d0=64".into(), "train.method=bp".into()]).unwrap();
    assert_eq!(c.objective.d0, 64);
    assert_eq!(c.train.method, Method::Bp);
}

#[test]
fn unknown_key_is_named() {
    let e = Config::load(None, &["objective.dzero=3".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("objective"), "{e:#}");
    assert!(format!("{e:#}").contains("dzero"), "{e:#}");
}

#[test]
fn bad_value_is_named() {
    let e = Config::load(None, &["objective.d0=\"big\"".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("objective.d0"), "{e:#}");
    let e = Config::load(None, &["objective.tau=0".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("objective.tau"), "{e:#}");
}

#[test]
fn projection_head_needs_d0_equal_classes() {
    let c = Config::load(None, &["objective.head=projection".into()]).unwrap();
    let e = c.validate_for_classes(10).unwrap_err();
    assert!(format!("{e:#}").contains("objective.d0"), "{e:#}");
    let c = Config::load(
        None,
        &["objective.head=projection".into(), "objective.d0=10".into()],
    )
    .unwrap();
    c.validate_for_classes(10).unwrap();
}

#[test]
fn local_and_bp_record_no_divergence_and_still_round_trip() {
    for method in ["local", "bp"] {
        let c = Config::load(
            None,
            &[format!("train.method={method}"), "objective.beta=2".into()],
        )
        .unwrap();
        assert_eq!((c.objective.beta, c.objective.prior), (0.0, Prior::None));
        assert_eq!(Config::from_toml(&c.to_toml(), "x").unwrap(), c);
    }
    let sll = Config::load(None, &[]).unwrap();
    assert_eq!((sll.objective.beta, sll.objective.prior), (1.0, Prior::Previous));
}

#[test]
fn out_of_range_values_are_named() {
    let cases = [
        ("optim.lr=nan", "optim.lr"),
        ("optim.weight_decay=-1", "optim.weight_decay"),
        ("optim.momentum=1", "optim.momentum"),
        ("optim.min_lr=1", "optim.min_lr"),
        ("optim.warmup_epochs=100", "optim.warmup_epochs"),
        ("objective.tau=inf", "objective.tau"),
        ("objective.beta=inf", "objective.beta"),
        ("objective.d0=1000000000", "objective.d0"),
        ("model.hidden=[100000000]", "model.hidden"),
        ("model.block_size=4", "model.block_size"),
        ("data.workers=100000", "data.workers"),
        ("data.batch_size=99999999999", "data.batch_size"),
        ("data.mean=[nan]", "data.mean"),
        ("data.augment.crop_size=20", "data.augment.crop_size"),
        ("data.image_size=64", "data.image_size"),
        ("data.dataset=\"imagenet\"", "data.dataset"),
        ("train.threads=100000", "train.threads"),
        ("train.stages=2", "train.stages"),
        ("train.epochs=99999999999", "train.epochs"),
        ("preset=\"a/b\"", "preset"),
    ];
    for (set, key) in cases {
        let mut sets = vec![set.to_string()];
        if set.starts_with("data.mean") {
            sets.push("data.std=[1]".into());
        }
        let e = format!("{:#}", Config::load(None, &sets).unwrap_err());
        assert!(e.starts_with(&format!("config key `{key}`")), "{set}: {e}");
    }
    let e = format!(
        "{:#}",
        Config::load(
            None,
            &["model.kind=\"cnn\"".into(), "model.pool_after=[9]".into()]
        )
        .unwrap_err()
    );
    assert!(e.contains("model.pool_after"), "{e}");
}

#[test]
fn resolved_config_round_trips() {
    let c = Config::load(None, &[]).unwrap();
    assert_eq!(Config::from_toml(&c.to_toml(), "x").unwrap(), c);
}

#[test]
fn a_key_the_kind_lacks_is_an_error_that_lists_the_kinds_keys() {
    let e = format!(
        "{:#}",
        Config::load(None, &["model.modules=4".into()]).unwrap_err()
    );
    assert!(e.contains("key `model.modules`"), "{e}");
    assert!(e.contains("`hidden`") && e.contains("`block_size`"), "{e}");
    assert!(!e.contains("`channels`"), "{e}");
    let e = format!(
        "{:#}",
        Config::load(None, &["model.hidden=5".into()]).unwrap_err()
    );
    assert!(e.contains("key `model.hidden`: invalid type"), "{e}");
}

#[test]
fn changing_the_kind_drops_the_presets_keys_of_the_old_kind() {
    let sets = [
        "model.kind=\"cnn\"".to_string(),
        "model.channels=[8, 8, 8]".into(),
    ];
    let c = Config::load(None, &sets).unwrap();
    match &c.model {
        ModelConfig::Cnn(cnn) => {
            assert_eq!(cnn.channels, [8, 8, 8]);
            assert_eq!(cnn.pool_grid, 2);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.model.describe(), "cnn 8-8-8 (max-pool after 2,3), 1 per block");
    // A key given for the old kind on the command line is still an error.
    let sets = ["model.kind=\"cnn\"".to_string(), "model.hidden=[8]".into()];
    let e = format!("{:#}", Config::load(None, &sets).unwrap_err());
    assert!(e.contains("key `model.hidden`"), "{e}");
}

#[test]
fn a_run_directory_written_with_every_kinds_keys_still_loads() {
    // The config.toml of a cifar10-resnet32 run written before per-kind model configs:
    // its [model] holds the MLP's, CNN's and ViT's keys too.
    let text = include_str!("../../tests/data/flat-model-config.toml");
    let c = Config::from_toml(text, "config.toml").unwrap();
    assert_eq!(
        c.model.describe(),
        "resnet 5-5-5 blocks of widths 16-32-64 (cifar stem), 4 modules"
    );
    // A key no kind has is still refused.
    let bad = text.replace("[model]\n", "[model]\nwidht = 3\n");
    let e = format!("{:#}", Config::from_toml(&bad, "config.toml").unwrap_err());
    assert!(e.contains("key `model.widht`"), "{e}");
}

#[test]
fn presets_describe_their_models_as_before() {
    let describe = |p: &str| Config::load(Some(p), &[]).unwrap().model.describe();
    assert_eq!(describe("mnist-mlp"), "mlp 1024-1024-1024, 1 per block");
    assert_eq!(
        describe("cifar10-resnet32"),
        "resnet 5-5-5 blocks of widths 16-32-64 (cifar stem), 16 modules"
    );
    assert_eq!(
        describe("cifar10-vgg"),
        "cnn 64-128-256-512 (max-pool after 1,2,3), 2 per block"
    );
    assert_eq!(
        describe("mnist-vit"),
        "vit patch 7 width 128 depth 6 heads 4 mlp 2x (mean pooling), 1 per block"
    );
}

#[test]
fn each_method_resolves_its_own_head_and_old_runs_keep_the_linear_one() {
    let head = |method: &str| {
        let sets = [format!("train.method=\"{method}\"")];
        Config::load(Some("cifar10-resnet32"), &sets)
            .unwrap()
            .objective
            .head
    };
    assert_eq!(head("sll"), HeadKind::Pooled);
    assert_eq!(head("predsim"), HeadKind::Pooled);
    assert_eq!(head("local"), HeadKind::Linear);
    assert_eq!(head("bp"), HeadKind::Linear);
    assert_eq!(head("dgl"), HeadKind::Conv);
    assert_eq!(head("infopro"), HeadKind::Infopro);
    // A head given is kept.
    let sets = ["objective.head=\"linear\"".to_string()];
    let c = Config::load(Some("cifar10-resnet32"), &sets).unwrap();
    assert_eq!(c.objective.head, HeadKind::Linear);
    // The config.toml of a run written before `objective.head` existed has no head:
    // it trained the linear one, whatever `auto` means now.
    let c = Config::load(Some("cifar10-resnet32"), &[]).unwrap();
    let text = c.to_toml().replace("head = \"pooled\"\n", "");
    assert!(!text.lines().any(|l| l.starts_with("head = ")), "{text}");
    let old = Config::from_toml(&text, "config.toml").unwrap();
    assert_eq!(old.objective.head, HeadKind::Linear);
}

#[test]
fn presets_ask_for_auto_precision_and_old_runs_read_as_fp32() {
    use super::Precision;
    let c = Config::load(Some("cifar10-vgg"), &[]).unwrap();
    assert_eq!(c.train.precision, Precision::Auto);
    let c = Config::load(None, &["train.precision=\"bf16\"".into()]).unwrap();
    assert_eq!(c.train.precision, Precision::Bf16);
    assert_eq!(Config::from_toml(&c.to_toml(), "x").unwrap(), c);
    let e = Config::load(None, &["train.precision=\"fp16\"".into()]).unwrap_err();
    assert!(format!("{e:#}").contains("train.precision"), "{e:#}");
    // The config.toml of a run written before `train.precision` existed trained fp32.
    let text = Config::load(None, &[])
        .unwrap()
        .to_toml()
        .replace("precision = \"auto\"\n", "");
    assert!(!text.contains("precision"), "{text}");
    let old = Config::from_toml(&text, "config.toml").unwrap();
    assert_eq!(old.train.precision, Precision::Fp32);
}
