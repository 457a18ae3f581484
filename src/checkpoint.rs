//! Checkpoints: every parameter and buffer of every block in one `.safetensors` file,
//! named `block<i>.<layer>.<param>` (e.g. `block2.layer1.linear.weight`,
//! `block2.head.bias`), with the projection seeds, the epoch and the resolved config
//! in its metadata. Written with [`crate::io::write_atomic`], so a crash never leaves
//! a half-written checkpoint. [`crate::run::state`] writes the resumable training
//! state with the same functions.

use crate::config::Config;
use crate::io::write_atomic;
use crate::learner::Model;
use anyhow::{anyhow, bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{Kind, Tensor};

/// Metadata key holding the JSON list of projection seeds (input first, then blocks).
pub const PROJECTION_SEEDS_KEY: &str = "projection_seeds";

/// A tensor's bytes in little-endian f32, ready to be written.
fn f32_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let values = Vec::<f32>::try_from(&t.to_kind(Kind::Float).to_device(tch::Device::Cpu).flatten(0, -1))?;
    Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// All named tensors of the model, sorted by name.
pub(crate) fn named_tensors(model: &Model) -> BTreeMap<String, Tensor> {
    model.network.stores.iter().flat_map(|s| s.variables()).collect()
}

/// The name of the first tensor of `model` holding a NaN or an infinity, if any.
pub fn first_non_finite(model: &Model) -> Option<String> {
    named_tensors(model).into_iter().find_map(|(name, t)| {
        let finite = t.isfinite().all().int64_value(&[]) != 0;
        (!finite).then_some(name)
    })
}

/// Writes `tensors` (as f32) and `metadata` to `path` as one safetensors file.
pub(crate) fn write_tensors(
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    let mut data = vec![];
    for (name, t) in tensors {
        data.push((
            name.clone(),
            t.size().iter().map(|&d| d as usize).collect::<Vec<_>>(),
            f32_bytes(t)?,
        ));
    }
    let views = data
        .iter()
        .map(|(name, shape, bytes)| Ok((name.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| anyhow!("{}: cannot serialise: {e:?}", path.display()))?;
    let bytes = safetensors::serialize(views, &Some(metadata))
        .map_err(|e| anyhow!("{}: cannot serialise: {e:?}", path.display()))?;
    write_atomic(path, &bytes)
}

/// Writes `model` (trained for `epoch` epochs under `config`) to `path`.
pub fn save(model: &Model, config: &Config, epoch: usize, path: &Path) -> Result<()> {
    let seeds = serde_json::to_string(&model.projection_seeds())?;
    let metadata: HashMap<String, String> = [
        (PROJECTION_SEEDS_KEY.to_string(), seeds),
        ("epoch".to_string(), epoch.to_string()),
        ("method".to_string(), config.train.method.to_string()),
        ("sll_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("config".to_string(), config.to_toml()),
    ]
    .into();
    write_tensors(&named_tensors(model), metadata, path)
}

/// The metadata of a checkpoint file.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    Ok(SavedTensors::read(path)?.metadata)
}

/// Loads the weights in `path` into `model`, which must have been built from the same
/// config: every tensor must be present with the same shape, and the projection seeds
/// must match (so the reloaded model is bit-identical to the saved one).
pub fn load(model: &Model, path: &Path) -> Result<()> {
    let file = SavedTensors::read(path)?;
    file.check_seeds(model)?;
    file.copy_into(&named_tensors(model), "")
}

/// A safetensors file read into memory.
pub(crate) struct SavedTensors {
    path: String,
    bytes: Vec<u8>,
    metadata: HashMap<String, String>,
}

impl SavedTensors {
    /// Reads and checks `path` (an error naming it when it is not a safetensors file).
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        if !path.is_file() {
            bail!("checkpoint {file}: no such file");
        }
        let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {file}"))?;
        SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow!("{file}: not a valid safetensors checkpoint ({e:?})"))?;
        let (_, metadata) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow!("{file}: not a valid safetensors checkpoint ({e:?})"))?;
        let metadata = metadata.metadata().clone().unwrap_or_default();
        Ok(Self {
            path: file,
            bytes,
            metadata,
        })
    }

    /// The file's metadata value under `key` (an error naming the file when absent).
    pub(crate) fn meta(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("{}: metadata has no `{key}`; not an sll checkpoint", self.path))
    }

    /// Checks that the file's projection seeds are `model`'s.
    pub(crate) fn check_seeds(&self, model: &Model) -> Result<()> {
        let expected = serde_json::to_string(&model.projection_seeds())?;
        let seeds = self.meta(PROJECTION_SEEDS_KEY)?;
        if seeds != expected {
            bail!(
                "{}: projection seeds {seeds} differ from the config's {expected}",
                self.path
            );
        }
        Ok(())
    }

    /// Copies the file's tensors named `prefix + name` into `targets` (by name): every
    /// target must be present with its shape, and every file tensor under `prefix`
    /// must have a target.
    pub(crate) fn copy_into(&self, targets: &BTreeMap<String, Tensor>, prefix: &str) -> Result<()> {
        let file = &self.path;
        let st = SafeTensors::deserialize(&self.bytes)
            .map_err(|e| anyhow!("{file}: not a valid safetensors checkpoint ({e:?})"))?;
        for name in st.names() {
            if let Some(own) = name.strip_prefix(prefix) {
                if !targets.contains_key(own) {
                    bail!("{file}: tensor `{name}` does not belong to this model");
                }
            }
        }
        for (name, var) in targets {
            let full = format!("{prefix}{name}");
            let view = st
                .tensor(&full)
                .map_err(|_| anyhow!("{file}: tensor `{full}` is missing"))?;
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            if view.dtype() != Dtype::F32 || shape != var.size() {
                bail!(
                    "{file}: tensor `{full}` is {:?} {shape:?}, expected F32 {:?}",
                    view.dtype(),
                    var.size()
                );
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let source = Tensor::from_slice(&values)
                .reshape(&shape)
                .to_device(var.device());
            tch::no_grad(|| var.shallow_clone().f_copy_(&source))?;
        }
        Ok(())
    }
}
