//! The `[model]` section: one config type per model kind, each defined, defaulted and
//! validated in its model's file ([`super::mlp::MlpConfig`], [`super::cnn::CnnConfig`],
//! [`super::resnet::ResnetConfig`], [`super::vit::VitConfig`]), tagged by `kind`. A
//! key that the chosen kind does not have is an error that lists the kind's keys.
//!
//! Adding a model: its file in `model/` with a config implementing [`ModelKind`], one
//! variant of [`ModelConfig`] and one arm in [`ModelConfig::kind`].

use super::cnn::CnnConfig;
use super::kind::ModelKind;
use super::mlp::MlpConfig;
use super::resnet::ResnetConfig;
use super::vit::VitConfig;
use serde::{Deserialize, Serialize};

/// A setting's value as `--set key=value` writes it: TOML if it parses as a TOML value
/// (numbers, booleans, arrays, quoted strings), else the bare text as a string.
pub(crate) fn setting_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Model section: the network's kind and its kind's settings.
///
/// ```
/// use sll::model::ModelConfig;
/// let text = "kind = \"resnet\"\nstages = [5, 5, 5]\nchannels = [16, 32, 64]\nmodules = 16";
/// let resnet32: ModelConfig = toml::from_str(text).unwrap();
/// assert_eq!(
///     resnet32.describe(),
///     "resnet 5-5-5 blocks of widths 16-32-64 (cifar stem), 16 modules"
/// );
/// // A key the kind does not have is refused, with the kind's keys listed.
/// let e = toml::from_str::<ModelConfig>("kind = \"mlp\"\nmodules = 4").unwrap_err();
/// assert!(e.to_string().contains("unknown field `modules`, expected one of `hidden`"));
/// ```
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelConfig {
    /// A multilayer perceptron.
    Mlp(MlpConfig),
    /// A VGG-style convolutional network.
    Cnn(CnnConfig),
    /// A residual network.
    Resnet(ResnetConfig),
    /// A Vision Transformer.
    Vit(VitConfig),
}

/// The kinds' names, as `model.kind` takes them.
pub const KINDS: [&str; 4] = ["mlp", "cnn", "resnet", "vit"];

impl Default for ModelConfig {
    fn default() -> Self {
        Self::Mlp(MlpConfig::default())
    }
}

impl ModelConfig {
    /// The kind's config behind its common interface.
    pub fn kind(&self) -> &dyn ModelKind {
        match self {
            Self::Mlp(c) => c,
            Self::Cnn(c) => c,
            Self::Resnet(c) => c,
            Self::Vit(c) => c,
        }
    }

    /// The default config of the kind named `name` (`None` for an unknown kind).
    pub fn default_of(name: &str) -> Option<ModelConfig> {
        let mut named = toml::Table::new();
        named.insert("kind".into(), toml::Value::String(name.into()));
        toml::Value::Table(named).try_into().ok()
    }

    /// `model.kind`.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// A short description of the architecture, e.g. `mlp 1024-1024-1024, 1 per block`.
    pub fn describe(&self) -> String {
        let kind = self.kind();
        format!("{}, {}", kind.layers(), kind.grouping())
    }
}
