//! Multilayer perceptrons: each layer is Linear → (norm) → activation; `block_size`
//! consecutive layers form one block.

use super::kind::{
    ensure, join, validate_block_size, Activation, ModelKind, Norm, NormInit, MAX_LAYERS, MAX_WIDTH,
};
use super::{Block, InputShape, Network, Pooling};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use tch::{nn, nn::Module, nn::ModuleT, Device, Tensor};

/// `[model]` with `kind = "mlp"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MlpConfig {
    /// Width of each hidden layer, input to output.
    pub hidden: Vec<i64>,
    /// Activation after each layer.
    pub activation: Activation,
    /// Normalisation after each linear map.
    pub norm: Norm,
    /// Initial scales γ of batch norms: `uniform` (U(0, 1), tch's default) or `ones`
    /// (PyTorch's).
    pub norm_init: NormInit,
    /// Layers per block (one local objective per block).
    pub block_size: usize,
}

impl Default for MlpConfig {
    fn default() -> Self {
        Self {
            hidden: vec![1024, 1024, 1024],
            activation: Activation::Relu,
            norm: Norm::None,
            norm_init: NormInit::Uniform,
            block_size: 1,
        }
    }
}

impl ModelKind for MlpConfig {
    fn name(&self) -> &'static str {
        "mlp"
    }

    fn validate(&self, _side: usize, _crop: usize) -> Result<()> {
        let hidden = &self.hidden;
        ensure(
            !hidden.is_empty() && hidden.iter().all(|w| *w > 0),
            "model.hidden",
            || "must be a non-empty list of positive widths".into(),
        )?;
        ensure(hidden.len() <= MAX_LAYERS, "model.hidden", || {
            format!("has {} layers; at most {MAX_LAYERS}", hidden.len())
        })?;
        ensure(hidden.iter().all(|&w| w <= MAX_WIDTH), "model.hidden", || {
            format!("widths must be at most {MAX_WIDTH}")
        })?;
        validate_block_size(self.block_size, hidden.len(), "layers")
    }

    fn build(&self, input: InputShape, device: Device) -> Result<Network> {
        Ok(build(self, input, device))
    }

    fn layers(&self) -> String {
        format!("mlp {}", join(&self.hidden, "-"))
    }

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn first_error(&self, table: toml::Value) -> Option<(String, String)> {
        super::kind::first_error::<Self>(table)
    }

    fn fixed_input_size(&self) -> bool {
        true
    }
}

/// One Linear → (LayerNorm | BatchNorm) → activation layer.
#[derive(Debug)]
struct Layer {
    linear: nn::Linear,
    layer_norm: Option<nn::LayerNorm>,
    batch_norm: Option<nn::BatchNorm>,
    activation: Activation,
}

impl Layer {
    fn new(
        path: nn::Path,
        in_dim: i64,
        out_dim: i64,
        norm: (Norm, NormInit),
        activation: Activation,
    ) -> Self {
        let (norm, norm_init) = norm;
        let linear = super::linear(&path / "linear", in_dim, out_dim);
        let layer_norm =
            (norm == Norm::Layer).then(|| nn::layer_norm(&path / "norm", vec![out_dim], Default::default()));
        let batch_norm = (norm == Norm::Batch)
            .then(|| nn::batch_norm1d(&path / "norm", out_dim, super::batch_norm_config(norm_init)));
        Self {
            linear,
            layer_norm,
            batch_norm,
            activation,
        }
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = xs.apply(&self.linear);
        if let Some(norm) = &self.layer_norm {
            h = norm.forward(&h);
        }
        if let Some(norm) = &self.batch_norm {
            h = norm.forward_t(&h, train);
        }
        match self.activation {
            Activation::Relu => h.relu(),
            Activation::Gelu => h.gelu("none"),
        }
    }
}

/// A block of consecutive MLP layers. Flattens its input, so the first block takes images.
#[derive(Debug)]
pub struct MlpBlock {
    layers: Vec<Layer>,
    out_dim: i64,
}

impl Block for MlpBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.layers
            .iter()
            .fold(xs.flatten(1, -1), |h, layer| layer.forward_t(&h, train))
    }

    fn pooling(&self) -> Pooling {
        Pooling::Flatten
    }

    fn pooled_dim(&self) -> i64 {
        self.out_dim
    }

    fn forward_flops(&self) -> (f64, f64) {
        let flops: Vec<f64> = self
            .layers
            .iter()
            .map(|l| 2.0 * l.linear.ws.size().iter().product::<i64>() as f64)
            .collect();
        (flops.iter().sum(), flops[0])
    }

    fn layers(&self) -> Vec<super::Layer> {
        self.layers
            .iter()
            .map(|l| super::Layer::Dense {
                width: l.linear.ws.size()[0],
            })
            .collect()
    }
}

/// Builds the MLP of `config`: widths `hidden`, grouped `block_size` layers per block.
pub fn build(config: &MlpConfig, input: InputShape, device: Device) -> Network {
    let input_dim: i64 = input.iter().product();
    let mut blocks: Vec<Box<dyn Block>> = vec![];
    let mut stores = vec![];
    let mut in_dim = input_dim;
    for (b, widths) in config.hidden.chunks(config.block_size).enumerate() {
        let store = nn::VarStore::new(device);
        let path = Network::block_path(&store, b);
        let mut layers = vec![];
        for (l, &width) in widths.iter().enumerate() {
            let layer_path = &path / format!("layer{}", l + 1);
            layers.push(Layer::new(
                layer_path,
                in_dim,
                width,
                (config.norm, config.norm_init),
                config.activation,
            ));
            in_dim = width;
        }
        blocks.push(Box::new(MlpBlock {
            layers,
            out_dim: in_dim,
        }));
        stores.push(store);
    }
    Network {
        blocks,
        stores,
        input_pooling: Pooling::Flatten,
        input_dim,
    }
}
