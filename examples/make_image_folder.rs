//! Writes a synthetic image folder of JPEGs for the image-pipeline benchmarks (not
//! committed): `train/<class>/` and `val/<class>/`, images of varied sizes around
//! 400 × 350 (ImageNet's typical size), each a smooth random pattern whose colour
//! depends on its class (so that a network can learn the classes).
//!
//!     cargo run --release --example make_image_folder -- OUT IMAGES [CLASSES] [VAL_FRACTION]
//!
//! e.g. `... -- /tmp/folder-10k 10000 10 0.1`: 9,000 training and 1,000 validation
//! images in 10 classes. Deterministic: the same arguments give the same files.

use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use std::path::PathBuf;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, images, rest @ ..] = args.as_slice() else {
        bail!("usage: make_image_folder OUT IMAGES [CLASSES] [VAL_FRACTION]");
    };
    let out = PathBuf::from(out);
    let images: usize = images.parse().context("IMAGES: a number")?;
    let classes: usize = rest
        .first()
        .map_or(Ok(10), |c| c.parse())
        .context("CLASSES: a number")?;
    let val: f64 = rest
        .get(1)
        .map_or(Ok(0.1), |v| v.parse())
        .context("VAL_FRACTION: a number")?;
    if classes == 0 || !(0.0..1.0).contains(&val) {
        bail!("CLASSES must be at least 1 and VAL_FRACTION in [0, 1)");
    }
    let palette: Vec<[f32; 3]> = (0..classes)
        .map(|c| {
            let a = c as f32 / classes as f32 * std::f32::consts::TAU;
            [
                0.5 + 0.4 * a.cos(),
                0.5 + 0.4 * (a + 2.1).cos(),
                0.5 + 0.4 * (a + 4.2).cos(),
            ]
        })
        .collect();
    // Every `every`-th image of a class goes to val/.
    let every = if val > 0.0 {
        (1.0 / val).round().max(1.0) as usize
    } else {
        usize::MAX
    };
    for i in 0..images {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
        let class = i % classes;
        let split = if (i / classes).is_multiple_of(every) {
            "val"
        } else {
            "train"
        };
        let (w, h) = (rng.random_range(300..500u32), rng.random_range(260..440u32));
        let (fx, fy, phase) = (
            rng.random_range(1.0..6.0f32),
            rng.random_range(1.0..6.0f32),
            rng.random_range(0.0..6.3f32),
        );
        let base = palette[class];
        let image = image::RgbImage::from_fn(w, h, |x, y| {
            let t = ((x as f32 / w as f32 * fx + y as f32 / h as f32 * fy) * 3.0 + phase).sin() * 0.15;
            image::Rgb(base.map(|c| ((c + t).clamp(0.0, 1.0) * 255.0) as u8))
        });
        let dir = out.join(split).join(format!("class{class:03}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        image.save(dir.join(format!("{i:07}.jpg")))?;
    }
    println!("{images} images in {classes} classes under {}", out.display());
    Ok(())
}
