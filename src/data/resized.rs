//! `sll prepare`: an image folder written once at a training size, as FFCV's writer
//! stores ImageNet pre-resized, so that every later start decodes small images.
//!
//! Each image of `<src>/{train,val}/<class>/` is decoded (any PNG or JPEG, whatever its
//! name says; a JPEG cut short is an error), resized so that its shorter side is the
//! given size (never enlarged; the aspect ratio kept) and written as an RGB JPEG of
//! quality [`JPEG_QUALITY`] to `<out>/{train,val}/<class>/<stem>.jpg`. `<out>/prepared.toml`
//! records the source, the size and the counts. Files that do not decode follow
//! `data.bad_files`'s policy: an error naming the file and its class, or left out and
//! counted.

use super::imagefolder::{image_folder_classes, list_split, open_image};
use super::BadFiles;
use anyhow::{anyhow, bail, Context, Result};
use image::imageops::FilterType;
use std::path::{Path, PathBuf};

/// JPEG quality of the written images.
pub const JPEG_QUALITY: u8 = 90;

/// Most threads writing at once.
const MAX_THREADS: usize = 8;

/// What [`prepare_folder`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// Images written.
    pub written: usize,
    /// Files left out (`skip`), as `path: reason`.
    pub skipped: Vec<String>,
}

/// `image` with its shorter side brought down to `size` (unchanged if already at most
/// `size`), with a triangle (bilinear) filter.
fn shrink(image: image::RgbImage, size: u32) -> image::RgbImage {
    let (w, h) = image.dimensions();
    if w.min(h) <= size {
        return image;
    }
    let scaled = |long: u32, short: u32| {
        ((f64::from(long) * f64::from(size) / f64::from(short)).round() as u32).max(size)
    };
    let (nw, nh) = if w <= h {
        (size, scaled(h, w))
    } else {
        (scaled(w, h), size)
    };
    image::imageops::resize(&image, nw, nh, FilterType::Triangle)
}

/// Decodes `path`, shrinks it to `size` and writes it to `to` (under `catch_unwind`: a
/// decoder's panic is this file's error).
fn convert(path: &Path, to: &Path, size: u32) -> Result<()> {
    let image = std::panic::catch_unwind(|| open_image(path)).unwrap_or_else(|_| {
        bail!(
            "{}: cannot decode the image (the decoder failed on it)",
            path.display()
        )
    })?;
    let image = shrink(image.to_rgb8(), size);
    let file = std::fs::File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut writer = std::io::BufWriter::new(file);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut writer, JPEG_QUALITY)
        .encode_image(&image)
        .map_err(|e| anyhow!("cannot write {}: {e}", to.display()))
}

/// Writes the image folder at `src` to `out` at `size` (see the module doc); `out` must
/// not exist or be empty. Shows progress on a terminal. On an error what was written
/// so far is removed (the folder held nothing before), so the same command can run
/// again.
pub fn prepare_folder(src: &Path, out: &Path, size: u32, bad_files: BadFiles) -> Result<Prepared> {
    if size == 0 {
        bail!("--size must be at least 1");
    }
    if out.exists() && std::fs::read_dir(out).map_or(true, |mut d| d.next().is_some()) {
        bail!(
            "{}: exists and is not empty; prepare writes a new folder",
            out.display()
        );
    }
    let result = write_folder(src, out, size, bad_files);
    if result.is_err() {
        for split in ["train", "val"] {
            let _ = std::fs::remove_dir_all(out.join(split));
        }
        let _ = std::fs::remove_file(out.join("prepared.toml"));
    }
    result
}

/// [`prepare_folder`] after its checks.
fn write_folder(src: &Path, out: &Path, size: u32, bad_files: BadFiles) -> Result<Prepared> {
    let classes = image_folder_classes(src)?;
    let mut jobs: Vec<(PathBuf, PathBuf, String)> = vec![];
    for split in ["train", "val"] {
        for (path, label) in list_split(&src.join(split), &classes)? {
            let class = &classes[label as usize];
            let dir = out.join(split).join(class);
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let stem = path
                .file_stem()
                .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
            jobs.push((path, dir.join(format!("{stem}.jpg")), class.clone()));
        }
    }
    let progress = indicatif::ProgressBar::new(jobs.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("prepare {pos}/{len} images {wide_bar} {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS);
    let per_thread = jobs.len().div_ceil(threads).max(1);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .chunks(per_thread)
            .map(|chunk| {
                let progress = &progress;
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(from, to, _)| {
                            let r = convert(from, to, size);
                            progress.inc(1);
                            r
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    progress.finish_and_clear();
    let mut prepared = Prepared {
        written: 0,
        skipped: vec![],
    };
    for ((_, to, class), result) in jobs.iter().zip(results) {
        match result {
            Ok(()) => prepared.written += 1,
            Err(e) if bad_files == BadFiles::Skip => {
                let _ = std::fs::remove_file(to);
                prepared.skipped.push(super::one_line(&format!("{e:#}")));
            }
            Err(e) => bail!("{e:#} (class {class}; --bad-files skip leaves such files out)"),
        }
    }
    let record = format!(
        "# written by `sll prepare`\nsource = {:?}\nsize = {size}\njpeg_quality = {JPEG_QUALITY}\nimages = {}\nskipped = {}\n",
        src.display().to_string(),
        prepared.written,
        prepared.skipped.len()
    );
    crate::io::write_atomic(&out.join("prepared.toml"), record.as_bytes())?;
    Ok(prepared)
}
