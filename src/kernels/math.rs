//! Branch-free f32 arithmetic for the fused pass's rows: sums and maxima with eight
//! running accumulators and a fast e^x, all of which vectorise.

/// Σ x with eight running sums (so that the loop vectorises; fixed order, hence
/// the same bits on every call).
#[inline(always)]
pub(super) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &c) in acc.iter_mut().zip(c) {
            *a += c;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// max x (−∞ for no values), eight running maxima as in [`sum`].
#[inline(always)]
pub(super) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    for c in chunks {
        for (a, &c) in acc.iter_mut().zip(c) {
            *a = a.max(c);
        }
    }
    acc.iter().fold(tail, |a, &b| a.max(b))
}

/// e^x in f32 to ~2 ulp, branch-free so that loops over it vectorise (libm's expf
/// does not): x = n·ln 2 + r with n = round(x·log2 e) (the 1.5·2^23 trick) and
/// |r| ≤ ln 2 / 2, e^r by Cephes' degree-7 polynomial, 2^n put in the exponent bits;
/// x is clamped to [−87, 88], so results stay normal (e^−87 ≈ 1.6e−38).
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let mut p = 1.987_569_1e-4f32;
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = p * r + c;
    }
    // t's low mantissa bits hold n + 2^22: n + 127 without a float-to-int conversion.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    (p * r * r + r + 1.0) * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate_and_sum_max_are_exact_enough() {
        let _turn = crate::libtorch_turn();
        for i in 0..=20_000 {
            let x = -87.0 + 175.0 * i as f32 / 20_000.0;
            let (fast, exact) = (exp(x) as f64, (x as f64).exp());
            assert!(
                (fast - exact).abs() <= 3e-7 * exact,
                "exp({x}) = {fast}, not {exact}"
            );
        }
        assert!(
            exp(-1000.0) == exp(-87.0) && exp(-1000.0).is_normal(),
            "clamped below"
        );
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.7).sin()).collect();
        assert!((sum(&x) - x.iter().sum::<f32>()).abs() < 1e-5);
        assert_eq!(max(&x), x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)));
    }
}
