//! Checkpoints: every parameter and buffer of every block in one `.safetensors` file,
//! named `block<i>.<layer>.<param>` (e.g. `block2.layer1.linear.weight`,
//! `block2.head.bias`), with the projection seeds, the epoch and the resolved config
//! in its metadata. Written to a temporary file and renamed, so a crash never leaves
//! a half-written checkpoint.

use crate::config::Config;
use crate::report::write_atomic;
use crate::train::model::Model;
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
fn named_tensors(model: &Model) -> BTreeMap<String, Tensor> {
    model.network.stores.iter().flat_map(|s| s.variables()).collect()
}

/// Writes `model` (trained for `epoch` epochs under `config`) to `path`.
pub fn save(model: &Model, config: &Config, epoch: usize, path: &Path) -> Result<()> {
    let tensors = named_tensors(model);
    let mut data = vec![];
    for (name, t) in &tensors {
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
    let seeds = serde_json::to_string(&model.projection_seeds())?;
    let metadata: HashMap<String, String> = [
        (PROJECTION_SEEDS_KEY.to_string(), seeds),
        ("epoch".to_string(), epoch.to_string()),
        ("method".to_string(), config.train.method.to_string()),
        ("sll_version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("config".to_string(), config.to_toml()),
    ]
    .into();
    let bytes = safetensors::serialize(views, &Some(metadata))
        .map_err(|e| anyhow!("{}: cannot serialise: {e:?}", path.display()))?;
    write_atomic(path, &bytes)
}

/// The metadata of a checkpoint file.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let (_, metadata) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors checkpoint ({e:?})", path.display()))?;
    Ok(metadata.metadata().clone().unwrap_or_default())
}

/// Loads the weights in `path` into `model`, which must have been built from the same
/// config: every tensor must be present with the same shape, and the projection seeds
/// must match (so the reloaded model is bit-identical to the saved one).
pub fn load(model: &Model, path: &Path) -> Result<()> {
    let file = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {file}"))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{file}: not a valid safetensors checkpoint ({e:?})"))?;
    let metadata = read_metadata(path)?;
    let expected = serde_json::to_string(&model.projection_seeds())?;
    match metadata.get(PROJECTION_SEEDS_KEY) {
        Some(seeds) if *seeds == expected => {}
        Some(seeds) => {
            bail!("{file}: projection seeds {seeds} differ from the config's {expected}")
        }
        None => bail!("{file}: metadata has no `{PROJECTION_SEEDS_KEY}`; not an sll checkpoint"),
    }
    let tensors = named_tensors(model);
    for name in st.names() {
        if !tensors.contains_key(name.as_str()) {
            bail!("{file}: tensor `{name}` does not belong to this model");
        }
    }
    for (name, var) in &tensors {
        let view = st
            .tensor(name)
            .map_err(|_| anyhow!("{file}: tensor `{name}` is missing"))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        if view.dtype() != Dtype::F32 || shape != var.size() {
            bail!(
                "{file}: tensor `{name}` is {:?} {shape:?}, expected F32 {:?}",
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
