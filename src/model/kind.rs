//! What every model kind's config provides ([`ModelKind`]), the settings several kinds
//! share (activation, normalisation), the limits on sizes, and the checks the kinds'
//! `validate` share.

use super::{InputShape, Network};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::Device;

/// Most layers (MLP layers, conv stages, residual blocks, transformer blocks) a model
/// may have.
pub const MAX_LAYERS: usize = 10_000;
/// Widest MLP layer, and the largest `objective.d0`.
pub const MAX_WIDTH: i64 = 1 << 20;
/// Most channels of a conv stage, and the widest ViT token.
pub const MAX_CHANNELS: i64 = 1 << 16;
/// Largest `model.mlp_ratio` of a ViT.
pub const MAX_MLP_RATIO: f64 = 64.0;

/// `Ok` if `ok`, else the error "config key `key` …" with `why`.
pub fn ensure(ok: bool, key: &str, why: impl FnOnce() -> String) -> Result<()> {
    if !ok {
        bail!("config key `{key}` {}", why());
    }
    Ok(())
}

/// What every model kind's config provides.
pub trait ModelKind {
    /// The kind's name, the value of `model.kind`.
    fn name(&self) -> &'static str;
    /// Rejects values that cannot train, naming the key: `side` is the side of the
    /// (square) test images, `crop` the side of the training crops.
    fn validate(&self, side: usize, crop: usize) -> Result<()>;
    /// Builds the network for inputs of `input` shape.
    fn build(&self, input: InputShape, device: Device) -> Result<Network>;
    /// The layers, e.g. `mlp 1024-1024-1024` (without the grouping into blocks).
    fn layers(&self) -> String;
    /// How the layers are grouped into blocks, e.g. `1 per block`.
    fn grouping(&self) -> String {
        format!("{} per block", self.block_size())
    }
    /// Layers (or stages, residual blocks, transformer blocks) per block.
    fn block_size(&self) -> usize;
    /// Whether the network takes inputs of one size only (then training crops must
    /// have the test images' side).
    fn fixed_input_size(&self) -> bool {
        false
    }
    /// The first key of `table` (a `[model]` table without `kind`) that this kind's
    /// config rejects, and why: `first_error::<Self>(table)`.
    fn first_error(&self, table: toml::Value) -> Option<(String, String)>;
}

/// The first key of `table` that a `T` rejects (its dotted path inside the table), and
/// why.
pub fn first_error<T: serde::de::DeserializeOwned>(table: toml::Value) -> Option<(String, String)> {
    serde_path_to_error::deserialize::<_, T>(table)
        .err()
        .map(|e| (e.path().to_string(), e.into_inner().to_string()))
}

/// `values` joined by `sep`.
pub(crate) fn join<T: ToString>(values: &[T], sep: &str) -> String {
    values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(sep)
}

/// Activation function of a layer.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(0, x)
    Relu,
    /// Gaussian error linear unit.
    Gelu,
}

/// Normalisation layer after each linear map.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// No normalisation.
    None,
    /// LayerNorm over features.
    Layer,
    /// BatchNorm over the batch.
    Batch,
}

/// How the scales γ of the network's batch-norm layers start.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NormInit {
    /// U(0, 1): tch's default, what every run before this setting used.
    Uniform,
    /// 1: PyTorch's default.
    Ones,
}

/// The checks of a convolutional network's `channels`, `norm` and `pool_grid`
/// (CNN and ResNet).
pub(crate) fn validate_conv(
    kind: &str,
    channels: &[i64],
    norm: Norm,
    pool_grid: i64,
    side: usize,
) -> Result<()> {
    ensure(norm != Norm::Layer, "model.norm", || {
        format!("\"layer\" is for MLPs; a {kind} uses \"batch\" or \"none\"")
    })?;
    ensure(
        !channels.is_empty() && channels.iter().all(|c| *c > 0),
        "model.channels",
        || "must be a non-empty list of positive channel counts".into(),
    )?;
    ensure(channels.len() <= MAX_LAYERS, "model.channels", || {
        format!("has {} stages; at most {MAX_LAYERS}", channels.len())
    })?;
    ensure(
        channels.iter().all(|&c| c <= MAX_CHANNELS),
        "model.channels",
        || format!("channel counts must be at most {MAX_CHANNELS}"),
    )?;
    validate_pool_grid(pool_grid, side)
}

/// `model.pool_grid` in 1..=side.
pub(crate) fn validate_pool_grid(pool_grid: i64, side: usize) -> Result<()> {
    ensure(pool_grid > 0, "model.pool_grid", || "must be > 0".into())?;
    ensure(pool_grid as u64 <= side as u64, "model.pool_grid", || {
        format!("= {pool_grid} must be at most the images' side ({side})")
    })
}

/// `model.block_size` in 1..=`layers` (`unit` names them).
pub(crate) fn validate_block_size(block_size: usize, layers: usize, unit: &str) -> Result<()> {
    ensure(block_size > 0, "model.block_size", || "must be > 0".into())?;
    ensure(block_size <= layers, "model.block_size", || {
        format!("= {block_size} exceeds the model's {layers} {unit}")
    })
}
