//! InfoPro, information propagation (Wang, Ni, Song, Yang and Huang, *Revisiting
//! Locally Supervised Learning: an Alternative to End-to-end Training*, ICLR 2021),
//! its softmax (cross-entropy) variant: each block keeps the information of the input
//! while it becomes discriminative,
//!
//! ```text
//! L_i = λ_CE,i · CE(aux_i(h_i), y) + λ_rec,i · ‖decoder_i(h_i) − x‖²   (mean over pixels)
//! ```
//!
//! with aux_i InfoPro's `1c2f` auxiliary net (the `infopro` head) and decoder_i its
//! decoder: h_i upsampled bilinearly to the input's size, a 3×3 conv to 12 channels,
//! batch norm, ReLU, a 3×3 conv to the input's channels. x, the network input, is what
//! every block passes on to the next. The weights move linearly across modules, from
//! `objective.infopro_prediction[0]`, `objective.infopro_reconstruction[0]` at the
//! first module to `[1]` at module K−1 (the paper's λ₁, λ₂ schedule; defaults 0.5 → 1
//! and 5 → 0); the last module trains with plain cross-entropy, as in the paper.
//!
//! Differences from the published code, on purpose: the reconstruction is a mean
//! squared error against the standardised input (the paper's code uses binary
//! cross-entropy against [0, 1] pixels, after a sigmoid); and the published command
//! line for ResNet-32 sets λ_CE = 0 at module K−1, which leaves that module without
//! any supervised signal, so the default ends at 1.

use super::head::{Head, OutputShape};
use super::{InputMessage, LocalLoss, LocalRule, RuleContext, Rules};
use crate::config::HeadKind;
use crate::precision::fp32;
use anyhow::{bail, Result};
use tch::{nn, Kind, Tensor};

/// Channels of the decoder's hidden conv (InfoPro's `12 * widen`).
pub const DECODER_CHANNELS: i64 = 12;

/// The decoder of one block: upsample, conv 3×3 → BN → ReLU → conv 3×3.
#[derive(Debug)]
struct Decoder {
    first: nn::Conv2D,
    norm: nn::BatchNorm,
    second: nn::Conv2D,
    size: [i64; 2],
    flops: f64,
}

impl Decoder {
    fn new(path: nn::Path, channels: i64, input: [i64; 3]) -> Self {
        let [c_in, height, width] = input;
        let conv = |p: nn::Path, a: i64, b: i64| {
            nn::conv2d(
                p,
                a,
                b,
                3,
                nn::ConvConfig {
                    padding: 1,
                    ..Default::default()
                },
            )
        };
        let area = (height * width) as f64;
        Self {
            first: conv(&path / "conv1", channels, DECODER_CHANNELS),
            norm: nn::batch_norm2d(&path / "norm", DECODER_CHANNELS, Default::default()),
            second: conv(&path / "conv2", DECODER_CHANNELS, c_in),
            size: [height, width],
            flops: 2.0 * 9.0 * area * (channels * DECODER_CHANNELS + DECODER_CHANNELS * c_in) as f64,
        }
    }

    fn forward_t(&self, h: &Tensor, train: bool) -> Tensor {
        h.upsample_bilinear2d(self.size, true, None, None)
            .apply(&self.first)
            .apply_t(&self.norm, train)
            .relu()
            .apply(&self.second)
    }
}

/// Trainable parameters of the decoder of a block with `channels` output channels for
/// inputs of `input_channels` (what the footprint estimate counts before building).
pub fn decoder_parameters(channels: i64, input_channels: i64) -> i64 {
    (channels * 9 * DECODER_CHANNELS + DECODER_CHANNELS)
        + 2 * DECODER_CHANNELS
        + (DECODER_CHANNELS * 9 * input_channels + input_channels)
}

/// Floats per example the decoder keeps for backward: the upsampled map, the first
/// conv's output, its norm's, the ReLU's, the reconstruction.
pub fn decoder_floats(channels: i64, input: [i64; 3]) -> f64 {
    let [c_in, height, width] = input;
    ((channels + 3 * DECODER_CHANNELS + c_in) * height * width) as f64
}

/// InfoPro's rule for one block.
#[derive(Debug)]
pub struct Infopro {
    head: Head,
    /// `None` for the last module (plain cross-entropy).
    decoder: Option<Decoder>,
    prediction_weight: f64,
    reconstruction_weight: f64,
}

/// λ at module `i` (0-based) of `modules`: `from` at the first, `to` at module K−1
/// (index K−2), linear between (K ≤ 2: `from`).
pub fn interpolate(from: f64, to: f64, i: usize, modules: usize) -> f64 {
    if modules <= 2 {
        return from;
    }
    let t = i as f64 / (modules - 2) as f64;
    from * (1.0 - t) + to * t
}

/// Builds InfoPro's rules (feature-map blocks only) and the input message (x itself).
pub fn build(ctx: &RuleContext<'_>) -> Result<Rules> {
    let o = ctx.objective;
    let modules = ctx.blocks.len();
    let mut blocks: Vec<Box<dyn LocalRule>> = vec![];
    for b in &ctx.blocks {
        let OutputShape::Map { channels, .. } = b.shape else {
            bail!("--method infopro needs blocks with feature maps (a CNN or a ResNet): its decoder reconstructs the input image");
        };
        if o.head == HeadKind::Projection {
            bail!("config key `objective.head` = \"projection\" is SLL's and local's; InfoPro trains an auxiliary net");
        }
        let last = b.index + 1 == modules;
        let decoder = (!last).then(|| Decoder::new(&b.path / "decoder", channels, ctx.input_shape));
        let weight = |w: [f64; 2]| interpolate(w[0], w[1], b.index, modules);
        blocks.push(Box::new(Infopro {
            head: ctx.head(b, o.head)?,
            decoder,
            prediction_weight: if last { 1.0 } else { weight(o.infopro_prediction) },
            reconstruction_weight: if last {
                0.0
            } else {
                weight(o.infopro_reconstruction)
            },
        }));
    }
    Ok(Rules {
        blocks,
        input: Box::new(InputImage),
    })
}

/// The input itself, the reconstruction target every block passes on.
#[derive(Debug)]
pub struct InputImage;

impl InputMessage for InputImage {
    fn message(&self, x: &Tensor, _train: bool) -> Option<Tensor> {
        Some(x.shallow_clone())
    }
}

/// ‖x̂ − x‖² averaged over every element.
pub fn reconstruction_error(reconstruction: &Tensor, x: &Tensor) -> Tensor {
    (reconstruction - x).square().mean(Kind::Float)
}

impl LocalRule for Infopro {
    fn follow_next(&self) {
        self.head.follow_next();
    }

    fn term_names(&self) -> &'static [&'static str] {
        &["prediction", "reconstruction"]
    }

    fn loss(&self, h: &Tensor, y: &Tensor, passed: Option<&Tensor>, train: bool) -> LocalLoss {
        let prediction = self.head.logits(h, train).cross_entropy_for_logits(y);
        let x = passed.expect("InfoPro blocks receive the input image");
        let reconstruction = match &self.decoder {
            // In fp32 whatever the decoder computed in (bf16 runs: see `precision`).
            Some(decoder) => reconstruction_error(&fp32(&decoder.forward_t(h, train)), &fp32(x)),
            None => Tensor::zeros([], (Kind::Float, h.device())),
        };
        let total = &prediction * self.prediction_weight + &reconstruction * self.reconstruction_weight;
        LocalLoss {
            total,
            terms: vec![prediction, reconstruction],
            passes_on: Some(x.shallow_clone()),
        }
    }

    fn logits(&self, h: &Tensor) -> Option<Tensor> {
        Some(self.head.logits(h, false))
    }

    fn flops(&self) -> super::RuleFlops {
        super::RuleFlops {
            trainable: self.head.flops_per_example() + self.decoder.as_ref().map_or(0.0, |d| d.flops),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn weights_move_linearly_from_the_first_module_to_module_k_minus_1() {
        // K = 16: modules 0..=14 interpolate, 5 → 0 and 0.5 → 1.
        assert_eq!(interpolate(5.0, 0.0, 0, 16), 5.0);
        assert_eq!(interpolate(5.0, 0.0, 14, 16), 0.0);
        assert!((interpolate(5.0, 0.0, 7, 16) - 2.5).abs() < 1e-12);
        assert!((interpolate(0.5, 1.0, 7, 16) - 0.75).abs() < 1e-12);
        assert_eq!(interpolate(5.0, 0.0, 0, 2), 5.0);
    }

    #[test]
    fn reconstruction_error_is_the_mean_squared_difference() {
        let _turn = crate::libtorch_turn();
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).reshape([1, 1, 2, 2]);
        let b = Tensor::from_slice(&[1.0f32, 0.0, 3.0, 8.0]).reshape([1, 1, 2, 2]);
        // (0 + 4 + 0 + 16) / 4 = 5.
        assert_eq!(reconstruction_error(&a, &b).double_value(&[]), 5.0);
    }

    #[test]
    fn decoder_reconstructs_at_the_input_size() {
        let _turn = crate::libtorch_turn();
        let vs = nn::VarStore::new(Device::Cpu);
        let d = Decoder::new(vs.root(), 16, [3, 32, 32]);
        let h = Tensor::randn([2, 16, 8, 8], (Kind::Float, Device::Cpu));
        assert_eq!(d.forward_t(&h, true).size(), [2, 3, 32, 32]);
        assert_eq!(d.flops, 2.0 * 9.0 * 1024.0 * (16.0 * 12.0 + 12.0 * 3.0));
    }
}
