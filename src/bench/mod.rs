//! Benchmarks that print a figure and, where one exists, its reference.
//!
//! `sll bench step` times full training steps (forward, local losses, backward,
//! optimizer) on random data, for the method's real code path; `sll bench memory`
//! measures training memory against depth; `sll bench flops` counts a step's FLOPs
//! block by block.

pub mod flops;
pub mod memory;
pub mod step;
