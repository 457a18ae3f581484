//! PredSim (Nøkland and Eidnes, *Training Neural Networks with Local Error Signals*,
//! ICML 2019): a prediction loss and a similarity-matching loss per block,
//!
//! ```text
//! L_i = (1 − β) · CE(head_i(h_i), y) + β · ‖S(conv_i(h_i)) − S(Y)‖²   (mean over the N×N entries)
//! ```
//!
//! head_i is the `pooled` head (average-pooled until C·h·w ≤ 2048, then linear); conv_i a
//! trainable 3×3 conv at the block's width (a linear map for vector outputs); S(X) the
//! N×N cosine similarity of the rows of X after each row is centred (for feature maps,
//! a row is the per-channel standard deviation over positions, as in the paper's code);
//! Y the one-hot labels. β = `objective.predsim_beta` (0.99, the paper's).

use super::head::OutputShape;
use super::local::Classifier;
use super::{LocalLoss, LocalRule, RuleContext, Rules};
use crate::precision::{fp32, full_precision};
use anyhow::Result;
use tch::{nn, nn::Module, Tensor};

/// The trainable map before the similarity matrix.
#[derive(Debug)]
enum SimilarityMap {
    Conv(nn::Conv2D),
    Linear(nn::Linear),
}

/// PredSim's rule for one block.
#[derive(Debug)]
pub struct Predsim {
    classifier: Classifier,
    map: SimilarityMap,
    pooling: crate::model::Pooling,
    beta: f64,
    flops: f64,
}

/// Trainable parameters of the similarity map of a block output of `shape` and
/// pooled size `pooled_dim`: a 3×3 conv with bias at the block's width, or a linear map.
pub fn similarity_parameters(shape: &OutputShape, pooled_dim: i64) -> i64 {
    match shape.map() {
        Some((c, _, _)) => c * 9 * c + c,
        None => pooled_dim * pooled_dim + pooled_dim,
    }
}

/// Builds PredSim's rules.
pub fn build(ctx: &RuleContext<'_>) -> Result<Rules> {
    let blocks = ctx
        .blocks
        .iter()
        .map(|b| {
            let (map, flops) = match b.shape {
                OutputShape::Map {
                    channels,
                    height,
                    width,
                } => {
                    let config = nn::ConvConfig {
                        padding: 1,
                        ..Default::default()
                    };
                    let conv = nn::conv2d(&b.path / "similarity", channels, channels, 3, config);
                    (
                        SimilarityMap::Conv(conv),
                        2.0 * (channels * 9 * channels * height * width) as f64,
                    )
                }
                OutputShape::Other => (
                    SimilarityMap::Linear(crate::model::linear(
                        &b.path / "similarity",
                        b.pooled_dim,
                        b.pooled_dim,
                    )),
                    2.0 * (b.pooled_dim * b.pooled_dim) as f64,
                ),
            };
            let classifier = Classifier::new(ctx, b, ctx.objective.head)?;
            Ok(Box::new(Predsim {
                flops: flops + classifier.flops_per_example(),
                classifier,
                map,
                pooling: b.pooling,
                beta: ctx.objective.predsim_beta,
            }) as Box<dyn LocalRule>)
        })
        .collect::<Result<_>>()?;
    Ok(Rules {
        blocks,
        input: Box::new(super::NoMessage),
    })
}

/// S(X): the cosine similarity of the centred rows of `x` ([N, ...]); a feature map
/// [N, C, H, W] with C > 3 and H > 1 is first reduced to the standard deviation of each
/// channel over its positions ([N, C]).
pub fn similarity_matrix(x: &Tensor) -> Tensor {
    let size = x.size();
    let rows = if size.len() == 4 && size[1] > 3 && size[2] > 1 {
        x.flatten(2, -1).std_dim(2, true, false)
    } else {
        x.flatten(1, -1)
    };
    let kind = rows.kind();
    let centred = &rows - rows.mean_dim(1, true, kind);
    let norms = centred.square().sum_dim_intlist(1, true, kind).sqrt() + 1e-8;
    let unit = centred / norms;
    unit.matmul(&unit.tr()).clamp(-1.0, 1.0)
}

/// ‖S(a) − S(one-hot y)‖², averaged over the N×N entries.
pub fn similarity_loss(features: &Tensor, y: &Tensor, classes: i64) -> Tensor {
    let one_hot = y.one_hot(classes).to_kind(features.kind());
    (similarity_matrix(features) - similarity_matrix(&one_hot))
        .square()
        .mean(features.kind())
}

impl LocalRule for Predsim {
    fn follow_next(&self) {
        self.classifier.follow_next();
    }

    fn term_names(&self) -> &'static [&'static str] {
        &["prediction", "similarity"]
    }

    fn loss(&self, h: &Tensor, y: &Tensor, _passed: Option<&Tensor>, train: bool) -> LocalLoss {
        let logits = self.classifier.logits(h, train);
        let classes = logits.size()[1];
        let prediction = logits.cross_entropy_for_logits(y);
        let mapped = match &self.map {
            SimilarityMap::Conv(conv) => h.apply(conv),
            SimilarityMap::Linear(linear) => linear.forward(&self.pooling.apply(h)),
        };
        // In fp32 whatever the map computed in (bf16 runs: see `precision`).
        let similarity = full_precision(h.device(), || similarity_loss(&fp32(&mapped), y, classes));
        let total = &prediction * (1.0 - self.beta) + &similarity * self.beta;
        LocalLoss {
            total,
            terms: vec![prediction, similarity],
            passes_on: None,
        }
    }

    fn logits(&self, h: &Tensor) -> Option<Tensor> {
        Some(self.classifier.logits(h, false))
    }

    fn flops(&self) -> super::RuleFlops {
        super::RuleFlops {
            trainable: self.flops,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn rows(v: &[f64], n: i64) -> Tensor {
        Tensor::from_slice(v).reshape([n, v.len() as i64 / n])
    }

    #[test]
    fn similarity_matrix_hand_computed() {
        let _turn = crate::libtorch_turn();
        // Rows (1, 2, 3) and (3, 2, 1): centred (−1, 0, 1) and (1, 0, −1): cosine −1.
        // Row (1, 1, 4): centred (−1, −1, 2), against (−1, 0, 1): 3 / (√6·√2) = √3/2.
        let s = similarity_matrix(&rows(&[1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 1.0, 1.0, 4.0], 3));
        let expected = [
            [1.0, -1.0, 3f64.sqrt() / 2.0],
            [-1.0, 1.0, -(3f64.sqrt()) / 2.0],
            [3f64.sqrt() / 2.0, -(3f64.sqrt()) / 2.0, 1.0],
        ];
        for (i, row) in expected.iter().enumerate() {
            for (j, e) in row.iter().enumerate() {
                let v = s.double_value(&[i as i64, j as i64]);
                assert!((v - e).abs() < 1e-7, "({i},{j}): {v} vs {e}");
            }
        }
        // One-hot labels of 3 classes: 1 on the same class, −1/2 across classes.
        let y = Tensor::from_slice(&[0i64, 2, 0]);
        let t = similarity_matrix(&y.one_hot(3).to_kind(Kind::Double));
        assert!((t.double_value(&[0, 2]) - 1.0).abs() < 1e-7);
        assert!((t.double_value(&[0, 1]) + 0.5).abs() < 1e-7);
    }

    #[test]
    fn feature_maps_are_reduced_to_channel_deviations() {
        let _turn = crate::libtorch_turn();
        let x = Tensor::randn([5, 6, 3, 3], (Kind::Double, Device::Cpu));
        let reduced = x.flatten(2, -1).std_dim(2, true, false);
        assert!(similarity_matrix(&x).allclose(&similarity_matrix(&reduced), 1e-12, 1e-12, false));
    }

    #[test]
    fn similarity_loss_gradient_matches_finite_differences() {
        let _turn = crate::libtorch_turn();
        tch::manual_seed(2);
        let base = Tensor::randn([4, 5], (Kind::Double, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 0, 2]);
        let x = base.copy().set_requires_grad(true);
        similarity_loss(&x, &y, 3).backward();
        let grad = x.grad();
        let eps = 1e-6;
        for i in 0..4 {
            for j in 0..5 {
                let bump = |d: f64| {
                    let z = base.copy();
                    let _ = z.get(i).get(j).fill_(base.double_value(&[i, j]) + d);
                    similarity_loss(&z, &y, 3).double_value(&[])
                };
                let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps);
                let analytic = grad.double_value(&[i, j]);
                assert!(
                    (numeric - analytic).abs() < 1e-6,
                    "({i},{j}): {numeric} vs {analytic}"
                );
            }
        }
        // Features whose similarity is the labels' have no loss.
        let perfect = y.one_hot(3).to_kind(Kind::Double);
        assert!(similarity_loss(&perfect, &y, 3).double_value(&[]) < 1e-12);
    }
}
