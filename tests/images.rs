//! Tests of the colour-image side of the data module: the CIFAR readers (real
//! CIFAR-10 from the shared data, skipped without it; generated CIFAR-10 and
//! CIFAR-100 files in the official layout), image folders, augmentation and the
//! background batch loader.

mod common;
use common::{synthetic, REPO_DATA};
use sha2::{Digest, Sha256};
use sll::data::augment::Augment;
use sll::data::cifar::load_cifar;
use sll::data::imagefolder::{
    image_folder_classes, jpeg_truncated, load_image_folder, load_image_folder_with, train_size,
};
use sll::data::loader::LoaderData;
use sll::data::{self, BadFiles, Dataset};
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// What the CIFAR-10 test compares: per split the length, the images' shape,
/// the class histogram, the first label, the SHA-256 of the first image turned
/// back into bytes (planes R, G, B) and the sum of all pixels, exact to 1e-3
/// (one changed pixel moves it by at least 1/255).
#[derive(Debug, PartialEq)]
struct Summary {
    len: usize,
    shape: Vec<i64>,
    histogram: Vec<i64>,
    first_label: i64,
    first_image_sha256: String,
    pixel_sum: f64,
}

fn summary(ds: &Dataset) -> Summary {
    let first = (ds.images.get(0) * 255.0)
        .round()
        .to_kind(Kind::Uint8)
        .flatten(0, -1);
    let first = Vec::<u8>::try_from(first).unwrap();
    let pixel_sum = ds.images.sum(Kind::Double).double_value(&[]);
    Summary {
        len: ds.len(),
        shape: ds.images.size(),
        histogram: Vec::<i64>::try_from(ds.labels.bincount(None::<Tensor>, ds.classes)).unwrap(),
        first_label: ds.labels.int64_value(&[0]),
        first_image_sha256: format!("{:x}", Sha256::digest(&first)),
        pixel_sum,
    }
}

/// The expected summaries of real CIFAR-10, computed with Python from the
/// extracted member files (the pixel sums exactly, as the sum over byte
/// values `k` of their count times the `f32` nearest to `k / 255`).
fn cifar10_expected() -> (Summary, Summary) {
    (
        Summary {
            len: 50000,
            shape: vec![50000, 3, 32, 32],
            histogram: vec![5000; 10],
            first_label: 6,
            first_image_sha256: "e052de7deb775f78e5e3b718032db5e72434ae6f0d34152c7ad434521631b17c".into(),
            pixel_sum: 72_708_558.527_112_93,
        },
        Summary {
            len: 10000,
            shape: vec![10000, 3, 32, 32],
            histogram: vec![1000; 10],
            first_label: 3,
            first_image_sha256: "73eefb0106f2b7a2660668be6875682f6aa9c20820633725642b0cc87dc59198".into(),
            pixel_sum: 14_640_689.092_492_498,
        },
    )
}

#[test]
fn cifar10_loads_from_the_archive_and_from_an_extracted_copy() {
    let Some(shared) = common::shared_data("CIFAR-10", &[common::CIFAR10_ARCHIVE]) else {
        return;
    };
    // Straight from the shared archive.
    let (train, test) = data::load("cifar10", &shared).unwrap();
    let expected = cifar10_expected();
    for (got, want) in [(summary(&train), expected.0), (summary(&test), expected.1)] {
        assert!((got.pixel_sum - want.pixel_sum).abs() < 1e-3, "{got:?}");
        assert_eq!(
            Summary {
                pixel_sum: 0.0,
                ..got
            },
            Summary {
                pixel_sum: 0.0,
                ..want
            }
        );
    }
    assert_eq!(train.classes, 10);
    assert_eq!(train.labels.kind(), Kind::Int64);
    assert_eq!(train.images.kind(), Kind::Float);
    // The first training image's top-left pixel is (59, 62, 63).
    let first: Vec<f64> = (0..3).map(|c| train.images.double_value(&[0, c, 0, 0])).collect();
    for (got, want) in first.iter().zip([59.0, 62.0, 63.0]) {
        assert!((got - want / 255.0).abs() < 1e-6, "{first:?}");
    }

    // From an extracted copy, identical; the folder wins over a damaged
    // archive next to it.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10");
    std::fs::create_dir_all(&dir).unwrap();
    let archive = std::fs::File::open(shared.join(common::CIFAR10_ARCHIVE)).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(archive))
        .unpack(&dir)
        .unwrap();
    std::fs::write(dir.join("cifar-10-binary.tar.gz"), b"garbage").unwrap();
    let (train2, test2) = data::load("cifar10", tmp.path()).unwrap();
    assert!(train2.images.equal(&train.images) && train2.labels.equal(&train.labels));
    assert!(test2.images.equal(&test.images) && test2.labels.equal(&test.labels));
    drop((train, test, train2, test2));

    // A member with a flipped pixel fails its checksum; one cut short fails
    // the record check; one removed is named.
    let batch = dir.join("cifar-10-batches-bin/data_batch_3.bin");
    let mut bytes = std::fs::read(&batch).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&batch, &bytes).unwrap();
    let msg = data::load("cifar10", tmp.path()).unwrap_err().to_string();
    assert!(msg.contains("data_batch_3.bin: SHA-256 mismatch"), "{msg}");
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&batch, &bytes).unwrap();
    let msg = data::load("cifar10", tmp.path()).unwrap_err().to_string();
    assert!(msg.contains("not a multiple of the record size 3073"), "{msg}");
    assert!(msg.contains(&batch.display().to_string()), "{msg}");
    assert!(msg.contains("sll fetch cifar10 --data-dir"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
    std::fs::remove_file(&batch).unwrap();
    let msg = data::load("cifar10", tmp.path()).unwrap_err().to_string();
    assert!(msg.contains("data_batch_3.bin: cannot read the file"), "{msg}");
}

#[test]
fn truncated_cifar10_archive_is_a_one_line_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10");
    std::fs::create_dir_all(&dir).unwrap();
    let archive = dir.join("cifar-10-binary.tar.gz");
    std::fs::write(&archive, common::truncated_cifar10_archive()).unwrap();
    let msg = data::load("cifar10", tmp.path()).unwrap_err().to_string();
    assert!(msg.contains(&archive.display().to_string()), "{msg}");
    assert!(msg.contains("truncated or corrupt archive"), "{msg}");
    assert!(msg.contains("sll fetch cifar10"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    // Nothing there at all.
    let empty = tempfile::tempdir().unwrap();
    let msg = data::load("cifar100", empty.path()).unwrap_err().to_string();
    assert!(
        msg.contains("cifar-100-binary.tar.gz: file not found") && msg.contains("sll fetch cifar100"),
        "{msg}"
    );
}

/// Generated CIFAR-100 records: record `i` has coarse label `i % 20`, fine
/// label `(i * 7) % 100` and every pixel equal to `i % 251`.
fn cifar100_records(n: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(n * 3074);
    for i in 0..n {
        bytes.push((i % 20) as u8);
        bytes.push((i * 7 % 100) as u8);
        bytes.extend(std::iter::repeat_n((i % 251) as u8, 3072));
    }
    bytes
}

/// Write `<data_dir>/cifar-100/cifar-100-binary/{train,test}.bin`.
fn write_cifar100_folder(data_dir: &Path, train: &[u8], test: &[u8]) -> PathBuf {
    let dir = data_dir.join("cifar-100/cifar-100-binary");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("train.bin"), train).unwrap();
    std::fs::write(dir.join("test.bin"), test).unwrap();
    dir
}

/// Write `<data_dir>/cifar-100/cifar-100-binary.tar.gz` holding `members`
/// (name under `cifar-100-binary/`, bytes) and return its path.
fn write_cifar100_archive(data_dir: &Path, members: &[(&str, &[u8])]) -> PathBuf {
    let dir = data_dir.join("cifar-100");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cifar-100-binary.tar.gz");
    let gz =
        flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, format!("cifar-100-binary/{name}"), *bytes)
            .unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap().flush().unwrap();
    path
}

/// Check a generated CIFAR-100 split of `n` records.
fn check_generated(ds: &Dataset, n: usize) {
    assert_eq!(ds.len(), n);
    assert_eq!(ds.classes, 100);
    assert_eq!(ds.images.size(), vec![n as i64, 3, 32, 32]);
    let labels = Vec::<i64>::try_from(&ds.labels).unwrap();
    assert!(labels.iter().enumerate().all(|(i, &l)| l == (i * 7 % 100) as i64));
    for i in [0, 1, 250, 251, n - 1] {
        let v = ds.images.get(i as i64);
        let want = (i % 251) as f64 / 255.0;
        assert!((v.min().double_value(&[]) - want).abs() < 1e-6, "record {i}");
        assert!((v.max().double_value(&[]) - want).abs() < 1e-6, "record {i}");
    }
}

#[test]
fn generated_cifar100_loads_from_a_folder() {
    let (train, test) = (cifar100_records(50000), cifar100_records(10000));
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_cifar100_folder(tmp.path(), &train, &test);
    let (tr, te) = load_cifar("cifar100", tmp.path(), false).unwrap();
    check_generated(&tr, 50000);
    check_generated(&te, 10000);
    drop((tr, te));
    // These are not the official files: with checksums on, the MD5 fails.
    let msg = data::load("cifar100", tmp.path()).unwrap_err().to_string();
    assert!(msg.contains("train.bin: MD5 mismatch"), "{msg}");

    // Damaged members.
    let test_bin = dir.join("test.bin");
    std::fs::write(&test_bin, &test[..test.len() - 10]).unwrap();
    let msg = load_cifar("cifar100", tmp.path(), false).unwrap_err().to_string();
    assert!(msg.contains(&test_bin.display().to_string()), "{msg}");
    assert!(msg.contains("not a multiple of the record size 3074"), "{msg}");
    assert!(msg.contains("sll fetch cifar100") && !msg.contains('\n'), "{msg}");
    std::fs::write(&test_bin, &test[..3074 * 9999]).unwrap();
    let msg = load_cifar("cifar100", tmp.path(), false).unwrap_err().to_string();
    assert!(msg.contains("9999 records, expected 10000"), "{msg}");
    let mut bad = test.clone();
    bad[3074 * 5 + 1] = 100;
    std::fs::write(&test_bin, &bad).unwrap();
    let msg = load_cifar("cifar100", tmp.path(), false).unwrap_err().to_string();
    assert!(msg.contains("label 100 of record 5 is out of range"), "{msg}");
    bad[3074 * 5 + 1] = 0;
    bad[3074 * 6] = 20;
    std::fs::write(&test_bin, &bad).unwrap();
    let msg = load_cifar("cifar100", tmp.path(), false).unwrap_err().to_string();
    assert!(msg.contains("coarse label 20 of record 6"), "{msg}");
}

#[test]
fn generated_cifar100_loads_from_an_archive() {
    let (train, test) = (cifar100_records(50000), cifar100_records(10000));
    let tmp = tempfile::tempdir().unwrap();
    let archive = write_cifar100_archive(tmp.path(), &[("train.bin", &train), ("test.bin", &test)]);
    let (tr, te) = load_cifar("cifar100", tmp.path(), false).unwrap();
    check_generated(&tr, 50000);
    check_generated(&te, 10000);
    drop((tr, te));

    // Truncated archive.
    let gz = std::fs::read(&archive).unwrap();
    std::fs::write(&archive, &gz[..gz.len() * 2 / 3]).unwrap();
    let msg = load_cifar("cifar100", tmp.path(), false).unwrap_err().to_string();
    assert!(msg.contains(&archive.display().to_string()), "{msg}");
    assert!(msg.contains("truncated or corrupt archive"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    // Missing member.
    write_cifar100_archive(tmp.path(), &[("train.bin", &train)]);
    let msg = load_cifar("cifar100", tmp.path(), false).unwrap_err().to_string();
    assert!(
        msg.contains("member cifar-100-binary/test.bin is missing"),
        "{msg}"
    );
}

#[test]
fn dataset_names_and_image_sizes() {
    assert_eq!(
        data::known_datasets(),
        ["mnist", "fashion-mnist", "cifar10", "cifar100", "imagefolder"]
    );
    let msg = data::load_sized("cifar10", Path::new(REPO_DATA), Some(64))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("32x32") && msg.contains("imagefolder"), "{msg}");
    let msg = data::load_sized("nope", Path::new(REPO_DATA), Some(64))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unknown dataset `nope`"), "{msg}");
    let msg = load_cifar("mnist", Path::new(REPO_DATA), true)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("not a CIFAR dataset"), "{msg}");
    assert_eq!((train_size(64), train_size(32), train_size(224)), (73, 37, 256));
}

/// An image folder in a temporary dir: classes `cat` (PNG, 3 train images of
/// 40x30, one solid red) and `dog` (JPEG, 2 train images of 30x50), 1 val
/// image each.
fn image_folder() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        for class in ["cat", "dog"] {
            std::fs::create_dir_all(tmp.path().join(split).join(class)).unwrap();
        }
    }
    let gradient = |w: u32, h: u32| {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 6) as u8, (y * 5) as u8, 90]))
    };
    let root = tmp.path();
    image::RgbImage::from_pixel(40, 30, image::Rgb([255, 0, 0]))
        .save(root.join("train/cat/a.png"))
        .unwrap();
    gradient(40, 30).save(root.join("train/cat/b.PNG")).unwrap();
    gradient(30, 40).save(root.join("train/cat/c.png")).unwrap();
    gradient(30, 50).save(root.join("train/dog/a.jpg")).unwrap();
    image::GrayImage::from_pixel(30, 50, image::Luma([128]))
        .save(root.join("train/dog/b.JPEG"))
        .unwrap();
    std::fs::write(root.join("train/dog/notes.txt"), b"not an image").unwrap();
    gradient(40, 30).save(root.join("val/cat/x.png")).unwrap();
    gradient(30, 50).save(root.join("val/dog/y.jpeg")).unwrap();
    tmp
}

#[test]
fn image_folders_load_and_report_bad_files() {
    let tmp = image_folder();
    let root = tmp.path();
    assert_eq!(image_folder_classes(root).unwrap(), ["cat", "dog"]);
    let (train, test) = load_image_folder(root, 16).unwrap();
    assert_eq!(train.images.size(), vec![5, 3, 18, 18]);
    assert_eq!(test.images.size(), vec![2, 3, 16, 16]);
    assert_eq!(Vec::<i64>::try_from(&train.labels).unwrap(), [0, 0, 0, 1, 1]);
    assert_eq!(Vec::<i64>::try_from(&test.labels).unwrap(), [0, 1]);
    assert_eq!(train.classes, 2);
    // The solid red PNG stays exactly red; the grey JPEG is grey in all channels.
    let red = train.images.get(0);
    assert_eq!(red.get(0).min().double_value(&[]), 1.0);
    assert_eq!(red.narrow(0, 1, 2).max().double_value(&[]), 0.0);
    let grey = train.images.get(4);
    let (lo, hi) = (grey.min().double_value(&[]), grey.max().double_value(&[]));
    assert!(
        (lo - 128.0 / 255.0).abs() < 0.02 && (hi - 128.0 / 255.0).abs() < 0.02,
        "{lo} {hi}"
    );
    // The same through `data::load_sized`.
    let (again, _) = data::load_sized("imagefolder", root, Some(16)).unwrap();
    assert!(again.images.equal(&train.images));

    // A corrupt image is named.
    let bad = root.join("val/dog/z.png");
    std::fs::write(&bad, b"garbage").unwrap();
    let msg = load_image_folder(root, 16).unwrap_err().to_string();
    assert!(
        msg.contains(&bad.display().to_string()) && msg.contains("cannot decode"),
        "{msg}"
    );
    std::fs::remove_file(&bad).unwrap();

    // An empty class, classes that differ, a missing split.
    std::fs::create_dir_all(root.join("train/eel")).unwrap();
    std::fs::create_dir_all(root.join("val/eel")).unwrap();
    let msg = load_image_folder(root, 16).unwrap_err().to_string();
    assert!(msg.contains("eel") && msg.contains("empty class folder"), "{msg}");
    std::fs::remove_dir(root.join("val/eel")).unwrap();
    let msg = load_image_folder(root, 16).unwrap_err().to_string();
    assert!(msg.contains("differ"), "{msg}");
    std::fs::remove_dir_all(root.join("val")).unwrap();
    let msg = load_image_folder(root, 16).unwrap_err().to_string();
    assert!(msg.contains(&root.join("val").display().to_string()), "{msg}");
    assert!(load_image_folder(root, 0).is_err());
}

/// Files that are not what their names say, or are damaged, in a large folder: the
/// ones that decode are read right (a PNG named `.JPEG`, 16-bit and palette PNGs); a
/// truncated JPEG (which the `image` crate's decoder fills with grey and calls a
/// success) and garbage are an error naming the file and its class by default, and
/// left out and listed with `data.bad_files = "skip"`.
#[test]
fn bad_image_files_follow_the_policy() {
    let tmp = image_folder();
    let root = tmp.path();
    // A PNG named .JPEG (ImageNet has one), a 16-bit PNG, a palette PNG: all read.
    image::RgbImage::from_pixel(20, 20, image::Rgb([0, 255, 0]))
        .save_with_format(root.join("train/cat/png.JPEG"), image::ImageFormat::Png)
        .unwrap();
    image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_pixel(20, 20, image::Rgb([65535, 0, 0]))
        .save(root.join("train/cat/sixteen.png"))
        .unwrap();
    let mut palette = Vec::new();
    let mut encoder = png::Encoder::new(&mut palette, 4, 4);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_palette(vec![0u8, 0, 255, 255, 255, 0]);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .unwrap()
        .write_image_data(&[1u8; 16])
        .unwrap();
    std::fs::write(root.join("train/cat/palette.png"), &palette).unwrap();
    let (train, _) = load_image_folder(root, 16).unwrap();
    assert_eq!(train.len(), 8);
    // Sorted names: a.png, b.PNG, c.png, palette.png, png.JPEG, sixteen.png.
    let channel_means = |i: i64| -> Vec<f64> {
        let m = train.images.get(i).mean_dim(&[1i64, 2][..], false, Kind::Double);
        Vec::<f64>::try_from(&m).unwrap()
    };
    assert_eq!(channel_means(3), [1.0, 1.0, 0.0], "palette entry 1 is yellow");
    assert_eq!(channel_means(4), [0.0, 1.0, 0.0], "the PNG named .JPEG is green");
    assert_eq!(channel_means(5), [1.0, 0.0, 0.0], "the 16-bit PNG is red");

    // A truncated JPEG and a garbage file.
    let mut jpeg = Vec::new();
    image::RgbImage::from_fn(64, 48, |x, y| image::Rgb([(x * 4) as u8, (y * 5) as u8, 7]))
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    assert!(!jpeg_truncated(&jpeg));
    let cut = &jpeg[..jpeg.len() * 2 / 3];
    assert!(jpeg_truncated(cut));
    let truncated = root.join("train/dog/cut.jpg");
    std::fs::write(&truncated, cut).unwrap();
    let garbage = root.join("val/cat/garbage.jpg");
    std::fs::write(&garbage, b"\xFF\xD8 not a jpeg at all").unwrap();
    let e = load_image_folder(root, 16).unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(
        e.contains(&truncated.display().to_string()) && e.contains("class dog") && e.contains("cut short"),
        "{e}"
    );
    // Skipped: left out, listed, the rest as before.
    let mut skipped = vec![];
    let (train_skip, test_skip) = load_image_folder_with(root, 16, BadFiles::Skip, &mut skipped).unwrap();
    assert_eq!((train_skip.len(), test_skip.len()), (8, 2));
    assert!(train_skip.images.equal(&train.images));
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(
        skipped[0].contains("cut.jpg") && skipped[1].contains("garbage.jpg"),
        "{skipped:?}"
    );
    // A run lists them in its summary, and says so at the start.
    let out = tmp.path().join("run");
    let root_s = root.display().to_string();
    let o = common::sll(
        &[
            "train",
            "--data-dir",
            &root_s,
            "--epochs",
            "1",
            "--threads",
            "1",
            "--set",
            "data.dataset=\"imagefolder\"",
            "--set",
            "data.image_size=16",
            "--set",
            "data.bad_files=\"skip\"",
            "--set",
            "model.hidden=[16]",
            "--set",
            "objective.d0=16",
            "--out",
            &out.display().to_string(),
        ],
        root,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("left out 2 file(s)"));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(
        summary["skipped_files"].as_array().map(Vec::len),
        Some(2),
        "{summary}"
    );
}

/// A `[2, 6, 8]` image whose values are `1 + index` (never 0).
fn test_image() -> Vec<f32> {
    (0..2 * 6 * 8).map(|i| 1.0 + i as f32).collect()
}

/// Apply `augment` to [`test_image`] with the generator of `(seed, 0, 0, position)`.
fn augmented(augment: &Augment, seed: u64, position: usize) -> Vec<f32> {
    let (oh, ow) = augment.output_size(6, 8).unwrap();
    let mut out = vec![f32::NAN; 2 * oh * ow];
    augment.apply(
        &test_image(),
        (2, 6, 8),
        &mut out,
        &mut Augment::rng(seed, 0, 0, position),
    );
    out
}

#[test]
fn augmentation_is_seeded_and_does_what_it_says() {
    assert!(Augment::default().is_off());
    let all = Augment {
        crop_padding: 2,
        crop_size: None,
        flip: true,
        cutout: 3,
    };
    assert!(!all.is_off());
    // Deterministic per key, different across seeds and keys.
    let runs: Vec<Vec<f32>> = (0..8).map(|p| augmented(&all, 1, p)).collect();
    assert_eq!(runs, (0..8).map(|p| augmented(&all, 1, p)).collect::<Vec<_>>());
    assert_ne!(runs, (0..8).map(|p| augmented(&all, 2, p)).collect::<Vec<_>>());
    let mut other_epoch = vec![0f32; 96];
    all.apply(
        &test_image(),
        (2, 6, 8),
        &mut other_epoch,
        &mut Augment::rng(1, 1, 0, 0),
    );
    assert_ne!(other_epoch, runs[0]);

    // Flip: each output is the input or its left-right mirror; both happen.
    let flip = Augment {
        flip: true,
        ..Augment::default()
    };
    let src = test_image();
    let mirrored: Vec<f32> = src.chunks(8).flat_map(|row| row.iter().rev().copied()).collect();
    let outs: Vec<Vec<f32>> = (0..32).map(|p| augmented(&flip, 3, p)).collect();
    assert!(outs.iter().all(|o| *o == src || *o == mirrored));
    assert!(outs.contains(&src) && outs.contains(&mirrored));

    // Crop with padding: each output is the input shifted by (sy, sx) in
    // -2..=2, zeros coming in; some shift is not 0.
    let crop = Augment {
        crop_padding: 2,
        ..Augment::default()
    };
    let mut shifted = false;
    for p in 0..32 {
        let out = augmented(&crop, 4, p);
        let at = |c: usize, y: i64, x: i64| {
            if (0..6).contains(&y) && (0..8).contains(&x) {
                src[c * 48 + y as usize * 8 + x as usize]
            } else {
                0.0
            }
        };
        let shift = (-2..=2)
            .flat_map(|sy| (-2..=2).map(move |sx| (sy, sx)))
            .find(|&(sy, sx)| {
                (0..96).all(|i| out[i] == at(i / 48, (i % 48 / 8) as i64 + sy, (i % 8) as i64 + sx))
            });
        let shift = shift.unwrap_or_else(|| panic!("output {p} is not a shifted copy: {out:?}"));
        shifted |= shift != (0, 0);
    }
    assert!(shifted);

    // A crop size: the output is that square, and must fit.
    let small = Augment {
        crop_size: Some(4),
        ..Augment::default()
    };
    assert_eq!(small.output_size(6, 8).unwrap(), (4, 4));
    assert_eq!(augmented(&small, 5, 0).len(), 32);
    assert!(augmented(&small, 5, 0).iter().all(|&v| v >= 1.0));
    let large = Augment {
        crop_size: Some(11),
        crop_padding: 2,
        ..Augment::default()
    };
    assert!(large
        .output_size(6, 8)
        .unwrap_err()
        .to_string()
        .contains("does not fit"));

    // Cutout: the zeros form one rectangle, the same in both channels, at
    // most 3x3 and exactly 3x3 when away from the borders.
    let cutout = Augment {
        cutout: 3,
        ..Augment::default()
    };
    let mut full = false;
    for p in 0..64 {
        let out = augmented(&cutout, 6, p);
        let zeros: Vec<usize> = (0..48).filter(|&i| out[i] == 0.0).collect();
        let (ys, xs): (Vec<usize>, Vec<usize>) = zeros.iter().map(|i| (i / 8, i % 8)).unzip();
        let (h, w) = (
            ys.iter().max().unwrap() - ys.iter().min().unwrap() + 1,
            xs.iter().max().unwrap() - xs.iter().min().unwrap() + 1,
        );
        assert_eq!(zeros.len(), h * w, "not a rectangle");
        assert!(h <= 3 && w <= 3);
        full |= zeros.len() == 9;
        for i in 0..48 {
            assert_eq!(out[i] == 0.0, out[48 + i] == 0.0);
            if out[i] != 0.0 {
                assert_eq!((out[i], out[48 + i]), (src[i], src[48 + i]));
            }
        }
    }
    assert!(full);

    // Serde: all keys optional, unknown keys refused.
    let parsed: Augment = toml::from_str("crop_padding = 4\nflip = true").unwrap();
    assert_eq!(
        parsed,
        Augment {
            crop_padding: 4,
            flip: true,
            ..Augment::default()
        }
    );
    assert!(toml::from_str::<Augment>("flop = true").is_err());
}

#[test]
fn loader_matches_shuffled_batches_and_is_deterministic() {
    let ds = synthetic(103);
    let data = LoaderData::new(&ds).unwrap();
    assert_eq!(data.len(), 103);
    for workers in [0, 1, 3] {
        let batches = data.epoch(10, 42, 2, Augment::default(), workers).unwrap();
        assert_eq!(batches.len(), 11);
        let reference = data::shuffled_batches(&ds, 10, 42, 2);
        let mut count = 0;
        for ((x, y), (rx, ry)) in batches.zip(reference) {
            assert!(x.equal(&rx) && y.equal(&ry));
            count += 1;
        }
        assert_eq!(count, 11);
    }

    // With augmentation: the same whatever the number of workers (none included), and
    // different across epochs and seeds.
    let augment = Augment {
        crop_padding: 1,
        crop_size: Some(2),
        flip: true,
        cutout: 1,
    };
    let run = |seed: u64, epoch: usize, workers: usize| -> Vec<(Tensor, Tensor)> {
        data.epoch(16, seed, epoch, augment, workers).unwrap().collect()
    };
    let same = |a: &[(Tensor, Tensor)], b: &[(Tensor, Tensor)]| {
        a.len() == b.len() && a.iter().zip(b).all(|((x, y), (u, v))| x.equal(u) && y.equal(v))
    };
    let one = run(7, 0, 1);
    assert_eq!(one.len(), 7);
    assert_eq!(one[6].0.size(), vec![103 - 96, 1, 2, 2]);
    assert!(same(&one, &run(7, 0, 4)));
    // Built by the consuming thread (no worker): the same batches.
    assert!(same(&one, &run(7, 0, 0)));
    assert!(!same(&one, &run(7, 1, 2)));
    assert!(!same(&one, &run(8, 0, 2)));
    // Labels follow the shuffled order whatever the augmentation.
    let labels: Vec<Tensor> = one.iter().map(|(_, y)| y.shallow_clone()).collect();
    let reference: Vec<Tensor> = data::shuffled_batches(&ds, 16, 7, 0).map(|(_, y)| y).collect();
    assert!(labels.iter().zip(&reference).all(|(a, b)| a.equal(b)));

    // Dropping an epoch after two batches stops its workers (the test would
    // hang otherwise), and a crop that does not fit is an error.
    let mut batches = data.epoch(1, 0, 0, augment, 3).unwrap();
    assert!(batches.next().is_some() && batches.next().is_some());
    drop(batches);
    let bad = Augment {
        crop_size: Some(9),
        ..Augment::default()
    };
    assert!(data.epoch(8, 0, 0, bad, 2).is_err());
    // An empty set has no batch.
    let empty = LoaderData::new(&ds.take(0)).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.epoch(8, 0, 0, Augment::default(), 2).unwrap().count(), 0);
}

/// A set read from 8-bit images and standardised (MNIST as `sll train` prepares it) is
/// held as 8-bit codes, a quarter of the memory, and gives the batches of the f32
/// copy bit for bit, with and without augmentation, for 0 and 3 workers; a set whose
/// values are not codes' (the synthetic one) stays f32.
#[test]
fn standardised_8_bit_sets_are_held_as_codes_with_the_same_batches() {
    let mut d = sll::config::Config::load(
        None,
        &[format!("data.dir={REPO_DATA:?}"), "data.train_subset=3000".into()],
    )
    .unwrap()
    .data;
    let (train, _) = data::prepare(&mut d, tch::Device::Cpu).unwrap();
    for normalize in [true, false] {
        let (train, stats) = if normalize {
            (train.take(3000), Some((d.mean.as_slice(), d.std.as_slice())))
        } else {
            let mut raw = d.clone();
            (raw.mean, raw.std, raw.normalize) = (vec![], vec![], false);
            (data::prepare(&mut raw, tch::Device::Cpu).unwrap().0, None)
        };
        let codes = LoaderData::compact(&train, stats).unwrap();
        let floats = LoaderData::new(&train).unwrap();
        assert_eq!(
            (codes.bytes_per_value(), floats.bytes_per_value()),
            (1, 4),
            "normalize {normalize}"
        );
        let augment = Augment {
            crop_padding: 2,
            crop_size: None,
            flip: true,
            cutout: 4,
        };
        for (augment, workers) in [(Augment::default(), 0), (augment, 3)] {
            let a = codes.epoch(256, 5, 1, augment, workers).unwrap();
            let b = floats.epoch(256, 5, 1, augment, workers).unwrap();
            let mut n = 0;
            for ((x, y), (u, v)) in a.zip(b) {
                assert!(x.equal(&u) && y.equal(&v), "normalize {normalize}, batch {n}");
                n += 1;
            }
            assert_eq!(n, 12);
        }
    }
    assert_eq!(
        LoaderData::compact(&synthetic(10), None)
            .unwrap()
            .bytes_per_value(),
        4
    );
}

/// `sll prepare` writes the folder once at a training size: every image's shorter side
/// brought down to the size (the aspect kept, none enlarged), the same classes and
/// counts, a record of what it did; it never writes into a folder that has files, and
/// names a file that does not decode with its class (or leaves it out with `skip`).
#[test]
fn prepare_writes_an_image_folder_at_a_training_size() {
    let tmp = image_folder();
    let root = tmp.path();
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("small");
    let run = |dest: &Path, extra: &[&str]| {
        let mut args = vec![
            "prepare",
            "--data-dir",
            root.to_str().unwrap(),
            "--size",
            "20",
            "--out",
            dest.to_str().unwrap(),
        ];
        args.extend(extra);
        common::sll(&args, out.path())
    };
    let o = run(&dest, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("prepared 7 images"));
    let dims = |p: &str| image::image_dimensions(dest.join(p)).unwrap();
    assert_eq!(dims("train/cat/b.jpg"), (27, 20));
    assert_eq!(dims("train/cat/c.jpg"), (20, 27));
    assert_eq!(dims("train/dog/a.jpg"), (20, 33));
    let record = std::fs::read_to_string(dest.join("prepared.toml")).unwrap();
    assert!(
        record.contains("size = 20") && record.contains("images = 7"),
        "{record}"
    );
    let (train, test) = load_image_folder(&dest, 16).unwrap();
    assert_eq!((train.len(), test.len()), (5, 2));
    // Never into a folder with files.
    let o = run(&dest, &[]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    // A file that does not decode: named with its class, or left out.
    std::fs::write(root.join("train/dog/bad.jpg"), b"garbage").unwrap();
    let again = out.path().join("again");
    let o = run(&again, &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("bad.jpg") && e.contains("class dog"),
        "{e}"
    );
    // Nothing half-written is left: the same command can run again.
    assert!(!again.join("train").exists() && !again.join("prepared.toml").exists());
    let o = run(&out.path().join("skipping"), &["--bad-files", "skip"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 left out"));
}
