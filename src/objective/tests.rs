//! The objective's tests: D_B against hand-computed values and finite differences,
//! the dropout streams, the label targets, and the fused CPU kernels
//! ([`crate::kernels`]) against autograd through the reference formulas.

use super::*;
use crate::kernels::{fused_divergence, fused_posterior, MaskSpec};
use crate::projection::tests::projections;

fn probs(v: &[f32]) -> Tensor {
    Tensor::from_slice(v).reshape([1, v.len() as i64])
}

fn db(p: &[f32], q: &[f32]) -> f64 {
    bhattacharyya_distance(&probs(p).log(), &probs(q).log()).double_value(&[])
}

#[test]
fn bhattacharyya_hand_computed_values() {
    let _turn = crate::libtorch_turn();
    // Identical distributions: BC = 1, D_B = 0.
    assert!(db(&[0.2, 0.3, 0.5], &[0.2, 0.3, 0.5]).abs() < 1e-6);
    // Uniform against one-hot-ish: BC = √(0.25·0.97) + 3·√(0.25·0.01) = 0.49244 + 0.15 = 0.64244.
    let expected = -(0.25f64 * 0.97)
        .sqrt()
        .mul_add(1.0, 3.0 * (0.25f64 * 0.01).sqrt())
        .ln();
    assert!((db(&[0.25; 4], &[0.97, 0.01, 0.01, 0.01]) - expected).abs() < 1e-5);
    // Nearly disjoint: BC = 2·√(0.999·0.001) = 0.063213..., D_B = 2.7613...
    let expected = -(2.0 * (0.999f64 * 0.001).sqrt()).ln();
    assert!((db(&[0.999, 0.001], &[0.001, 0.999]) - expected).abs() < 1e-4);
    // Two uniforms of different support sizes do not exist here; check symmetry instead.
    let a = [0.1, 0.6, 0.3];
    let b = [0.5, 0.25, 0.25];
    assert!((db(&a, &b) - db(&b, &a)).abs() < 1e-7);
}

#[test]
fn bhattacharyya_lower_bounds_kl() {
    let _turn = crate::libtorch_turn();
    let p = [0.1f64, 0.6, 0.3];
    let q = [0.5f64, 0.25, 0.25];
    let kl: f64 = p.iter().zip(&q).map(|(a, b)| a * (a / b).ln()).sum();
    let d = db(&[0.1, 0.6, 0.3], &[0.5, 0.25, 0.25]);
    assert!(kl >= 2.0 * d, "KL {kl} < 2 D_B {d}");
}

#[test]
fn bhattacharyya_gradient_matches_finite_differences() {
    let _turn = crate::libtorch_turn();
    let logits = Tensor::from_slice(&[0.3f64, -1.2, 0.8, 0.1, 2.0, -0.5]).reshape([2, 3]);
    let target = Tensor::from_slice(&[0.2f64, 0.5, 0.3, 0.6, 0.3, 0.1])
        .reshape([2, 3])
        .log();
    let f = |z: &Tensor| bhattacharyya_distance(&z.log_softmax(-1, Kind::Double), &target);
    let z = logits.copy().set_requires_grad(true);
    f(&z).backward();
    let grad = z.grad();
    let eps = 1e-6;
    for i in 0..2 {
        for j in 0..3 {
            let bump = |d: f64| {
                let zz = logits.copy();
                let _ = zz.get(i).get(j).fill_(logits.double_value(&[i, j]) + d);
                f(&zz).double_value(&[])
            };
            let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps);
            let analytic = grad.double_value(&[i, j]);
            assert!(
                (numeric - analytic).abs() < 1e-6,
                "({i},{j}): {numeric} vs {analytic}"
            );
        }
    }
}

#[test]
fn dropout_masks_are_determined_by_seed_and_call() {
    let _turn = crate::libtorch_turn();
    let u = Tensor::ones([64, 100], (Kind::Float, Device::Cpu));
    let (a, b, c) = (Dropout::new(0.3, 4), Dropout::new(0.3, 4), Dropout::new(0.3, 5));
    let first = a.apply(&u, true);
    assert!(first.equal(&b.apply(&u, true)), "same seed, same mask");
    assert!(!first.equal(&c.apply(&u, true)), "another seed, another mask");
    assert!(!first.equal(&a.apply(&u, true)), "each call draws a new mask");
    assert!(a.apply(&u, false).equal(&u), "no dropout in evaluation");
    // The fused path draws from the same stream: b's second mask is a's second.
    let spec = b.next_mask(true).unwrap();
    assert_eq!(spec.step, 1);
    let d = Dropout::new(0.3, 4);
    d.next_mask(true);
    assert!(d.apply(&u, true).equal(&(&u * spec.mask(&[64, 100]))));
}

#[test]
fn dropout_is_inverted_bernoulli_and_off_in_eval() {
    let _turn = crate::libtorch_turn();
    tch::manual_seed(0);
    let u = Tensor::ones([200, 500], (Kind::Float, Device::Cpu));
    let d = multiplicative_dropout(&u, 0.2, true);
    let zeros = d.eq(0.0).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    assert!((zeros - 0.2).abs() < 0.01, "drop rate {zeros}");
    let kept = d.max().double_value(&[]);
    assert!((kept - 1.25).abs() < 1e-6);
    assert!(multiplicative_dropout(&u, 0.2, false).equal(&u));
}

#[test]
fn label_targets_are_distributions() {
    let _turn = crate::libtorch_turn();
    let t = label_targets(10, 10, 1.0, 0.1, 0, Device::Cpu).exp();
    assert!((t.double_value(&[3, 3]) - 0.91).abs() < 1e-6);
    assert!((t.double_value(&[3, 4]) - 0.01).abs() < 1e-6);
    let t = label_targets(10, 64, 1.0, 0.1, 0, Device::Cpu).exp();
    assert_eq!(t.size(), vec![10, 64]);
    let sums = t.sum_dim_intlist([-1i64].as_slice(), false, Kind::Float);
    assert!(sums.allclose(&Tensor::ones([10], (Kind::Float, Device::Cpu)), 1e-5, 1e-5, false));
}

/// The fused pass gives the value, log q and gradient that autograd gives through
/// the reference formulas (same mask), for every projection and both temperatures.
#[test]
fn fused_pass_matches_autograd() {
    let _turn = crate::libtorch_turn();
    tch::manual_seed(4);
    let spec = MaskSpec {
        p: 0.2,
        seed: 9,
        step: 3,
    };
    for (kind, r) in projections(70, 48) {
        for (tau, mask) in [(1.0, Some(spec)), (0.5, None)] {
            let u = (Tensor::randn([37, 70], (Kind::Float, Device::Cpu)) * 2.0).set_requires_grad(true);
            let log_p = Tensor::randn([37, 48], (Kind::Float, Device::Cpu)).log_softmax(-1, Kind::Float);
            let u_bar = match mask {
                Some(spec) => &u * spec.mask(&[37, 70]),
                None => u.shallow_clone(),
            };
            let log_q = log_posterior(&r.apply(&u_bar), tau);
            let reference = bhattacharyya_distance(&log_q, &log_p);
            reference.backward();
            let fused = fused_divergence(&u, &log_p, r.fused(), mask, tau);
            let close = |a: &Tensor, b: &Tensor| a.allclose(b, 1e-4, 1e-6, false);
            assert!(close(&fused.distance, &reference.detach()), "{kind:?} distance");
            // log q to f32 rounding of z/τ − logsumexp (|z/τ| up to ~30 here).
            let close_log = |a: &Tensor, b: &Tensor| a.allclose(b, 1e-4, 1e-5, false);
            assert!(close_log(&fused.log_q, &log_q.detach()), "{kind:?} log q");
            assert!(close(&fused.grad_u, &u.grad()), "{kind:?} gradients differ");
            let posterior = fused_posterior(&u, r.fused(), mask, tau);
            assert!(close_log(&posterior, &log_q.detach()), "{kind:?} posterior");
        }
    }
}

/// Central differences of the reference formula in f64 (same mask, same R) agree
/// with the fused pass's f32 gradient.
#[test]
fn fused_gradient_matches_finite_differences() {
    let _turn = crate::libtorch_turn();
    tch::manual_seed(5);
    let spec = MaskSpec {
        p: 0.3,
        seed: 2,
        step: 0,
    };
    let (n, dim, d0, tau) = (6, 20, 16, 0.8);
    for (kind, r) in projections(dim, d0) {
        let u = Tensor::randn([n, dim], (Kind::Float, Device::Cpu));
        let log_p = Tensor::randn([n, d0], (Kind::Float, Device::Cpu)).log_softmax(-1, Kind::Float);
        let fused = fused_divergence(&u, &log_p, r.fused(), Some(spec), tau);
        let (m, mask) = (
            r.matrix().to_kind(Kind::Double),
            spec.mask(&[n, dim]).to_kind(Kind::Double),
        );
        let log_p = log_p.to_kind(Kind::Double);
        let d = |u: &Tensor| {
            let z = (u * &mask).matmul(&m.tr());
            bhattacharyya_distance(&(z / tau).log_softmax(-1, Kind::Double), &log_p).double_value(&[])
        };
        let u = u.to_kind(Kind::Double);
        for (i, j) in [(0, 0), (1, 7), (3, 19), (5, 11)] {
            let bumped = |e: f64| {
                let v = u.copy();
                let _ = v.get(i).get(j).fill_(u.double_value(&[i, j]) + e);
                d(&v)
            };
            let numeric = (bumped(1e-6) - bumped(-1e-6)) / 2e-6;
            let analytic = fused.grad_u.double_value(&[i, j]);
            assert!(
                (numeric - analytic).abs() < 1e-6 + 1e-3 * numeric.abs(),
                "{kind:?} ({i},{j}): {numeric} vs {analytic}"
            );
        }
    }
}
