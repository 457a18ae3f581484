//! Reading finished runs: comparing them ([`compare`]) and plotting them ([`plot`]).
//! What a run writes is [`crate::run::record`].

pub mod compare;
pub mod plot;

pub use crate::run::metrics::EpochMetrics;
pub use crate::run::summary::{read_summary, RunStatus, Summary};
