//! `sll bench flops`: the counted FLOPs of one training step ([`crate::learner::flops`]),
//! block by block, next to the GFLOP/s measured by timing steps as `sll bench step` does.

use super::step::{self, StepBenchSpec};
use crate::learner::flops::{count, StepFlops};
use crate::learner::Model;
use anyhow::Result;
use serde::Serialize;

/// The result of `sll bench flops`, as printed with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct FlopsResult {
    /// `mlp`, `cnn` or the preset.
    pub model: String,
    /// Method counted.
    pub method: String,
    /// Minibatch size.
    pub batch_size: usize,
    /// Counted FLOPs per example.
    pub flops: StepFlops,
    /// Counted FLOPs of one step.
    pub flops_per_step: f64,
    /// Measured milliseconds per step (median round).
    pub ms_per_step: f64,
    /// Counted FLOPs per measured second, in GFLOP/s.
    pub gflops: f64,
}

/// Counts the FLOPs of `spec`'s step and times it (`spec.rounds` rounds of
/// `spec.steps` steps, as `sll bench step`).
pub fn run(spec: &StepBenchSpec) -> Result<FlopsResult> {
    step::check_spec(spec)?;
    let (config, input, classes) = step::bench_setup(spec, spec.method)?;
    crate::train::init_runtime(&config);
    let model = Model::new(&config, classes, input, tch::Device::Cpu)?;
    let flops = count(&model);
    let timing = step::run(spec)?;
    let flops_per_step = flops.per_step(timing.batch_size);
    Ok(FlopsResult {
        model: spec.model.clone(),
        method: spec.method.to_string(),
        batch_size: timing.batch_size,
        flops,
        flops_per_step,
        ms_per_step: timing.ms_per_step,
        gflops: flops_per_step / (timing.ms_per_step / 1e3) / 1e9,
    })
}

impl FlopsResult {
    /// Prints the per-block table (MFLOP per example) and the totals.
    pub fn print(&self) {
        println!(
            "{} {}, MFLOP per example of one training step (batch {}):",
            self.model, self.method, self.batch_size
        );
        println!(
            "{:>6} {:>10} {:>10} {:>10} {:>11} {:>11} {:>10}",
            "block", "forward", "backward", "head", "projection", "divergence", "total"
        );
        let m = |v: f64| v / 1e6;
        for b in &self.flops.blocks {
            println!(
                "{:>6} {:>10.3} {:>10.3} {:>10.3} {:>11.3} {:>11.3} {:>10.3}",
                b.block,
                m(b.forward),
                m(b.backward),
                m(b.head),
                m(b.projection),
                m(b.divergence),
                m(b.total())
            );
        }
        if self.flops.input_projection > 0.0 {
            println!("{:>6} {:>66.3}", "q_0", m(self.flops.input_projection));
        }
        println!(
            "total {:.3} GFLOP/step counted, {:.2} ms/step measured: {:.1} GFLOP/s",
            self.flops_per_step / 1e9,
            self.ms_per_step,
            self.gflops
        );
    }
}
