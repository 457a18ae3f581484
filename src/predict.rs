//! A finished run, reloaded: its config and trained model ([`TrainedRun`]), and what
//! `sll predict` does with it — classify image files (PNG or JPEG, decoded and resized
//! as the run's data was, standardised with the statistics recorded in the run) or the
//! first examples of a dataset split, giving the top-k classes with probabilities.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use sll::predict::TrainedRun;
//! let run = TrainedRun::load("runs/my-run".as_ref(), None)?;
//! for p in run.classify_files(&["digit.png".into()], 3)? {
//!     println!("{}: {} ({:.1} %)", p.input, run.class_name(p.top[0].0), 100.0 * p.top[0].1);
//! }
//! # Ok(()) }
//! ```

use crate::checkpoint;
use crate::config::Config;
use crate::data::{self, Dataset};
use crate::learner::Model;
use crate::train;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// A run directory written by `sll train`, with its model rebuilt and its weights loaded.
pub struct TrainedRun {
    /// The run directory.
    pub dir: PathBuf,
    /// The run's resolved config (`config.toml`), its data folder found again.
    pub config: Config,
    /// The trained network (`model.safetensors`).
    pub model: Model,
    /// Where the model lives.
    pub device: Device,
    /// Shape `[C, H, W]` of one input.
    pub input: [i64; 3],
    /// Class names, by label index.
    pub classes: Vec<String>,
}

impl TrainedRun {
    /// Reloads the run in `dir`. `data_dir` replaces the data folder recorded in the run
    /// (which is searched from the run directory upward when relative). An error when
    /// `dir` is no run directory or its weights hold a NaN or an infinity.
    pub fn load(dir: &Path, data_dir: Option<&str>) -> Result<Self> {
        let config_path = dir.join("config.toml");
        if !config_path.is_file() {
            bail!(
                "{} is not a run directory (no config.toml file there)",
                dir.display()
            );
        }
        let text = std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "cannot read {} (is {} a run directory?)",
                config_path.display(),
                dir.display()
            )
        })?;
        let mut config = Config::from_toml(&text, &config_path.display().to_string())?;
        config.data.dir = match data_dir {
            Some(d) => d.to_string(),
            None => find_data_dir(&config.data.dir, dir),
        };
        config.validate()?;
        let device = crate::device::parse(&config.train.device)?;
        train::init_runtime(&config);
        let (input, classes) = data::example_shape(&config.data.dataset, config.data.image_size)?;
        let classes = data::class_names(&config.data.dataset, Path::new(&config.data.dir), classes)?;
        let model = Model::new(&config, classes.len() as i64, input, device)?;
        let weights = dir.join("model.safetensors");
        checkpoint::load(&model, &weights)?;
        if let Some(name) = checkpoint::first_non_finite(&model) {
            bail!(
                "{}: tensor `{name}` holds NaN or infinite values",
                weights.display()
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            model,
            device,
            input,
            classes,
        })
    }

    /// The name of class `index` (its index as text when the run has no names).
    pub fn class_name(&self, index: usize) -> &str {
        self.classes.get(index).map_or("?", String::as_str)
    }

    /// The final classifier's class probabilities `[N, classes]` for raw images
    /// `[N, C, H, W]` with values in `[0, 1]` (standardised here as in training).
    pub fn probabilities(&self, images: &Tensor) -> Result<Tensor> {
        let d = &self.config.data;
        let images = if d.normalize {
            data::standardise(images, &d.mean, &d.std)?
        } else {
            images.shallow_clone()
        };
        let logits = self.model.block_logits(&images.to_device(self.device));
        let Some(Some(last)) = logits.last() else {
            bail!("the run's last block has no classifier head");
        };
        Ok(last.softmax(-1, Kind::Float).to_device(Device::Cpu))
    }

    /// Classifies image files, each decoded, centre-cropped to a square and resized to
    /// the run's input (grey-scale for one-channel data), `k` classes each.
    pub fn classify_files(&self, files: &[PathBuf], k: usize) -> Result<Vec<Prediction>> {
        let [c, h, w] = self.input;
        if h != w {
            bail!("the run's inputs are {h}×{w}: only square inputs can be read from image files");
        }
        let mut pixels = vec![];
        for file in files {
            pixels.extend(data::imagefolder::decode_image(file, c as usize, h as usize)?);
        }
        let images = Tensor::from_slice(&pixels).view([files.len() as i64, c, h, w]);
        let labels = vec![None; files.len()];
        let inputs = files.iter().map(|f| f.display().to_string()).collect();
        self.classify(&images, inputs, labels, k)
    }

    /// Classifies the first `n` examples of the run's `split` (`train` or `test`).
    pub fn classify_split(&self, split: &str, n: usize, k: usize) -> Result<Vec<Prediction>> {
        let d = &self.config.data;
        let image_size = (d.image_size > 0).then_some(d.image_size);
        let (train, test) = data::load_sized(&d.dataset, Path::new(&d.dir), image_size)?;
        let set: Dataset = match split {
            "test" => test,
            "train" => train,
            other => bail!("--split {other:?}: expected `test` or `train`"),
        };
        let set = set.take(n);
        let labels = Vec::<i64>::try_from(&set.labels)?.into_iter().map(Some).collect();
        let inputs = (0..set.len()).map(|i| format!("{split}[{i}]")).collect();
        self.classify(&set.images, inputs, labels, k)
    }

    fn classify(
        &self,
        images: &Tensor,
        inputs: Vec<String>,
        labels: Vec<Option<i64>>,
        k: usize,
    ) -> Result<Vec<Prediction>> {
        if k == 0 {
            bail!("--top must be at least 1");
        }
        let k = k.min(self.classes.len());
        let mut out = vec![];
        let batch = self.config.data.eval_batch_size.max(1);
        for (start, chunk) in inputs.chunks(batch).enumerate() {
            let first = (start * batch) as i64;
            let p = self.probabilities(&images.narrow(0, first, chunk.len() as i64))?;
            let (values, indices) = p.topk(k as i64, -1, true, true);
            let values = Vec::<Vec<f64>>::try_from(&values.to_kind(Kind::Double))?;
            let indices = Vec::<Vec<i64>>::try_from(&indices)?;
            for (i, input) in chunk.iter().enumerate() {
                out.push(Prediction {
                    input: input.clone(),
                    label: labels[first as usize + i].map(|l| l as usize),
                    top: indices[i]
                        .iter()
                        .map(|&c| c as usize)
                        .zip(values[i].iter().copied())
                        .collect(),
                });
            }
        }
        Ok(out)
    }
}

/// One input's classes, most probable first.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// The file, or `split[i]`.
    pub input: String,
    /// The true label, for examples of a dataset split.
    pub label: Option<usize>,
    /// (class index, probability), most probable first.
    pub top: Vec<(usize, f64)>,
}

/// What `sll predict` classifies.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// Image files (PNG or JPEG).
    Files(Vec<PathBuf>),
    /// The first examples of a split of the run's dataset.
    Split {
        /// `test` or `train`.
        split: String,
        /// How many examples.
        first: usize,
    },
}

/// `sll predict`: the final classifier of the run in `dir` (see [`TrainedRun::load`])
/// on `inputs`, printing the `top` classes of each input with their probabilities, one
/// line per input (with `json`, one JSON object).
pub fn print_predictions(
    dir: &Path,
    data_dir: Option<&str>,
    inputs: &Inputs,
    top: usize,
    json: bool,
) -> Result<()> {
    let run = TrainedRun::load(dir, data_dir)?;
    let predictions = match inputs {
        Inputs::Split { split, first } => run.classify_split(split, *first, top)?,
        Inputs::Files(files) => run.classify_files(files, top)?,
    };
    for p in &predictions {
        if json {
            let top: Vec<_> = p
                .top
                .iter()
                .map(|&(c, prob)| serde_json::json!({"class": run.class_name(c), "index": c, "probability": prob}))
                .collect();
            let label = p
                .label
                .map(|l| serde_json::json!({"class": run.class_name(l), "index": l}));
            println!(
                "{}",
                serde_json::json!({"input": p.input, "label": label, "top": top})
            );
        } else {
            let top: Vec<String> = p
                .top
                .iter()
                .map(|&(c, prob)| format!("{} ({:.2} %)", run.class_name(c), 100.0 * prob))
                .collect();
            let label = p
                .label
                .map_or(String::new(), |l| format!(" (label {})", run.class_name(l)));
            println!("{}{label}: {}", p.input, top.join(", "));
        }
    }
    Ok(())
}

/// The run's data folder: `recorded` when absolute or found from the working
/// directory, else the first folder above the run holding it.
pub fn find_data_dir(recorded: &str, run: &Path) -> String {
    let path = Path::new(recorded);
    if path.is_absolute() || path.exists() {
        return recorded.to_string();
    }
    let run = std::fs::canonicalize(run).unwrap_or_else(|_| run.to_path_buf());
    run.ancestors()
        .map(|dir| dir.join(path))
        .find(|candidate| candidate.exists())
        .map_or_else(|| recorded.to_string(), |p| p.display().to_string())
}
