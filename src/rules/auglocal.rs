//! AugLocal's auxiliary networks (Ma et al., *Scaling Supervised Local Learning with
//! Augmented Auxiliary Networks*, ICLR 2024; reference code ChenxiangMA/AugLocal):
//! the head of a module is a *new* stack of layers that copies the network after it.
//!
//! With the network's layers (units) numbered 0 … L−1 and module m's last layer l, its
//! auxiliary net has
//!
//! ```text
//! d_m = max(1, round(d·(1 − m·γ/(K−2)) + m·γ/(K−2)))          m = 0 … K−2 (K modules)
//! layers l + 1 … L − 1                                          if d_m ≥ L − 1 − l
//! layers round(l + (L − l − 1)/d_m · i), i = 1 … d_m            otherwise
//! ```
//!
//! (round half to even, as Python's `round` in the reference code), each built anew with
//! the sampled layer's width: a basic residual block with batch norm for a ResNet's
//! residual layers, a 3×3 conv–BN–ReLU for a CNN's, a linear–ReLU for an MLP's, a
//! transformer block for a ViT's; on feature maps stride 2 wherever the width grows
//! (one halving per doubling). Then global average pooling (the block's token pooling,
//! for tokens), a 1-D batch norm where d_m ≤ 1, and the linear classifier. The last
//! module has no later layers: its head is pooling and the linear classifier, the
//! network's own.
//!
//! `model.modules = K` means here what it means for every rule: K gradient-isolated
//! modules, each with its head. The reference code's "K = 16" instead trains K − d
//! modules (the first K − d − 1 layers one each, the last d + 1 layers together on the
//! final loss); docs/local-rules.md compares the two.

use crate::model::cnn::{conv, ConvShape};
use crate::model::vit::TransformerLayer;
use crate::model::{batch_norm_config, Layer, NormInit, Pooling};
use anyhow::{bail, Result};
use tch::{nn, nn::ModuleT, Tensor};

/// The depth d_m of each module's auxiliary net, m = 0 … K−2, for `aux_depth` d,
/// taper γ and K `modules`.
pub fn depths(aux_depth: usize, taper: f64, modules: usize) -> Vec<usize> {
    let d = aux_depth as f64;
    (0..modules.saturating_sub(1))
        .map(|m| {
            if modules <= 2 {
                return aux_depth;
            }
            let x = (m as f64 * taper) / (modules - 2) as f64;
            ((d * (1.0 - x) + x).round_ties_even() as usize).max(1)
        })
        .collect()
}

/// The layers (0-based, of `total`) that the auxiliary net of a module ending at layer
/// `last` copies, for depth `depth`.
pub fn sampled(last: usize, total: usize, depth: usize) -> Vec<usize> {
    let after = total.saturating_sub(last + 1);
    if depth >= after {
        return (last + 1..total).collect();
    }
    let step = after as f64 / depth as f64;
    (1..=depth)
        .map(|i| (last as f64 + step * i as f64).round_ties_even() as usize)
        .collect()
}

/// What one module's auxiliary net copies.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The sampled later layers, input to output (empty for the last module).
    pub layers: Vec<Layer>,
    /// The scheduled depth d_m (0 for the last module).
    pub depth: usize,
}

/// The plan of `module` for a network whose modules hold `modules` layers each
/// (input to output), with d = `aux_depth` and γ = `taper`.
pub fn plan(modules: &[Vec<Layer>], module: usize, aux_depth: usize, taper: f64) -> Result<Plan> {
    if let Some(i) = modules.iter().position(|m| m.is_empty()) {
        bail!(
            "config key `objective.head` = \"auglocal\" copies the network's later layers, but block {} does not describe its layers",
            i + 1
        );
    }
    if module + 1 >= modules.len() {
        return Ok(Plan {
            layers: vec![],
            depth: 0,
        });
    }
    let all: Vec<Layer> = modules.iter().flatten().copied().collect();
    let last = modules[..=module].iter().map(Vec::len).sum::<usize>() - 1;
    let depth = depths(aux_depth, taper, modules.len())[module];
    Ok(Plan {
        layers: sampled(last, all.len(), depth)
            .into_iter()
            .map(|i| all[i])
            .collect(),
        depth,
    })
}

/// One layer of an auxiliary net, with its input width and stride.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Step {
    layer: Layer,
    c_in: i64,
    stride: i64,
    /// Output positions per example (H·W of a map; 1 otherwise).
    area: i64,
}

/// What the auxiliary net reads: a feature map (C, H, W), or `width` features (a
/// vector or each of a sequence's tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// [C, H, W].
    Map(i64, i64, i64),
    /// Vectors or tokens of this width.
    Width(i64),
}

/// The layers of `plan` on `input`: widths, and on maps a stride of 2 per doubling of
/// the width (AugLocal's rule), carried over while the width grows faster.
fn steps(input: Input, plan: &Plan) -> Result<Vec<Step>> {
    let (mut c, mut h, mut w) = match input {
        Input::Map(c, h, w) => (c, h, w),
        Input::Width(width) => (width, 1, 1),
    };
    let mut pending = 0u32;
    let mut out = vec![];
    for &layer in &plan.layers {
        let width = layer.width();
        let map_layer = matches!(layer, Layer::Conv { .. } | Layer::Residual { .. });
        if map_layer != matches!(input, Input::Map(..)) {
            bail!("config key `objective.head` = \"auglocal\": a block's output and a later layer ({layer:?}) do not fit together");
        }
        if matches!(layer, Layer::Transformer { .. }) && width != c {
            bail!("config key `objective.head` = \"auglocal\": transformer blocks of width {width} after width {c}");
        }
        let mut stride = 1;
        if map_layer {
            if width >= c && c > 0 {
                pending += (width / c).ilog2();
            }
            if pending >= 1 {
                stride = 2;
                pending -= 1;
                (h, w) = ((h - 1) / 2 + 1, (w - 1) / 2 + 1);
            }
        }
        out.push(Step {
            layer,
            c_in: c,
            stride,
            area: h * w,
        });
        c = width;
    }
    Ok(out)
}

/// Trainable parameters of one step.
fn step_parameters(s: &Step) -> i64 {
    let c = s.layer.width();
    let conv_bn = |c_in: i64, c_out: i64, k: i64| c_in * k * k * c_out + 2 * c_out;
    match s.layer {
        Layer::Conv { .. } => conv_bn(s.c_in, c, 3),
        Layer::Residual { .. } => {
            let shortcut = if s.stride != 1 || s.c_in != c {
                conv_bn(s.c_in, c, 1)
            } else {
                0
            };
            conv_bn(s.c_in, c, 3) + conv_bn(c, c, 3) + shortcut
        }
        Layer::Dense { .. } => s.c_in * c + c,
        Layer::Transformer { width, mlp_ratio, .. } => {
            let hidden = (width as f64 * mlp_ratio).round() as i64;
            let linear = |i: i64, o: i64| i * o + o;
            2 * 2 * width
                + linear(width, 3 * width)
                + linear(width, width)
                + linear(width, hidden)
                + linear(hidden, width)
        }
    }
}

/// Forward FLOPs per example of one step.
fn step_flops(s: &Step) -> f64 {
    let c = s.layer.width();
    let conv = |c_in: i64, c_out: i64, k: i64| 2.0 * (c_in * k * k * c_out * s.area) as f64;
    match s.layer {
        Layer::Conv { .. } => conv(s.c_in, c, 3),
        Layer::Residual { .. } => {
            let shortcut = if s.stride != 1 || s.c_in != c {
                conv(s.c_in, c, 1)
            } else {
                0.0
            };
            conv(s.c_in, c, 3) + conv(c, c, 3) + shortcut
        }
        Layer::Dense { .. } => 2.0 * (s.c_in * c) as f64,
        Layer::Transformer {
            width,
            mlp_ratio,
            tokens,
            ..
        } => TransformerLayer::flops(tokens, width, mlp_ratio),
    }
}

/// Trainable parameters of the auxiliary net of `plan` on `input`, its final linear
/// map to the classes not included; and the width of its features.
pub fn parameter_count(input: Input, plan: &Plan) -> Result<(i64, i64)> {
    let steps = steps(input, plan)?;
    let features = steps.last().map_or(
        match input {
            Input::Map(c, ..) | Input::Width(c) => c,
        },
        |s| s.layer.width(),
    );
    let norm = if with_norm(plan) { 2 * features } else { 0 };
    Ok((steps.iter().map(step_parameters).sum::<i64>() + norm, features))
}

/// Floats per example the auxiliary net of `plan` on `input` keeps for backward (as
/// the footprint estimate counts a block's: each conv's output, its norm's, the
/// ReLU's, the residual sum; a transformer block's as the ViT's).
pub fn activation_floats(input: Input, plan: &Plan) -> f64 {
    let Ok(steps) = steps(input, plan) else {
        return 0.0;
    };
    steps
        .iter()
        .map(|s| {
            let c = s.layer.width() as f64;
            let map = c * s.area as f64;
            match s.layer {
                Layer::Conv { .. } => 3.0 * map,
                Layer::Residual { .. } => {
                    let shortcut = s.stride != 1 || s.c_in != s.layer.width();
                    (6.0 + if shortcut { 2.0 } else { 0.0 }) * map
                }
                Layer::Dense { .. } => 2.0 * c,
                Layer::Transformer {
                    width,
                    heads,
                    mlp_ratio,
                    tokens,
                    ..
                } => {
                    let (t, d) = (tokens as f64, width as f64);
                    t * (11.0 * d + 2.0 * (d * mlp_ratio).round()) + heads as f64 * t * t
                }
            }
        })
        .sum()
}

/// The 1-D batch norm before the classifier: where d_m ≤ 1 (the reference code's).
fn with_norm(plan: &Plan) -> bool {
    !plan.layers.is_empty() && plan.depth <= 1
}

/// A conv (no bias) → batch norm.
#[derive(Debug)]
struct ConvNorm {
    conv: nn::Conv2D,
    norm: nn::BatchNorm,
}

impl ConvNorm {
    fn new(path: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64) -> Self {
        let shape = ConvShape {
            c_in,
            c_out,
            kernel,
            stride,
        };
        Self {
            conv: conv(&path / "conv", shape, false, true),
            norm: nn::batch_norm2d(&path / "norm", c_out, batch_norm_config(NormInit::Ones)),
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.norm, train)
    }
}

/// A basic residual block with batch norm: ReLU(F(x) + S(x)).
#[derive(Debug)]
struct Residual {
    first: ConvNorm,
    second: ConvNorm,
    /// `None` = identity shortcut.
    shortcut: Option<ConvNorm>,
}

/// One built layer of an auxiliary net.
#[derive(Debug)]
enum AuxLayer {
    Conv(Box<ConvNorm>),
    Residual(Box<Residual>),
    Dense(nn::Linear),
    Transformer(Box<TransformerLayer>),
}

impl AuxLayer {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            AuxLayer::Conv(c) => c.forward_t(xs, train).relu(),
            AuxLayer::Residual(r) => {
                let Residual {
                    first,
                    second,
                    shortcut,
                } = r.as_ref();
                let h = second.forward_t(&first.forward_t(xs, train).relu(), train);
                let s = match shortcut {
                    Some(s) => s.forward_t(xs, train),
                    None => xs.shallow_clone(),
                };
                (h + s).relu()
            }
            AuxLayer::Dense(l) => xs.apply(l).relu(),
            AuxLayer::Transformer(t) => t.forward_t(xs, train),
        }
    }
}

/// A built auxiliary net, without its final linear map.
#[derive(Debug)]
pub struct AuxNet {
    layers: Vec<AuxLayer>,
    norm: Option<nn::BatchNorm>,
    pooling: Pooling,
    features: i64,
    flops: f64,
}

impl AuxNet {
    /// The auxiliary net of `plan` under `path` for a block output `input` pooled by
    /// `pooling` (feature maps: globally).
    pub fn new(path: nn::Path, input: Input, pooling: Pooling, plan: &Plan) -> Result<Self> {
        let steps = steps(input, plan)?;
        let layers = steps
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let p = &path / format!("aux{}", i + 1);
                let c = s.layer.width();
                match s.layer {
                    Layer::Conv { .. } => AuxLayer::Conv(Box::new(ConvNorm::new(p, s.c_in, c, 3, s.stride))),
                    Layer::Residual { .. } => AuxLayer::Residual(Box::new(Residual {
                        first: ConvNorm::new(&p / "conv1", s.c_in, c, 3, s.stride),
                        second: ConvNorm::new(&p / "conv2", c, c, 3, 1),
                        shortcut: (s.stride != 1 || s.c_in != c)
                            .then(|| ConvNorm::new(&p / "shortcut", s.c_in, c, 1, s.stride)),
                    })),
                    Layer::Dense { width } => AuxLayer::Dense(crate::model::linear(p, s.c_in, width)),
                    Layer::Transformer {
                        width,
                        heads,
                        mlp_ratio,
                        dropout,
                        ..
                    } => AuxLayer::Transformer(Box::new(TransformerLayer::new(
                        p, width, heads, mlp_ratio, dropout,
                    ))),
                }
            })
            .collect();
        let (_, features) = parameter_count(input, plan)?;
        let norm = with_norm(plan)
            .then(|| nn::batch_norm1d(&path / "norm", features, batch_norm_config(NormInit::Ones)));
        let pooling = match input {
            Input::Map(..) => Pooling::Grid(1),
            Input::Width(_) => pooling,
        };
        Ok(Self {
            layers,
            norm,
            pooling,
            features,
            flops: steps.iter().map(step_flops).sum(),
        })
    }

    /// The pooled features of block output `h`, [N, features].
    pub fn features(&self, h: &Tensor, train: bool) -> Tensor {
        let h = self
            .layers
            .iter()
            .fold(h.shallow_clone(), |h, l| l.forward_t(&h, train));
        let u = self.pooling.apply(&h);
        match &self.norm {
            Some(n) => n.forward_t(&u, train),
            None => u,
        }
    }

    /// Width of the features.
    pub fn feature_dim(&self) -> i64 {
        self.features
    }

    /// Forward FLOPs per example of the layers (the final linear map not included).
    pub fn flops_per_example(&self) -> f64 {
        self.flops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resnet32_layers() -> Vec<Layer> {
        // The stem (16) and 5 residual blocks each of widths 16, 32, 64.
        std::iter::once(Layer::Conv { channels: 16 })
            .chain(
                [16, 32, 64]
                    .iter()
                    .flat_map(|&c| vec![Layer::Residual { channels: c }; 5]),
            )
            .collect()
    }

    #[test]
    fn the_depth_schedule_is_the_reference_codes() {
        // AugLocal's "K = 16" ResNet-32 at d = 3, γ = 0.5: 13 isolated modules.
        assert_eq!(depths(3, 0.5, 13), [3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2]);
        // Ours at K = 16: 3 − m/14 rounds half to even at m = 7 (2.5 → 2).
        assert_eq!(depths(3, 0.5, 16), [3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2]);
        // No taper: d everywhere; full taper: down to 1 at K − 2.
        assert_eq!(depths(3, 0.0, 5), [3, 3, 3, 3]);
        assert_eq!(depths(3, 1.0, 5), [3, 2, 2, 1]);
        assert_eq!(depths(2, 0.5, 2), [2]);
    }

    #[test]
    fn sampled_layers_follow_the_formula() {
        // Layer 0 of 16 at d = 3: round(0 + 15/3·i) = 5, 10, 15.
        assert_eq!(sampled(0, 16, 3), [5, 10, 15]);
        // Layer 1: round(1 + 14/3·i) = round(5.67), round(10.33), round(15) = 6, 10, 15.
        assert_eq!(sampled(1, 16, 3), [6, 10, 15]);
        // Layer 4: 11/2·i → 9.5 → 10 (half to even), 15.
        assert_eq!(sampled(4, 16, 2), [10, 15]);
        // Fewer later layers than the depth: all of them.
        assert_eq!(sampled(13, 16, 3), [14, 15]);
        assert_eq!(sampled(15, 16, 3), Vec::<usize>::new());
    }

    #[test]
    fn resnet32_plans_copy_the_sampled_widths_with_strides_where_they_grow() {
        let layers = resnet32_layers();
        let modules: Vec<Vec<Layer>> = layers.iter().map(|l| vec![*l]).collect();
        let p = plan(&modules, 0, 3, 0.5).unwrap();
        assert_eq!(p.depth, 3);
        let widths: Vec<i64> = p.layers.iter().map(Layer::width).collect();
        assert_eq!(widths, [16, 32, 64]);
        let s = steps(Input::Map(16, 32, 32), &p).unwrap();
        let strides: Vec<i64> = s.iter().map(|s| s.stride).collect();
        assert_eq!(strides, [1, 2, 2]);
        assert_eq!(s.last().unwrap().area, 8 * 8);
        // Module 8 (layer 8, width 32): d = 2, layers round(8 + 7/2·i) = 12 (11.5 → 12), 15.
        let p = plan(&modules, 8, 3, 0.5).unwrap();
        assert_eq!((p.depth, p.layers.len()), (2, 2));
        assert_eq!(sampled(8, 16, 2), [12, 15]);
        // The last module has no auxiliary layers.
        assert_eq!(plan(&modules, 15, 3, 0.5).unwrap().layers, vec![]);
        // A block that does not describe itself is refused, naming the setting.
        let mut broken = modules.clone();
        broken[3].clear();
        let e = plan(&broken, 0, 3, 0.5).unwrap_err().to_string();
        assert!(e.contains("objective.head") && e.contains("block 4"), "{e}");
    }

    #[test]
    fn a_width_that_quadruples_takes_two_strides() {
        let p = Plan {
            layers: vec![Layer::Conv { channels: 64 }, Layer::Conv { channels: 64 }],
            depth: 2,
        };
        let s = steps(Input::Map(16, 16, 16), &p).unwrap();
        assert_eq!(s.iter().map(|s| s.stride).collect::<Vec<_>>(), [2, 2]);
        assert_eq!(s[1].area, 4 * 4);
    }
}
