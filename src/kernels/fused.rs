//! The fused divergence pass: block i's whole divergence term in one pass over the
//! rows of the minibatch, in place of a dozen libtorch operations (each a dispatch and
//! an OpenMP fork/join on 128×1024 values) and autograd through them. Per row:
//!
//! ```text
//! m  = dropout mask (its own xoshiro256++ stream per (seed, step, row))
//! z  = R (m ⊙ u)
//! log q = z/τ − logsumexp(z/τ)
//! s  = ½(log q + log p),   D_B(q, p) = −logsumexp(s),   w = softmax(s)
//! g  = ∂D_B/∂z = (q − w) / (2τN)        (N rows: D_B is averaged over the batch)
//! ∂D_B/∂u = m ⊙ R^T g
//! ```
//!
//! The closed form of g: ∂(−log Σ_c √(q_c p_c))/∂log q_c = −w_c/2, and through the
//! log-softmax ∂log q_c/∂z_d = (δ_cd − q_d)/τ, so ∂D_B/∂z_d = (q_d Σ_c w_c − w_d)/(2τ)
//! = (q_d − w_d)/(2τ). Rows are split over [`kernel_threads`] threads; every row's
//! numbers depend only on that row, so results do not depend on the split.

use super::mask::MaskSpec;
use super::math::{exp, max, sum};
use super::rows::{cpu_f32, empty, f32_slice, f32_slice_mut, kernel_threads, par_rows};
use super::tile::{get_lane, set_lane, RowProjection, TILE};
use multiversion::multiversion;
use tch::Tensor;

/// How the fused pass applies R.
#[derive(Clone, Copy)]
pub enum FusedProjection<'a> {
    /// Row by row, inside the pass.
    Rows(&'a dyn RowProjection),
    /// R^T as a dense f32 CPU matrix ([dim, d0]): libtorch's matrix products between
    /// row passes (a dense product is faster in BLAS than row by row).
    Dense(&'a Tensor),
}

/// What [`fused_divergence`] returns, none of it attached to a graph.
pub struct FusedDivergence {
    /// D_B(q, p) averaged over the batch (a scalar).
    pub distance: Tensor,
    /// log q = log softmax(R(m ⊙ u)/τ) ([N, d0]).
    pub log_q: Tensor,
    /// ∂ distance / ∂u = m ⊙ R^T (q − w)/(2τN) ([N, dim(u)]).
    pub grad_u: Tensor,
}

/// Block i's divergence term, its gradient with respect to u and log q (see the
/// module doc) for pooled features u ([N, dim(u)]) and the prior log p ([N, d0]), on
/// the CPU, with the dropout mask `mask` (none: m = 1).
pub fn fused_divergence(
    u: &Tensor,
    log_prior: &Tensor,
    projection: FusedProjection,
    mask: Option<MaskSpec>,
    tau: f64,
) -> FusedDivergence {
    let pass = fused_pass(u, Some(log_prior), projection, mask, tau, kernel_threads());
    let (distance, grad_u) = pass.divergence.expect("a prior gives the divergence");
    FusedDivergence {
        distance,
        log_q: pass.log_q,
        grad_u,
    }
}

/// log q = log softmax(R(m ⊙ u)/τ) for pooled features u on the CPU, without
/// gradient: the input's posterior q_0.
pub fn fused_posterior(u: &Tensor, projection: FusedProjection, mask: Option<MaskSpec>, tau: f64) -> Tensor {
    fused_pass(u, None, projection, mask, tau, kernel_threads()).log_q
}

/// What one fused pass computes: log q, and (D_B, ∂D_B/∂u) when given a prior.
struct Pass {
    log_q: Tensor,
    divergence: Option<(Tensor, Tensor)>,
}

/// The fused pass with rows split over `threads` threads.
fn fused_pass(
    u: &Tensor,
    log_prior: Option<&Tensor>,
    projection: FusedProjection,
    mask: Option<MaskSpec>,
    tau: f64,
    threads: usize,
) -> Pass {
    let u = cpu_f32(&u.reshape([u.size()[0], -1]));
    let (n, dim) = (u.size()[0] as usize, u.size()[1] as usize);
    let d0 = match projection {
        FusedProjection::Rows(r) => r.dims().1,
        FusedProjection::Dense(m) => m.size()[1] as usize,
    };
    let prior = log_prior.map(cpu_f32);
    if let Some(p) = &prior {
        assert_eq!(p.size(), [n as i64, d0 as i64], "prior of shape [N, d0]");
    }
    let row = Row {
        inv_tau: (1.0 / tau) as f32,
        scale: (1.0 / (2.0 * tau * n.max(1) as f64)) as f32,
        prior: prior.as_ref().map(f32_slice),
        d0,
    };
    let mut log_q = empty(n, d0);
    let mut distances = vec![0f32; n];
    let mut grad = prior.as_ref().map(|_| empty(n, dim));
    match projection {
        FusedProjection::Rows(r) => {
            let us = f32_slice(&u);
            let mut buffers = vec![(f32_slice_mut(&mut log_q), d0), (&mut distances[..], 1)];
            buffers.extend(grad.as_mut().map(|g| (f32_slice_mut(g), dim)));
            par_rows(n, threads, buffers, |first, count, parts| {
                let mut scratch = vec![0f32; r.scratch_len()];
                let mut m = vec![0f32; TILE * dim];
                let (mut u_tile, mut out_tile) = (vec![0f32; dim * TILE], vec![0f32; dim * TILE]);
                let (mut z_tile, mut g_tile) = (vec![0f32; d0 * TILE], vec![0f32; d0 * TILE]);
                let (mut z, mut q, mut gz) = (vec![0f32; d0], vec![0f32; d0], vec![0f32; d0]);
                let [log_q, dist, grad @ ..] = parts else {
                    unreachable!()
                };
                for t in (0..count).step_by(TILE) {
                    let rows = TILE.min(count - t);
                    for i in 0..rows {
                        let k = first + t + i;
                        let u_row = &us[k * dim..(k + 1) * dim];
                        match mask {
                            Some(spec) => {
                                let m = &mut m[i * dim..(i + 1) * dim];
                                spec.fill_row(k, m);
                                let lanes = u_tile.chunks_exact_mut(TILE);
                                for ((lane, &m), &u) in lanes.zip(m.iter()).zip(u_row) {
                                    lane[i] = m * u;
                                }
                            }
                            None => set_lane(&mut u_tile, i, u_row),
                        }
                    }
                    r.forward_tile(&u_tile, &mut z_tile, &mut scratch);
                    for i in 0..rows {
                        get_lane(&z_tile, i, &mut z);
                        let log_q = &mut log_q[(t + i) * d0..(t + i + 1) * d0];
                        dist[t + i] = finish_row(&row, first + t + i, &z, log_q, &mut q, &mut gz);
                        set_lane(&mut g_tile, i, &gz);
                    }
                    if let [grad] = grad {
                        r.transpose_tile(&g_tile, &mut out_tile, &mut scratch);
                        for i in 0..rows {
                            let g = &mut grad[(t + i) * dim..(t + i + 1) * dim];
                            get_lane(&out_tile, i, g);
                            if mask.is_some() {
                                g.iter_mut()
                                    .zip(&m[i * dim..(i + 1) * dim])
                                    .for_each(|(g, m)| *g *= m);
                            }
                        }
                    }
                }
            });
        }
        FusedProjection::Dense(matrix_t) => {
            let u_bar = match mask {
                Some(spec) => {
                    let mut u_bar = empty(n, dim);
                    let us = f32_slice(&u);
                    par_rows(
                        n,
                        threads,
                        vec![(f32_slice_mut(&mut u_bar), dim)],
                        |first, count, parts| {
                            for (i, out) in parts[0].chunks_mut(dim).take(count).enumerate() {
                                spec.fill_row(first + i, out);
                                let u_row = &us[(first + i) * dim..(first + i + 1) * dim];
                                out.iter_mut().zip(u_row).for_each(|(m, u)| *m *= u);
                            }
                        },
                    );
                    u_bar
                }
                None => u.shallow_clone(),
            };
            let z = tch::no_grad(|| u_bar.matmul(matrix_t)).contiguous();
            let zs = f32_slice(&z);
            let mut grad_z = prior.as_ref().map(|_| empty(n, d0));
            let mut buffers = vec![(f32_slice_mut(&mut log_q), d0), (&mut distances[..], 1)];
            buffers.extend(grad_z.as_mut().map(|g| (f32_slice_mut(g), d0)));
            par_rows(n, threads, buffers, |first, count, parts| {
                let (mut q, mut scratch) = (vec![0f32; d0], vec![0f32; d0]);
                let [log_q, dist, grad_z @ ..] = parts else {
                    unreachable!()
                };
                for i in 0..count {
                    let k = first + i;
                    let gz = match grad_z {
                        [g] => &mut g[i * d0..(i + 1) * d0],
                        _ => &mut scratch[..],
                    };
                    let log_q = &mut log_q[i * d0..(i + 1) * d0];
                    dist[i] = finish_row(&row, k, &zs[k * d0..(k + 1) * d0], log_q, &mut q, gz);
                }
            });
            if let Some(grad_z) = grad_z {
                let mut g = tch::no_grad(|| grad_z.matmul(&matrix_t.tr())).contiguous();
                if let Some(spec) = mask {
                    par_rows(
                        n,
                        threads,
                        vec![(f32_slice_mut(&mut g), dim)],
                        |first, count, parts| {
                            let mut m = vec![0f32; dim];
                            for (i, g) in parts[0].chunks_mut(dim).take(count).enumerate() {
                                spec.fill_row(first + i, &mut m);
                                g.iter_mut().zip(&m).for_each(|(g, m)| *g *= m);
                            }
                        },
                    );
                }
                grad = Some(g);
            }
        }
    }
    let divergence = grad.map(|g| {
        let mean = distances.iter().map(|&d| d as f64).sum::<f64>() / n.max(1) as f64;
        (Tensor::from(mean as f32), g)
    });
    Pass { log_q, divergence }
}

/// The per-row arithmetic after the projection, shared by both kinds of pass.
struct Row<'a> {
    inv_tau: f32,
    /// 1/(2τN): the gradient of the batch mean.
    scale: f32,
    /// log p, [N, d0] row-major, if any.
    prior: Option<&'a [f32]>,
    d0: usize,
}

// The hot loop below is compiled once more for AVX2 + FMA and picked at run time
// (`multiversion`). Rust never fuses a multiply and an add on its own, so both
// versions give the same bits.

/// From row k's logits z: log q = z/τ − logsumexp(z/τ) into `log_q`; with a prior,
/// g = (q − w)/(2τN) into `grad_z` and D_B(q, p) = −logsumexp(s) returned (0
/// without one). `q` is scratch. Two exponentials per category.
#[multiversion(targets("x86_64+avx2+fma"))]
fn finish_row<'a>(
    this: &Row<'a>,
    k: usize,
    z: &[f32],
    log_q: &mut [f32],
    q: &mut [f32],
    grad_z: &mut [f32],
) -> f32 {
    let z_max = max(z) * this.inv_tau;
    for (q, &z) in q.iter_mut().zip(z) {
        *q = exp(z * this.inv_tau - z_max);
    }
    let q_sum = sum(q);
    let lse = z_max + q_sum.ln();
    for (l, &z) in log_q.iter_mut().zip(z) {
        *l = z * this.inv_tau - lse;
    }
    let Some(prior) = this.prior else { return 0.0 };
    let log_p = &prior[k * this.d0..(k + 1) * this.d0];
    for ((s, &lq), &lp) in grad_z.iter_mut().zip(log_q.iter()).zip(log_p) {
        *s = 0.5 * (lq + lp);
    }
    let s_max = max(grad_z);
    for s in grad_z.iter_mut() {
        *s = exp(*s - s_max);
    }
    let s_sum = sum(grad_z);
    let (q_scale, w_scale) = (this.scale / q_sum, this.scale / s_sum);
    for (g, &q) in grad_z.iter_mut().zip(q.iter()) {
        *g = q * q_scale - *g * w_scale;
    }
    -(s_max + s_sum.ln())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{SparseTable, SrhtTable};
    use tch::{Device, Kind};

    /// Every row's numbers depend on that row alone: the same bits for any split, for
    /// a dense R, a sparse one and an SRHT (any fixed R will do).
    #[test]
    fn fused_pass_does_not_depend_on_the_thread_split() {
        let _turn = crate::libtorch_turn();
        let (dim, d0) = (64usize, 32usize);
        let dense = Tensor::randn([dim as i64, d0 as i64], (Kind::Float, Device::Cpu)) / (d0 as f64).sqrt();
        let k = 3;
        let buckets: Vec<i64> = (0..k * dim)
            .map(|e| ((e * 7 + e / dim * 5) % d0) as i64)
            .collect();
        let values: Vec<f32> = (0..k * dim)
            .map(|e| if e % 3 == 0 { -0.5 } else { 0.5 })
            .collect();
        let sparse = SparseTable::new(dim, d0, &buckets, &values);
        let signs: Vec<f32> = (0..dim).map(|j| if j % 5 < 2 { -1.0 } else { 1.0 }).collect();
        let kept: Vec<usize> = (0..d0).map(|c| 2 * c + c % 2).collect();
        let srht = SrhtTable::new(&signs, &kept);
        let projections = [
            ("dense", FusedProjection::Dense(&dense)),
            ("sparse", FusedProjection::Rows(&sparse)),
            ("srht", FusedProjection::Rows(&srht)),
        ];
        let spec = MaskSpec {
            p: 0.1,
            seed: 7,
            step: 2,
        };
        let u = Tensor::randn([29, dim as i64], (Kind::Float, Device::Cpu));
        let log_p = Tensor::randn([29, d0 as i64], (Kind::Float, Device::Cpu)).log_softmax(-1, Kind::Float);
        for (kind, r) in projections {
            let run = |threads| fused_pass(&u, Some(&log_p), r, Some(spec), 1.0, threads);
            let one = run(1);
            let (d1, g1) = one.divergence.unwrap();
            for threads in [2, 3, 8] {
                let other = run(threads);
                let (d, g) = other.divergence.unwrap();
                assert!(other.log_q.equal(&one.log_q), "{kind} log q, {threads} threads");
                assert!(d.equal(&d1) && g.equal(&g1), "{kind} gradient, {threads} threads");
            }
        }
    }
}
