//! Benchmarks that print a figure and, where one exists, its reference.
//!
//! `sll bench step` times full training steps (forward, local losses, backward,
//! optimizer) on random data, for the method's real code path; `sll bench memory`
//! measures training memory against depth; `sll bench flops` counts a step's FLOPs
//! block by block; `sll bench pipeline` compares the thread pipeline with sequential
//! training the same way.

pub mod flops;
pub mod memory;
pub mod pipeline;
pub mod step;
