//! The activation peak of SLL and BP against depth, measured the way `sll bench memory`
//! measures it. In its own test binary (the live-byte count is process-wide, so tests
//! allocating at the same time would disturb it).

use sll::bench::memory::{measure, MemoryMethod, MemorySpec};

const MIB: f64 = (1 << 20) as f64;

/// The bench MLP (1024 wide, batch 128): SLL's activation peak is the same at depth 2
/// and 6, BP's grows by about 0.5 MiB per added layer (its saved 128×1024 inputs);
/// parameters, gradients and Adam's moments grow for both.
#[test]
fn sll_activation_peak_stays_flat_with_depth_while_backprop_grows() {
    let peak = |method, depth| {
        let spec = MemorySpec {
            model: "mlp".into(),
            method,
            depth,
            batch_size: Some(128),
            threads: 1,
            sets: vec![],
        };
        let r = measure(&spec).unwrap();
        assert_eq!(r.blocks, depth);
        assert!(r.optimizer_bytes == 2 * r.parameter_bytes && r.gradient_bytes == r.parameter_bytes);
        (r.activation_peak_bytes as f64 / MIB, r.parameter_bytes)
    };
    let (sll_2, params_2) = peak(MemoryMethod::Sll, 2);
    let (sll_6, params_6) = peak(MemoryMethod::Sll, 6);
    assert!(params_6 > 2 * params_2);
    assert!(
        (sll_6 / sll_2 - 1.0).abs() < 0.1,
        "sll: {sll_2} MiB at depth 2, {sll_6} at 6"
    );
    let (bp_2, params_2) = peak(MemoryMethod::Bp, 2);
    let (bp_6, params_6) = peak(MemoryMethod::Bp, 6);
    assert!(params_6 > 2 * params_2);
    assert!(
        bp_6 - bp_2 > 1.5 && bp_6 - bp_2 < 3.0,
        "bp: {bp_2} MiB at depth 2, {bp_6} at 6"
    );
}
