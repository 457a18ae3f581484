//! Fast CPU paths for the SLL objective (measured with `sll bench step`, figures in
//! docs/performance.md), one concept per file:
//!
//! - [`fused`]: [`fused_divergence`], block i's whole divergence term, log q and its
//!   gradient in one pass over the rows of the minibatch (the formulas are in its
//!   module doc), and [`fused_posterior`], the same pass without a prior and gradient,
//!   for q_0.
//! - [`mask`]: the dropout masks the pass draws, [`MaskSpec`] (a seeded stream, one
//!   xoshiro256++ generator per (seed, step, row)), and the SplitMix64 [`mix`].
//! - [`tile`]: the [`RowProjection`]s that the pass applies to tiles of [`TILE`]
//!   rows: [`sparse`]'s [`SparseTable`] (gathers over k·dim(u) nonzeros) and
//!   [`srht`]'s [`SrhtTable`] (a fast Walsh–Hadamard transform, O(n log n)). The dense
//!   Gaussian projection goes through libtorch's matrix product between two row passes
//!   instead.
//! - `math` (sums, maxima, e^x that vectorise) and `rows` (tensors as f32 slices, rows
//!   split over [`kernel_threads`] threads): the helpers of the pass.
//!
//! The kernels sit below the projections and the objective and import neither; the
//! tests that check them against the reference formulas (autograd through
//! `objective::log_posterior` and `objective::bhattacharyya_distance`, each
//! projection's matrix) live with those, in `src/objective/tests.rs` and
//! `src/projection.rs`.

pub mod fused;
pub mod mask;
mod math;
mod rows;
pub mod sparse;
pub mod srht;
pub mod tile;

pub use fused::{fused_divergence, fused_posterior, FusedProjection};
pub use mask::{mix, MaskSpec};
pub use rows::kernel_threads;
pub use sparse::SparseTable;
pub use srht::SrhtTable;
pub use tile::RowProjection;
