//! The bounds of every numeric setting and what the dataset's image shape implies.

use super::validate::{ensure, MAX_AUX_DEPTH, MIN_THREAD_BOUND};
use super::*;
use anyhow::Result;

impl Config {
    /// The bounds of every numeric setting and what the dataset's image shape implies,
    /// checked after [`Config::validate`]'s basic rules: values finite, upper bounds
    /// that keep any value a user can type from allocating without end or running
    /// forever, and settings that would otherwise be ignored or fail only mid-run.
    pub(super) fn validate_values(&self) -> Result<()> {
        let (d, m, o, p, t) = (&self.data, &self.model, &self.objective, &self.optim, &self.train);
        ensure(
            !self.preset.is_empty()
                && self.preset.chars().count() <= 100
                && !self
                    .preset
                    .chars()
                    .any(|c| c == '/' || c == '\\' || c.is_control()),
            "preset",
            || {
                format!(
                    "= {:?} must be a plain name of 1 to 100 characters without `/` (it names the run directory)",
                    self.preset
                )
            },
        )?;

        // Data.
        let known = crate::data::known_datasets();
        ensure(known.contains(&d.dataset.as_str()), "data.dataset", || {
            format!(
                "= {:?} is not a known dataset (known: {})",
                d.dataset,
                known.join(", ")
            )
        })?;
        ensure(!d.dir.trim().is_empty(), "data.dir", || {
            "must name a folder".into()
        })?;
        let imagefolder = d.dataset == "imagefolder";
        if imagefolder {
            ensure(d.image_size <= MAX_IMAGE_SIZE, "data.image_size", || {
                format!(
                    "= {} must be at most {MAX_IMAGE_SIZE} (0 = {})",
                    d.image_size,
                    crate::data::imagefolder::DEFAULT_IMAGE_SIZE
                )
            })?;
        }
        // (`objective.head = "projection"` against the classes is left to
        // `validate_for_classes`, once the data is loaded.)
        let (shape, _) = crate::data::example_shape(&d.dataset, d.image_size)?;
        let (channels, side) = (shape[0] as usize, shape[1] as usize);
        ensure(
            imagefolder || d.image_size == 0 || d.image_size == side,
            "data.image_size",
            || {
                format!(
                    "= {} applies only to dataset `imagefolder` ({} has {side}x{side} images; use 0)",
                    d.image_size, d.dataset
                )
            },
        )?;
        let threads = max_threads();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ensure(d.workers <= threads, "data.workers", || {
            format!(
                "= {} must be at most {threads} (4 per core, this machine has {cores}; at least {MIN_THREAD_BOUND})",
                d.workers
            )
        })?;
        for (value, key) in [
            (d.batch_size, "data.batch_size"),
            (d.eval_batch_size, "data.eval_batch_size"),
        ] {
            ensure(value <= MAX_BATCH, key, || {
                format!("= {value} must be at most {MAX_BATCH}")
            })?;
        }
        ensure(d.mean.iter().all(|v| v.is_finite()), "data.mean", || {
            "entries must be finite numbers".into()
        })?;
        ensure(d.std.iter().all(|v| v.is_finite()), "data.std", || {
            "entries must be finite numbers".into()
        })?;
        ensure(d.mean.is_empty() || d.mean.len() == channels, "data.mean", || {
            format!(
                "has {} entries but {} images have {channels} channel(s)",
                d.mean.len(),
                d.dataset
            )
        })?;
        // Augmentation: training images are stored at `stored` (imagefolder: 8/7 of the
        // test side) and cropped to `crop`, what the network sees in training.
        let a = &d.augment;
        let stored = if imagefolder {
            crate::data::imagefolder::train_size(side)
        } else {
            side
        };
        ensure(a.crop_padding <= stored, "data.augment.crop_padding", || {
            format!(
                "= {} must be at most the training images' side ({stored})",
                a.crop_padding
            )
        })?;
        let padded = stored + 2 * a.crop_padding;
        let crop = a.crop_size.unwrap_or(side);
        ensure((1..=padded).contains(&crop), "data.augment.crop_size", || {
            format!(
                "= {crop} must be in 1..={padded} (the {stored}x{stored} training images padded by {} pixels)",
                a.crop_padding
            )
        })?;
        ensure(
            crop == side || !m.kind().fixed_input_size(),
            "data.augment.crop_size",
            || {
                format!(
                    "= {crop} must equal the test images' side ({side}): model.kind = \"{}\" takes inputs of one size",
                    m.name()
                )
            },
        )?;
        ensure(a.cutout <= crop, "data.augment.cutout", || {
            format!("= {} must be at most the crop's side ({crop})", a.cutout)
        })?;

        // Model.
        m.kind().validate(side, crop)?;

        // Objective.
        ensure(o.d0 <= MAX_WIDTH, "objective.d0", || {
            format!("= {} must be at most {MAX_WIDTH}", o.d0)
        })?;
        ensure(o.tau.is_finite(), "objective.tau", || {
            "must be a finite number > 0".into()
        })?;
        ensure(o.beta.is_finite(), "objective.beta", || {
            "must be a finite number >= 0".into()
        })?;
        ensure(
            o.head_hidden >= 1 && o.head_hidden <= MAX_WIDTH,
            "objective.head_hidden",
            || format!("= {} must be in [1, {MAX_WIDTH}]", o.head_hidden),
        )?;
        ensure(
            o.predsim_beta.is_finite() && (0.0..=1.0).contains(&o.predsim_beta),
            "objective.predsim_beta",
            || format!("= {} must be in [0, 1]", o.predsim_beta),
        )?;
        ensure(
            o.head_momentum.is_finite() && (0.0..1.0).contains(&o.head_momentum),
            "objective.head_momentum",
            || format!("= {} must be in [0, 1)", o.head_momentum),
        )?;
        if o.momentum_head {
            ensure(t.pipeline == Pipeline::None, "objective.momentum_head", || {
                "needs train.pipeline = \"none\": module i+1's every step updates module i's EMA copy, which pipeline stages would race for".into()
            })?;
            ensure(t.method != Method::Bp, "objective.momentum_head", || {
                "is for local rules; bp has one head, on the last block".into()
            })?;
            ensure(o.head != HeadKind::Projection, "objective.momentum_head", || {
                "needs a trainable head; objective.head = \"projection\" is the fixed projection".into()
            })?;
        }
        ensure(
            (1..=MAX_AUX_DEPTH).contains(&o.aux_depth),
            "objective.aux_depth",
            || format!("= {} must be in [1, {MAX_AUX_DEPTH}]", o.aux_depth),
        )?;
        ensure(
            o.aux_taper.is_finite() && (0.0..=1.0).contains(&o.aux_taper),
            "objective.aux_taper",
            || format!("= {} must be in [0, 1]", o.aux_taper),
        )?;
        for (key, weights) in [
            ("objective.infopro_prediction", o.infopro_prediction),
            ("objective.infopro_reconstruction", o.infopro_reconstruction),
        ] {
            ensure(weights.iter().all(|w| w.is_finite() && *w >= 0.0), key, || {
                format!("= {weights:?} must be two finite weights >= 0 (first module, module K-1)")
            })?;
        }

        // Optimizer.
        ensure(
            p.weight_decay.is_finite() && p.weight_decay >= 0.0,
            "optim.weight_decay",
            || "must be a finite number >= 0".into(),
        )?;
        ensure((0.0..1.0).contains(&p.momentum), "optim.momentum", || {
            "must be in [0, 1)".into()
        })?;
        ensure(
            p.min_lr.is_finite() && p.min_lr >= 0.0 && p.min_lr <= p.lr,
            "optim.min_lr",
            || format!("= {} must be in [0, optim.lr = {}]", p.min_lr, p.lr),
        )?;
        ensure(
            p.warmup_epochs.is_finite() && p.warmup_epochs >= 0.0,
            "optim.warmup_epochs",
            || "must be a finite number >= 0".into(),
        )?;
        ensure(
            p.schedule != Schedule::Cosine || p.warmup_epochs <= t.epochs as f64,
            "optim.warmup_epochs",
            || {
                format!(
                    "= {} is longer than the run ({} epochs): the learning rate would never reach optim.lr",
                    p.warmup_epochs, t.epochs
                )
            },
        )?;

        // Training.
        ensure(
            t.divergence_factor.is_finite() && (t.divergence_factor == 0.0 || t.divergence_factor > 1.0),
            "train.divergence_factor",
            || format!("= {} must be 0 (off) or a finite number > 1", t.divergence_factor),
        )?;
        ensure(t.epochs <= MAX_EPOCHS, "train.epochs", || {
            format!("= {} must be at most {MAX_EPOCHS}", t.epochs)
        })?;
        ensure(t.threads <= threads, "train.threads", || {
            format!(
                "= {} must be at most {threads} (4 per core, this machine has {cores}; at least {MIN_THREAD_BOUND}; 0 = libtorch's default)",
                t.threads
            )
        })?;
        ensure(
            t.stages == 0 || t.pipeline != Pipeline::None,
            "train.stages",
            || {
                format!(
                "= {} needs `train.pipeline` = \"threads\" or \"mpi\" (without a pipeline the blocks train one after another)",
                t.stages
            )
            },
        )?;
        Ok(())
    }
}
