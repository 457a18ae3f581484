//! The presets shipped with the tool (`configs/*.toml`), usable by name with
//! `--config NAME`.

/// The presets shipped with the tool, usable by name with `--config NAME`.
pub const PRESETS: &[(&str, &str)] = &[
    ("mnist-mlp", include_str!("../../configs/mnist-mlp.toml")),
    ("mnist-mlp4", include_str!("../../configs/mnist-mlp4.toml")),
    (
        "fashion-mnist-mlp",
        include_str!("../../configs/fashion-mnist-mlp.toml"),
    ),
    ("cifar10-vgg", include_str!("../../configs/cifar10-vgg.toml")),
    (
        "cifar10-resnet",
        include_str!("../../configs/cifar10-resnet.toml"),
    ),
    (
        "cifar10-resnet32",
        include_str!("../../configs/cifar10-resnet32.toml"),
    ),
    (
        "imagefolder-resnet",
        include_str!("../../configs/imagefolder-resnet.toml"),
    ),
    (
        "cifar10-vgg-full",
        include_str!("../../configs/cifar10-vgg-full.toml"),
    ),
    (
        "cifar10-resnet-full",
        include_str!("../../configs/cifar10-resnet-full.toml"),
    ),
    (
        "cifar10-resnet32-full",
        include_str!("../../configs/cifar10-resnet32-full.toml"),
    ),
    ("mnist-vit", include_str!("../../configs/mnist-vit.toml")),
    ("cifar10-vit", include_str!("../../configs/cifar10-vit.toml")),
    (
        "cifar10-vit-full",
        include_str!("../../configs/cifar10-vit-full.toml"),
    ),
    (
        "imagefolder-resnet-full",
        include_str!("../../configs/imagefolder-resnet-full.toml"),
    ),
];

/// The preset trained when no `--config` is given.
pub const DEFAULT_PRESET: &str = "mnist-mlp";

/// The text of a shipped preset.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|p| p.0 == name).map(|p| p.1)
}
