//! SLL's local loss (docs/method.md, "The local objective of block i"):
//!
//! ```text
//! L_i = CE(head_i(h_i), y) + β · D_B(q_i, sg(q_{i-1})),   q_i = softmax(R_i (m_i ⊙ u_i) / τ)
//! ```
//!
//! u_i is the block's pooled output (`objective.projection_input = "pooled"`) or its
//! head's features (`"head"`); R_i the block's fixed projection (shared by consecutive
//! blocks of equal dim(u) with `objective.shared_projection`), m_i its multiplicative
//! dropout, D_B the Bhattacharyya distance. The prior is the block below's posterior
//! (`prior = previous`, q_0 from the pooled input), a label target (`label`) or none.
//! The pieces (projections, dropout, posterior, D_B, label targets) are in
//! [`crate::objective`]; on the CPU the divergence and its gradient come from one fused
//! pass (`kernels::fused_divergence`).

use super::head::Head;
use super::{InputMessage, LocalLoss, LocalRule, RuleContext, Rules};
use crate::config::{HeadKind, ObjectiveConfig, Prior, ProjectionInput};
use crate::kernels;
use crate::model::Pooling;
use crate::objective::{
    self, bhattacharyya_distance, log_posterior, project, Dropout, Projection, PROTOTYPE_SEED_INDEX,
};
use crate::precision::{fp32, full_precision};
use anyhow::Result;
use tch::{Device, Kind, Tensor};

/// SLL's rule for one block.
#[derive(Debug)]
pub struct Sll {
    config: ObjectiveConfig,
    pooling: Pooling,
    dropout: Dropout,
    /// The trainable head (`None` for `head = projection`: R_i itself classifies).
    head: Option<Head>,
    /// R_i (absent when neither the divergence nor a projection head needs it).
    projection: Option<Projection>,
    /// log t_y of every class ([K, d0], `prior = label`).
    label_targets: Option<Tensor>,
}

/// Builds SLL's rules: each block's head, its projection (seeded per block, or per run
/// of equal-width blocks when shared), and q_0's projection of the input.
pub fn build(ctx: &RuleContext<'_>) -> Result<Rules> {
    let o = ctx.objective;
    let seed = ctx.config.train.seed;
    let mut blocks: Vec<Box<dyn LocalRule>> = vec![];
    let mut run_start: Option<(usize, i64)> = None;
    for b in &ctx.blocks {
        let head = (o.head != HeadKind::Projection)
            .then(|| ctx.head(b, o.head))
            .transpose()?;
        let in_dim = match (&head, o.projection_input) {
            (Some(h), ProjectionInput::Head) => h.feature_dim(),
            _ => b.pooled_dim,
        };
        // The seed index: the block's own, or the first of its run of equal widths.
        let index = match run_start {
            Some((start, dim)) if o.shared_projection && dim == in_dim => start,
            _ => b.index,
        };
        run_start = Some((index, in_dim));
        let projection_seed = objective::projection_seed(seed, index + 1);
        let needs_projection = o.has_divergence() || o.head == HeadKind::Projection;
        let projection = needs_projection.then(|| Projection::new(o, in_dim, projection_seed, ctx.device));
        let label_targets = (o.has_divergence() && o.prior == Prior::Label).then(|| label_targets(ctx));
        blocks.push(Box::new(Sll {
            config: o.clone(),
            pooling: b.pooling,
            // Each block's own stream, even where projections are shared.
            dropout: Dropout::new(o.dropout, objective::projection_seed(seed, b.index + 1)),
            head,
            projection,
            label_targets,
        }));
    }
    let input: Box<dyn InputMessage> = if o.has_divergence() && o.prior == Prior::Previous {
        let seed = objective::projection_seed(seed, 0);
        Box::new(InputPosterior {
            projection: Projection::new(o, ctx.input_dim, seed, ctx.device),
            dropout: Dropout::new(o.dropout, seed),
            pooling: ctx.input_pooling,
            tau: o.tau,
        })
    } else {
        Box::new(super::NoMessage)
    };
    Ok(Rules { blocks, input })
}

/// log t_y for every class (`prior = label`).
fn label_targets(ctx: &RuleContext<'_>) -> Tensor {
    let o = ctx.objective;
    let prototype_seed = objective::projection_seed(ctx.config.train.seed, PROTOTYPE_SEED_INDEX);
    objective::label_targets(
        ctx.classes,
        o.d0,
        o.tau,
        o.label_smoothing,
        prototype_seed,
        ctx.device,
    )
}

/// log q_0 of the pooled input, the first block's prior (`prior = previous`).
#[derive(Debug)]
pub struct InputPosterior {
    projection: Projection,
    dropout: Dropout,
    pooling: Pooling,
    tau: f64,
}

impl InputMessage for InputPosterior {
    fn message(&self, x: &Tensor, train: bool) -> Option<Tensor> {
        let u0 = self.pooling.apply(x);
        Some(objective::posterior(
            &self.projection,
            &u0,
            &self.dropout,
            self.tau,
            train,
        ))
    }

    fn dropout(&self) -> Option<&Dropout> {
        Some(&self.dropout)
    }

    fn projection_seed(&self) -> Option<u64> {
        Some(self.projection.seed)
    }

    fn projection_flops(&self) -> f64 {
        self.projection.flops_per_example()
    }
}

impl Sll {
    fn projected(&self, u: &Tensor, train: bool) -> Tensor {
        let projection = self.projection.as_ref().expect("projection present");
        project(projection, u, &self.dropout, train)
    }

    /// The divergence term without autograd (CPU, f32): D_B, ∂D_B/∂u and log q from
    /// one fused pass, the gradient attached to the graph as the dot product
    /// ⟨u, sg(∂D_B/∂u)⟩, whose gradient with respect to u is ∂D_B/∂u. Returns (D_B,
    /// that gradient term, log q).
    fn fused_divergence(
        &self,
        projection: &Projection,
        u: &Tensor,
        log_prior: &Tensor,
        train: bool,
    ) -> Option<(Tensor, Tensor, Tensor)> {
        if u.device() != Device::Cpu || u.kind() != Kind::Float || !projection.on_cpu() {
            return None;
        }
        let mask = self.dropout.next_mask(train);
        let f = kernels::fused_divergence(u, log_prior, projection.fused(), mask, self.config.tau);
        let gradient_term = u.flatten(0, -1).dot(&f.grad_u.flatten(0, -1));
        Some((f.distance, gradient_term, f.log_q))
    }

    /// The features the projection reads, and the head's logits, of block output `h`.
    fn features_and_logits(&self, h: &Tensor, train: bool) -> (Tensor, Option<Tensor>) {
        let pooled = || self.pooling.apply(h);
        match &self.head {
            None => (pooled(), None),
            Some(head) if head.reads_pooled_output() => {
                let u = pooled();
                let logits = head.classify(&u);
                (u, Some(logits))
            }
            Some(head) => {
                let features = head.features(h, train);
                let logits = head.classify(&features);
                match self.config.projection_input {
                    ProjectionInput::Head => (features, Some(logits)),
                    ProjectionInput::Pooled => (pooled(), Some(logits)),
                }
            }
        }
    }

    /// The loss terms from the features `u` (fp32), their projection `z` if computed
    /// already, and the head's logits.
    fn terms(
        &self,
        u: &Tensor,
        z: Option<Tensor>,
        head_logits: Option<Tensor>,
        y: &Tensor,
        passed: Option<&Tensor>,
        train: bool,
    ) -> LocalLoss {
        let c = &self.config;
        let label_prior = self.label_targets.as_ref().map(|t| t.index_select(0, y));
        let log_prior = match c.prior {
            Prior::Previous => passed,
            Prior::Label => label_prior.as_ref(),
            Prior::None => None,
        };
        let passes = |log_q: Option<Tensor>| log_q.filter(|_| c.prior == Prior::Previous);
        if let (Some(logits), Some(projection), Some(log_prior), true, None) =
            (&head_logits, &self.projection, log_prior, c.has_divergence(), &z)
        {
            if let Some((divergence, gradient_term, log_q)) =
                self.fused_divergence(projection, u, log_prior, train)
            {
                let prediction = logits.cross_entropy_for_logits(y);
                let total = &prediction + gradient_term * c.beta;
                return LocalLoss {
                    total,
                    terms: vec![prediction, divergence],
                    passes_on: passes(Some(log_q)),
                };
            }
        }
        let z = z.or_else(|| self.projection.as_ref().map(|_| self.projected(u, train)));
        let logits = match (head_logits, &z) {
            (Some(logits), _) => logits,
            (None, Some(z)) => z / c.tau,
            (None, None) => unreachable!("a projection head always has a projection"),
        };
        let prediction = logits.cross_entropy_for_logits(y);
        let log_q = z.as_ref().map(|z| log_posterior(z, c.tau));
        let divergence = match (&log_q, log_prior) {
            (Some(log_q), Some(log_prior)) if c.has_divergence() => {
                bhattacharyya_distance(log_q, &log_prior.detach())
            }
            _ => Tensor::zeros([], (Kind::Float, u.device())),
        };
        let total = &prediction + &divergence * c.beta;
        LocalLoss {
            total,
            terms: vec![prediction, divergence],
            passes_on: passes(log_q),
        }
    }
}

impl LocalRule for Sll {
    fn follow_next(&self) {
        if let Some(head) = &self.head {
            head.follow_next();
        }
    }

    fn term_names(&self) -> &'static [&'static str] {
        &["prediction", "divergence"]
    }

    fn loss(&self, h: &Tensor, y: &Tensor, passed: Option<&Tensor>, train: bool) -> LocalLoss {
        let (u, head_logits) = self.features_and_logits(h, train);
        // bf16: a dense projection z = R(m ⊙ u) as a bf16 matrix product (libtorch's,
        // autocast), the rest in fp32 through autograd; measured 1.17× faster on the MLP
        // SLL step than the fused fp32 pass, which fp32 keeps (docs/performance.md).
        let z = self
            .projection
            .as_ref()
            .filter(|p| p.is_dense() && crate::precision::autocast_enabled(h.device()))
            .map(|_| self.projected(&u, train));
        // The divergence and every loss term in fp32, whatever the block computed in.
        full_precision(h.device(), || {
            self.terms(&fp32(&u), z.as_ref().map(fp32), head_logits, y, passed, train)
        })
    }

    fn logits(&self, h: &Tensor) -> Option<Tensor> {
        Some(match &self.head {
            Some(head) => head.logits(h, false),
            None => self.projected(&self.pooling.apply(h), false) / self.config.tau,
        })
    }

    fn set_device(&mut self, device: Device) {
        self.projection = self.projection.as_ref().map(|r| r.to_device(device));
        self.label_targets = self.label_targets.as_ref().map(|t| t.to_device(device));
    }

    fn dropout(&self) -> Option<&Dropout> {
        Some(&self.dropout)
    }

    fn projection_seed(&self) -> Option<u64> {
        self.projection.as_ref().map(|p| p.seed)
    }

    fn flops(&self) -> super::RuleFlops {
        super::RuleFlops {
            trainable: self.head.as_ref().map_or(0.0, |h| h.flops_per_example()),
            projection: self.projection.as_ref().map_or(0.0, |p| p.flops_per_example()),
            divergence_dim: self
                .projection
                .as_ref()
                .filter(|_| self.config.has_divergence())
                .map(|p| p.in_dim() as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ProjectionKind};
    use crate::rules::head::OutputShape;
    use crate::rules::BlockSpec;
    use tch::nn;

    /// One SLL rule on [N, 48] vectors with `objective`.
    fn rule(vs: &nn::VarStore, config: &Config, objective: &ObjectiveConfig) -> Rules {
        let ctx = RuleContext {
            config,
            objective,
            classes: 10,
            blocks: vec![BlockSpec {
                index: 4,
                path: vs.root(),
                pooling: Pooling::Flatten,
                pooled_dim: 48,
                shape: OutputShape::Other,
                layers: vec![],
            }],
            input_pooling: Pooling::Flatten,
            input_dim: 48,
            input_shape: [1, 1, 48],
            device: Device::Cpu,
            next_copies: Default::default(),
        };
        build(&ctx).unwrap()
    }

    /// The fused divergence path (one CPU pass, gradient attached as ⟨u, g⟩) gives the
    /// gradient of the method's formula, computed by autograd with the same dropout
    /// mask, for every projection.
    #[test]
    fn fused_loss_has_the_gradient_of_the_reference_loss() {
        let _turn = crate::libtorch_turn();
        let kinds = [
            ProjectionKind::Gaussian,
            ProjectionKind::Sparse,
            ProjectionKind::Srht,
        ];
        let config = Config::load(None, &[]).unwrap();
        for (projection, dropout) in kinds.into_iter().flat_map(|k| [(k, 0.0), (k, 0.2)]) {
            let o = ObjectiveConfig {
                d0: 32,
                dropout,
                tau: 0.7,
                beta: 0.8,
                projection,
                head: HeadKind::Linear,
                ..Default::default()
            };
            let vs = nn::VarStore::new(Device::Cpu);
            let rules = rule(&vs, &config, &o);
            let sll = &rules.blocks[0];
            tch::manual_seed(1);
            let u = Tensor::randn([16, 48], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let y = Tensor::randint(10, [16], (Kind::Int64, Device::Cpu));
            let prior = Tensor::randn([16, 32], (Kind::Float, Device::Cpu)).log_softmax(-1, Kind::Float);
            let loss = sll.loss(&u, &y, Some(&prior), true);
            loss.total.backward();
            let fused_grad = u.grad().copy();
            let _ = u.grad().zero_();
            let r = Projection::new(&o, 48, objective::projection_seed(0, 5), Device::Cpu);
            // The same seed as the block's dropout: the same first mask.
            let u_bar = Dropout::new(dropout, objective::projection_seed(0, 5)).apply(&u, true);
            let log_q_ref = log_posterior(&r.apply(&u_bar), o.tau);
            let reference = sll.logits(&u).unwrap().cross_entropy_for_logits(&y)
                + bhattacharyya_distance(&log_q_ref, &prior) * o.beta;
            reference.backward();
            assert!(
                fused_grad.allclose(&u.grad(), 1e-5, 1e-6, false),
                "{projection:?}, p = {dropout}: gradients differ"
            );
            let expected = bhattacharyya_distance(&log_q_ref, &prior).double_value(&[]);
            assert!((loss.terms[1].double_value(&[]) - expected).abs() < 1e-5);
            assert!(loss
                .passes_on
                .unwrap()
                .allclose(&log_q_ref.detach(), 1e-5, 1e-6, false));
        }
    }

    /// β = 0 is the local rule: the same prediction term, no divergence, nothing passed on.
    #[test]
    fn beta_zero_has_no_divergence() {
        let _turn = crate::libtorch_turn();
        let o = ObjectiveConfig {
            beta: 0.0,
            prior: Prior::None,
            head: HeadKind::Linear,
            ..Default::default()
        };
        let vs = nn::VarStore::new(Device::Cpu);
        let rules = rule(&vs, &Config::load(None, &[]).unwrap(), &o);
        let u = Tensor::randn([8, 48], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 3, 4, 5, 6, 7]);
        let loss = rules.blocks[0].loss(&u, &y, None, true);
        assert_eq!(loss.terms[1].double_value(&[]), 0.0);
        assert!(loss.passes_on.is_none());
        let expected = rules.blocks[0].logits(&u).unwrap().cross_entropy_for_logits(&y);
        assert!(loss.total.allclose(&expected, 1e-6, 1e-6, false));
    }

    /// A shared projection: consecutive blocks of equal width draw R from the first's
    /// seed; a change of width starts a new run.
    #[test]
    fn shared_projections_follow_runs_of_equal_width() {
        let _turn = crate::libtorch_turn();
        let config = Config::load(None, &[]).unwrap();
        let o = ObjectiveConfig {
            shared_projection: true,
            head: HeadKind::Linear,
            ..Default::default()
        };
        let stores: Vec<nn::VarStore> = (0..4).map(|_| nn::VarStore::new(Device::Cpu)).collect();
        let dims = [48, 48, 24, 24];
        let ctx = RuleContext {
            config: &config,
            objective: &o,
            classes: 10,
            blocks: dims
                .iter()
                .enumerate()
                .map(|(i, &d)| BlockSpec {
                    index: i,
                    path: stores[i].root(),
                    pooling: Pooling::Flatten,
                    pooled_dim: d,
                    shape: OutputShape::Other,
                    layers: vec![],
                })
                .collect(),
            input_pooling: Pooling::Flatten,
            input_dim: 48,
            input_shape: [1, 1, 48],
            device: Device::Cpu,
            next_copies: Default::default(),
        };
        let rules = build(&ctx).unwrap();
        let seeds: Vec<u64> = rules
            .blocks
            .iter()
            .map(|r| r.projection_seed().unwrap())
            .collect();
        let own = |i: usize| objective::projection_seed(0, i + 1);
        assert_eq!(seeds, [own(0), own(0), own(2), own(2)]);
        // The input's projection stays its own.
        assert_eq!(
            rules.input.projection_seed(),
            Some(objective::projection_seed(0, 0))
        );
        // Dropout streams are per block.
        let streams: Vec<u64> = rules.blocks.iter().map(|r| r.dropout().unwrap().seed()).collect();
        let expected: Vec<u64> = (0..4).map(|i| Dropout::new(0.1, own(i)).seed()).collect();
        assert_eq!(streams, expected);
    }
}
