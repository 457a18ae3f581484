//! Image-folder datasets laid out as ImageNette is:
//! `<root>/train/<class>/*.{png,jpg,jpeg}` and `<root>/val/<class>/…`, the
//! classes being the sorted sub-folder names of `train/` (`val/` must have the
//! same ones).
//!
//! Each image is decoded (PNG or JPEG, any colour type, converted to RGB),
//! centre-cropped to a square of its shorter side and resized to the target
//! side with a triangle (bilinear) filter. The test split (`val/`) is stored
//! at exactly `image_size`; the training split at [`train_size`] (`image_size`
//! · 8/7), so that training augmentation can take random `image_size` crops.
//! Decoding runs on a few threads, each filling its own contiguous part of the
//! output, so the result does not depend on the number of threads.

use super::{BadFiles, Dataset};
use anyhow::{anyhow, bail, Result};
use image::imageops::FilterType;
use std::path::{Path, PathBuf};
use tch::Tensor;

/// Image side [`super::load`] uses for `imagefolder` when none is given.
pub const DEFAULT_IMAGE_SIZE: usize = 64;

/// Most threads decoding images at once.
const MAX_THREADS: usize = 4;

/// File extensions read as images (compared case-insensitively).
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Side at which the training split of an `image_size` set is stored:
/// `image_size` · 8/7, rounded (e.g. 64 → 73, 32 → 37, 224 → 256).
pub fn train_size(image_size: usize) -> usize {
    (image_size * 8 + 3) / 7
}

/// The class names of the image folder at `root`: the sorted names of the
/// sub-folders of `<root>/train/`.
pub fn image_folder_classes(root: &Path) -> Result<Vec<String>> {
    subfolders(&root.join("train"))
}

/// The image files of `<split_dir>/<class>/` for each class, sorted by name
/// within a class, with their class index; a missing or empty class folder is
/// an error naming it.
pub(crate) fn list_split(split_dir: &Path, classes: &[String]) -> Result<Vec<(PathBuf, i64)>> {
    let mut files = Vec::new();
    for (index, class) in classes.iter().enumerate() {
        let dir = split_dir.join(class);
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            anyhow!(
                "{}: cannot read the class folder ({e}); train/ and val/ must have the same classes",
                dir.display()
            )
        })?;
        let mut images = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|e| anyhow!("{}: cannot list the folder ({e})", dir.display()))?
                .path();
            let is_image = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
            if is_image && path.is_file() {
                images.push(path);
            }
        }
        if images.is_empty() {
            bail!(
                "{}: empty class folder (no .png, .jpg or .jpeg file)",
                dir.display()
            );
        }
        images.sort();
        files.extend(images.into_iter().map(|p| (p, index as i64)));
    }
    Ok(files)
}

/// Decode the image at `path`, centre-crop it to a square and resize it to
/// `size`×`size`, writing `[channels, size, size]` values in `[0, 1]` into `out`
/// (`channels` 1: grey-scale; 3: RGB).
fn decode_into(path: &Path, channels: usize, size: usize, out: &mut [f32]) -> Result<()> {
    // A decoder's panic on a hostile file is that file's error, not the run's end.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_unguarded(path, channels, size, out)
    }))
    .unwrap_or_else(|_| {
        bail!(
            "{}: cannot decode the image (the decoder failed on it)",
            path.display()
        )
    })
}

/// Whether `bytes`, a JPEG file, is cut short: its last end-of-image marker (FF D9)
/// does not follow its last start-of-scan (FF DA). Inside entropy-coded data every FF
/// byte is followed by 00 or a restart marker, so the markers cannot be mistaken; the
/// `image` crate's JPEG decoder fills a truncated file with grey and reports success.
pub fn jpeg_truncated(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(scan), Some(end)) => end < scan,
        (Some(_), None) => true,
        _ => false,
    }
}

fn decode_unguarded(path: &Path, channels: usize, size: usize, out: &mut [f32]) -> Result<()> {
    let image = open_image(path)?;
    match channels {
        1 => square_into(&image.to_luma8(), path, size, out),
        3 => square_into(&image.to_rgb8(), path, size, out),
        c => bail!(
            "{}: cannot read an image as {c} channels (1 or 3)",
            path.display()
        ),
    }
}

/// The image at `path` decoded, whatever its name says; a JPEG cut short is an error.
/// (Decoders may panic on hostile files: call it under `catch_unwind`.)
pub(crate) fn open_image(path: &Path) -> Result<image::DynamicImage> {
    let bytes = std::fs::read(path).map_err(|e| anyhow!("{}: cannot read the file ({e})", path.display()))?;
    if bytes.starts_with(&[0xFF, 0xD8]) && jpeg_truncated(&bytes) {
        bail!(
            "{}: cannot decode the image (a JPEG cut short: no end-of-image marker after its last scan)",
            path.display()
        );
    }
    let image = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| {
            anyhow!(
                "{}: cannot read the file ({})",
                path.display(),
                super::one_line(&e.to_string())
            )
        })?
        .decode()
        .map_err(|e| {
            anyhow!(
                "{}: cannot decode the image ({})",
                path.display(),
                super::one_line(&e.to_string())
            )
        })?;
    Ok(image)
}

/// `image` centre-cropped to a square, resized to `size`×`size` and written
/// channel-major into `out` as values in `[0, 1]`.
fn square_into<P>(
    image: &image::ImageBuffer<P, Vec<u8>>,
    path: &Path,
    size: usize,
    out: &mut [f32],
) -> Result<()>
where
    P: image::Pixel<Subpixel = u8> + 'static,
{
    let (w, h) = image.dimensions();
    let side = w.min(h);
    if side == 0 {
        bail!("{}: empty image", path.display());
    }
    let square = image::imageops::crop_imm(image, (w - side) / 2, (h - side) / 2, side, side).to_image();
    let resized = image::imageops::resize(&square, size as u32, size as u32, FilterType::Triangle);
    let plane = size * size;
    for (i, pixel) in resized.pixels().enumerate() {
        for (ch, &v) in pixel.channels().iter().enumerate() {
            out[ch * plane + i] = f32::from(v) / 255.0;
        }
    }
    Ok(())
}

/// The image at `path` as `[channels, size, size]` values in `[0, 1]`, decoded,
/// centre-cropped to a square and resized as the image-folder loader does.
pub fn decode_image(path: &Path, channels: usize, size: usize) -> Result<Vec<f32>> {
    let mut out = vec![0f32; channels * size * size];
    decode_into(path, channels, size, &mut out)?;
    Ok(out)
}

/// Decode `files` at `size` on up to [`MAX_THREADS`] threads into one
/// `[N, 3, size, size]` set. A file that does not decode: with [`BadFiles::Error`],
/// the first (in order) is the error, naming the file and its class (`class_names`);
/// with [`BadFiles::Skip`], every such file is left out and added to `skipped`.
fn decode_split(
    files: &[(PathBuf, i64)],
    size: usize,
    class_names: &[String],
    bad_files: BadFiles,
    skipped: &mut Vec<String>,
) -> Result<Dataset> {
    let classes = class_names.len();
    let example = 3 * size * size;
    let mut pixels = vec![0f32; files.len() * example];
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_THREADS);
    let per_thread = files.len().div_ceil(threads).max(1);
    let results: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(per_thread)
            .zip(pixels.chunks_mut(per_thread * example))
            .map(|(files, out)| {
                scope.spawn(move || {
                    files
                        .iter()
                        .zip(out.chunks_exact_mut(example))
                        .map(|((path, _), out)| decode_into(path, 3, size, out))
                        .collect::<Vec<Result<()>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    // Keep the examples that decoded, in order, moved down over those that did not.
    let mut labels: Vec<i64> = Vec::with_capacity(files.len());
    for (i, ((_, label), result)) in files.iter().zip(results).enumerate() {
        match result {
            Ok(()) => {
                let to = labels.len();
                if to != i {
                    pixels.copy_within(i * example..(i + 1) * example, to * example);
                }
                labels.push(*label);
            }
            Err(e) if bad_files == BadFiles::Skip => skipped.push(super::one_line(&format!("{e:#}"))),
            Err(e) => {
                let class = &class_names[*label as usize];
                bail!("{e:#} (class {class}; data.bad_files = \"skip\" leaves such files out)")
            }
        }
    }
    if labels.is_empty() {
        bail!("no image of the folder decodes (every file was left out)");
    }
    pixels.truncate(labels.len() * example);
    let n = labels.len() as i64;
    Ok(Dataset {
        images: Tensor::from_slice(&pixels).view([n, 3, size as i64, size as i64]),
        labels: Tensor::from_slice(&labels),
        classes: classes as i64,
    })
}

/// Loads `(train, test)` from the image folder at `root` (`train/` and
/// `val/`, see the module doc): test images at `image_size`, training images
/// at [`train_size`]`(image_size)` for random-crop augmentation. Labels index
/// [`image_folder_classes`]. Errors name the folder or file: a missing
/// folder, an empty class, classes of `val/` differing from those of
/// `train/`, an image that does not decode, an `image_size` of 0.
pub fn load_image_folder(root: &Path, image_size: usize) -> Result<(Dataset, Dataset)> {
    load_image_folder_with(root, image_size, BadFiles::Error, &mut vec![])
}

/// [`load_image_folder`] with a policy for files that do not decode (`skip`: left
/// out and added to `skipped` as `path: reason`).
pub fn load_image_folder_with(
    root: &Path,
    image_size: usize,
    bad_files: BadFiles,
    skipped: &mut Vec<String>,
) -> Result<(Dataset, Dataset)> {
    if image_size == 0 {
        bail!(
            "image folder {}: the image size must be at least 1",
            root.display()
        );
    }
    let classes = image_folder_classes(root)?;
    let val = root.join("val");
    let val_classes = subfolders(&val)?;
    if val_classes != classes {
        bail!(
            "{}: classes {:?} differ from those of {} ({:?})",
            val.display(),
            val_classes,
            root.join("train").display(),
            classes
        );
    }
    let train_files = list_split(&root.join("train"), &classes)?;
    let val_files = list_split(&val, &classes)?;
    let train = decode_split(&train_files, train_size(image_size), &classes, bad_files, skipped)?;
    let test = decode_split(&val_files, image_size, &classes, bad_files, skipped)?;
    Ok((train, test))
}

/// The sorted names of the sub-folders of `dir`, of which there must be one.
fn subfolders(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        anyhow!(
            "{}: cannot read the folder ({e}); an image folder needs train/<class>/ and val/<class>/ (`sll fetch imagenette` downloads ImageNette)",
            dir.display()
        )
    })?;
    let mut classes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| anyhow!("{}: cannot list the folder ({e})", dir.display()))?;
        if entry.path().is_dir() {
            classes.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    classes.sort();
    if classes.is_empty() {
        bail!("{}: no class sub-folder found", dir.display());
    }
    Ok(classes)
}
