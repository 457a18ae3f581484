//! Auxiliary classifier heads: what a local rule classifies a block's output h_i with.
//!
//! A head maps h_i (unpooled: [N, C, H, W] feature maps, [N, D] vectors or [N, T, D]
//! tokens) to features, then to logits by a final linear map. The features are what
//! SLL's projection may read instead of the pooled block output
//! (`objective.projection_input = "head"`).
//!
//! - `linear`: u = pool(h) (the block's pooling, `model.pool_grid`), then linear.
//! - `pooled` (PredSim): feature maps average-pooled by a power-of-two kernel until
//!   C·h·w ≤ 2048, then linear; other outputs as `linear`.
//! - `conv` (DGL): two 3×3 conv–BN–ReLU at the block's width, average-pooled to 2×2,
//!   then linear. Feature maps only.
//! - `mlp`: pool(h) → linear to `objective.head_hidden` units → ReLU → linear.
//! - `infopro` (InfoPro's `1c2f` auxiliary net): a 3×3 stride-2 conv–BN–ReLU to twice
//!   the width (the width itself from 64 channels up), global average pooling, linear
//!   to 128, ReLU, linear. Feature maps only.
//! - `auglocal` (AugLocal's): new layers copying the network's later layers
//!   ([`super::auglocal`]), global pooling, linear.
//!
//! (`projection`, the fixed projection as a frozen classifier, is no module: the rules
//! that offer it compute it from their projection.)

use super::auglocal::{self, AuxNet, Plan};
use super::momentum::NextModule;
use crate::config::HeadKind;
use crate::model::{grid_pool, Pooling};
use anyhow::{bail, Result};
use tch::{nn, nn::Module, Tensor};

/// Largest flattened feature size of the `pooled` head (PredSim's `dim_in_decoder`).
pub const POOLED_MAX_FEATURES: i64 = 2048;

/// Hidden width of the `infopro` head (InfoPro's `aux_net_feature_dim`).
pub const INFOPRO_FEATURES: i64 = 128;

/// The shape of one block output, per example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputShape {
    /// A feature map [C, H, W].
    Map { channels: i64, height: i64, width: i64 },
    /// Anything else (`[D]` vectors, `[T, D]` tokens): only its pooled size counts.
    Other,
}

impl OutputShape {
    /// The shape of `dims` without the batch dimension.
    pub fn of(dims: &[i64]) -> Self {
        match dims {
            [channels, height, width] => OutputShape::Map {
                channels: *channels,
                height: *height,
                width: *width,
            },
            _ => OutputShape::Other,
        }
    }

    /// (C, H, W) of a feature map; `None` for other outputs.
    pub fn map(&self) -> Option<(i64, i64, i64)> {
        match *self {
            OutputShape::Map {
                channels,
                height,
                width,
            } => Some((channels, height, width)),
            OutputShape::Other => None,
        }
    }
}

/// A 3×3 conv (no bias) → batch norm → ReLU.
#[derive(Debug)]
struct ConvBnRelu {
    conv: nn::Conv2D,
    norm: nn::BatchNorm,
    flops: f64,
}

impl ConvBnRelu {
    fn new(path: nn::Path, c_in: i64, c_out: i64, stride: i64, out_area: i64) -> Self {
        let config = nn::ConvConfig {
            stride,
            padding: 1,
            bias: false,
            ..Default::default()
        };
        Self {
            conv: nn::conv2d(&path / "conv", c_in, c_out, 3, config),
            norm: nn::batch_norm2d(&path / "norm", c_out, Default::default()),
            flops: 2.0 * (c_in * 9 * c_out * out_area) as f64,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.norm, train).relu()
    }
}

#[derive(Debug)]
enum Net {
    Linear,
    Pooled {
        grid: (i64, i64),
    },
    Conv {
        convs: Box<[ConvBnRelu; 2]>,
    },
    Mlp {
        hidden: nn::Linear,
    },
    Infopro {
        conv: Box<ConvBnRelu>,
        hidden: nn::Linear,
    },
    Auglocal(Box<AuxNet>),
}

/// One block's auxiliary classifier.
#[derive(Debug)]
pub struct Head {
    /// A momentum head's copies of the next module (MAN), applied first.
    next: Option<Box<NextModule>>,
    net: Net,
    pooling: Pooling,
    fc: nn::Linear,
    features: i64,
    flops: f64,
}

impl Head {
    /// Builds a `kind` head under `path` (`block<i>.head`) for a block whose output
    /// has `shape`, pooling `pooling` and pooled size `pooled_dim`; `hidden` is the
    /// `mlp` head's width, `plan` what an `auglocal` head copies. `projection` heads
    /// have no module: an error here.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        path: nn::Path,
        kind: HeadKind,
        shape: &OutputShape,
        pooling: Pooling,
        pooled_dim: i64,
        classes: i64,
        hidden: i64,
        plan: Option<&Plan>,
    ) -> Result<Self> {
        let (net, features, mut flops) = build_net(&path, kind, shape, pooling, pooled_dim, hidden, plan)?;
        let linear = |path: nn::Path, features: i64| crate::model::linear(path, features, classes);
        // The linear head's map sits at `head` itself (checkpoints name it
        // `block<i>.head.weight`); the others' final map at `head.fc`.
        let fc = match kind {
            HeadKind::Linear => linear(path, features),
            _ => linear(&path / "fc", features),
        };
        flops += 2.0 * (features * classes) as f64;
        Ok(Self {
            next: None,
            net,
            pooling,
            fc,
            features,
            flops,
        })
    }

    /// The same head reading the next module's copies first (a momentum head; built
    /// for the next module's output).
    pub fn reading(mut self, next: NextModule) -> Self {
        self.flops += next.flops_per_example();
        self.next = Some(Box::new(next));
        self
    }

    /// A momentum head's EMA copy follows the next module (after its step).
    pub fn follow_next(&self) {
        if let Some(next) = &self.next {
            next.follow();
        }
    }

    /// The head's features of block output `h` (before its final linear map), [N, F].
    pub fn features(&self, h: &Tensor, train: bool) -> Tensor {
        let moved;
        let h = match &self.next {
            Some(next) => {
                moved = next.forward_t(h, train);
                &moved
            }
            None => h,
        };
        match &self.net {
            Net::Linear => self.pooling.apply(h),
            Net::Pooled { grid } => grid_pool(h, [grid.0, grid.1]),
            Net::Conv { convs } => {
                grid_pool(&convs[1].forward_t(&convs[0].forward_t(h, train), train), [2, 2])
            }
            Net::Mlp { hidden } => self.pooling.apply(h).apply(hidden).relu(),
            Net::Infopro { conv, hidden } => conv
                .forward_t(h, train)
                .adaptive_avg_pool2d([1, 1])
                .flatten(1, -1)
                .apply(hidden)
                .relu(),
            Net::Auglocal(net) => net.features(h, train),
        }
    }

    /// Logits from the head's features.
    pub fn classify(&self, features: &Tensor) -> Tensor {
        self.fc.forward(features)
    }

    /// Logits of block output `h`.
    pub fn logits(&self, h: &Tensor, train: bool) -> Tensor {
        self.classify(&self.features(h, train))
    }

    /// Whether the features are the block's pooled output itself (`linear`).
    pub fn reads_pooled_output(&self) -> bool {
        matches!(self.net, Net::Linear) && self.next.is_none()
    }

    /// Length of the features.
    pub fn feature_dim(&self) -> i64 {
        self.features
    }

    /// Forward FLOPs per example of the head's linear maps and convolutions (a momentum
    /// head's EMA copy counted at 2/3: see [`NextModule::flops_per_example`]).
    pub fn flops_per_example(&self) -> f64 {
        self.flops
    }
}

/// The part of a `kind` head before its final linear map, under `path`: the module,
/// the width of its features and its forward FLOPs per example.
fn build_net(
    path: &nn::Path,
    kind: HeadKind,
    shape: &OutputShape,
    pooling: Pooling,
    pooled_dim: i64,
    hidden: i64,
    plan: Option<&Plan>,
) -> Result<(Net, i64, f64)> {
    let map = shape.map();
    let needs_map = |name: &str| -> Result<(i64, i64, i64)> {
        match map {
            Some(m) => Ok(m),
            None => bail!(
                "config key `objective.head` = \"{name}\" needs blocks with feature maps (a CNN or a ResNet); use linear, pooled or mlp"
            ),
        }
    };
    Ok(match kind {
        HeadKind::Linear => (Net::Linear, pooled_dim, 0.0),
        HeadKind::Pooled => match map {
            Some((c, h, w)) => {
                let grid = pooled_grid(c, h, w);
                (Net::Pooled { grid }, c * grid.0 * grid.1, 0.0)
            }
            None => (Net::Linear, pooled_dim, 0.0),
        },
        HeadKind::Conv => {
            let (c, h, w) = needs_map("conv")?;
            let convs = Box::new([
                ConvBnRelu::new(path / "conv1", c, c, 1, h * w),
                ConvBnRelu::new(path / "conv2", c, c, 1, h * w),
            ]);
            let flops = convs.iter().map(|c| c.flops).sum();
            (Net::Conv { convs }, c * 4, flops)
        }
        HeadKind::Mlp => {
            let hidden_layer = crate::model::linear(path / "hidden", pooled_dim, hidden);
            let flops = 2.0 * (pooled_dim * hidden) as f64;
            (Net::Mlp { hidden: hidden_layer }, hidden, flops)
        }
        HeadKind::Infopro => {
            let (c, h, w) = needs_map("infopro")?;
            let width = if c < 64 { 2 * c } else { c };
            let area = ((h + 1) / 2) * ((w + 1) / 2);
            let conv = Box::new(ConvBnRelu::new(path / "conv", c, width, 2, area));
            let hidden_layer = crate::model::linear(path / "hidden", width, INFOPRO_FEATURES);
            let flops = conv.flops + 2.0 * (width * INFOPRO_FEATURES) as f64;
            (
                Net::Infopro {
                    conv,
                    hidden: hidden_layer,
                },
                INFOPRO_FEATURES,
                flops,
            )
        }
        HeadKind::Auglocal => {
            let Some(plan) = plan else {
                bail!("internal: an auglocal head without its plan")
            };
            let net = AuxNet::new(path.clone(), aux_input(shape, pooled_dim), pooling, plan)?;
            let (features, flops) = (net.feature_dim(), net.flops_per_example());
            (Net::Auglocal(Box::new(net)), features, flops)
        }
        HeadKind::Projection | HeadKind::Auto => {
            bail!("internal: no head module for objective.head = {kind:?}")
        }
    })
}

/// What an auxiliary net reads from a block output of `shape` and pooled size
/// `pooled_dim`.
pub fn aux_input(shape: &OutputShape, pooled_dim: i64) -> auglocal::Input {
    match shape.map() {
        Some((c, h, w)) => auglocal::Input::Map(c, h, w),
        None => auglocal::Input::Width(pooled_dim),
    }
}

/// Trainable parameters of the `kind` head that [`Head::new`] builds for a block output
/// of `shape` with pooled size `pooled_dim` (0 for `projection`, which is no module,
/// and for an `auglocal` head without a plan or with one that does not fit): what the
/// memory estimate counts before anything is allocated.
pub fn parameter_count(
    kind: HeadKind,
    shape: &OutputShape,
    pooled_dim: i64,
    classes: i64,
    hidden: i64,
    plan: Option<&Plan>,
) -> i64 {
    let linear = |features: i64| features * classes + classes;
    // A bias-free 3×3 conv and its batch norm's scale and shift.
    let conv_bn = |c_in: i64, c_out: i64| c_in * 9 * c_out + 2 * c_out;
    let map = shape.map();
    match (kind, map) {
        (HeadKind::Linear, _) | (HeadKind::Pooled, None) => linear(pooled_dim),
        (HeadKind::Pooled, Some((c, h, w))) => {
            let grid = pooled_grid(c, h, w);
            linear(c * grid.0 * grid.1)
        }
        (HeadKind::Conv, Some((c, _, _))) => 2 * conv_bn(c, c) + linear(c * 4),
        (HeadKind::Mlp, _) => pooled_dim * hidden + hidden + linear(hidden),
        (HeadKind::Infopro, Some((c, _, _))) => {
            let width = if c < 64 { 2 * c } else { c };
            conv_bn(c, width) + width * INFOPRO_FEATURES + INFOPRO_FEATURES + linear(INFOPRO_FEATURES)
        }
        (HeadKind::Auglocal, _) => plan
            .and_then(|p| auglocal::parameter_count(aux_input(shape, pooled_dim), p).ok())
            .map_or(0, |(count, features)| count + linear(features)),
        // Heads that need feature maps are refused for other outputs when built.
        (HeadKind::Conv | HeadKind::Infopro, None) | (HeadKind::Projection | HeadKind::Auto, _) => 0,
    }
}

/// The `pooled` head's output grid of a C×H×W map: halve the resolution (a kernel of
/// 2, 4, 8, ...) until C·h·w ≤ [`POOLED_MAX_FEATURES`] or the map is 1×1.
pub fn pooled_grid(c: i64, h: i64, w: i64) -> (i64, i64) {
    let mut kernel = 1;
    let size = |k: i64| ((h + k - 1) / k, (w + k - 1) / k);
    while c * size(kernel).0 * size(kernel).1 > POOLED_MAX_FEATURES
        && (size(kernel).0 > 1 || size(kernel).1 > 1)
    {
        kernel *= 2;
    }
    size(kernel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn head(kind: HeadKind, shape: &OutputShape) -> Result<(nn::VarStore, Head)> {
        let vs = nn::VarStore::new(Device::Cpu);
        let h = Head::new(
            vs.root() / "head",
            kind,
            shape,
            Pooling::Grid(2),
            16 * 4,
            10,
            32,
            None,
        )?;
        Ok((vs, h))
    }

    #[test]
    fn pooled_grid_halves_until_2048_features() {
        // 16×32×32 = 16384 → 16×16×16 = 4096 → 16×8×8 = 1024.
        assert_eq!(pooled_grid(16, 32, 32), (8, 8));
        // 64×8×8 = 4096 → 64×4×4 = 1024.
        assert_eq!(pooled_grid(64, 8, 8), (4, 4));
        // Small enough already.
        assert_eq!(pooled_grid(32, 8, 8), (8, 8));
        // Never below 1×1, however wide.
        assert_eq!(pooled_grid(4096, 2, 2), (1, 1));
    }

    #[test]
    fn every_head_gives_logits_and_the_features_it_says() {
        let _turn = crate::libtorch_turn();
        let shape = OutputShape::Map {
            channels: 16,
            height: 8,
            width: 8,
        };
        let x = Tensor::randn([3, 16, 8, 8], (Kind::Float, Device::Cpu));
        let kinds = [
            (HeadKind::Linear, 64, 2 * 64 * 10),
            (HeadKind::Pooled, 16 * 64, 2 * 1024 * 10),
            (HeadKind::Conv, 64, 2 * (2 * 16 * 9 * 16 * 64) + 2 * 64 * 10),
            (HeadKind::Mlp, 32, 2 * 64 * 32 + 2 * 32 * 10),
            (
                HeadKind::Infopro,
                128,
                2 * 16 * 9 * 32 * 16 + 2 * 32 * 128 + 2 * 128 * 10,
            ),
        ];
        for (kind, features, flops) in kinds {
            let (vs, h) = head(kind, &shape).unwrap();
            assert_eq!(h.feature_dim(), features, "{kind:?}");
            assert_eq!(h.features(&x, true).size(), [3, features], "{kind:?}");
            assert_eq!(h.logits(&x, false).size(), [3, 10], "{kind:?}");
            assert_eq!(h.flops_per_example(), flops as f64, "{kind:?}");
            assert!(vs.variables().keys().all(|k| k.starts_with("head")), "{kind:?}");
            let built: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
            assert_eq!(
                parameter_count(kind, &shape, 16 * 4, 10, 32, None),
                built,
                "{kind:?}"
            );
        }
        // On vector outputs the pooled head is the linear one.
        let (vs, _) = head(HeadKind::Pooled, &OutputShape::Other).unwrap();
        let built: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
        assert_eq!(built, 64 * 10 + 10);
        assert_eq!(
            parameter_count(HeadKind::Pooled, &OutputShape::Other, 64, 10, 32, None),
            built
        );
        // The linear head keeps the checkpoint names of earlier versions.
        let (vs, _) = head(HeadKind::Linear, &shape).unwrap();
        let mut names: Vec<String> = vs.variables().into_keys().collect();
        names.sort();
        assert_eq!(names, ["head.bias", "head.weight"]);
    }

    #[test]
    fn conv_heads_need_feature_maps() {
        let _turn = crate::libtorch_turn();
        for kind in [HeadKind::Conv, HeadKind::Infopro] {
            let e = head(kind, &OutputShape::Other).unwrap_err();
            assert!(format!("{e}").contains("objective.head"), "{e}");
        }
        assert!(head(HeadKind::Pooled, &OutputShape::Other).is_ok());
    }
}
