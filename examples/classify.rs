//! Train a small SLL run on the MNIST shipped in `data/`, reload it from its run
//! directory, and classify images with it: the first test digits written as PNG files.
//!
//!     cargo run --release --example classify
//!
//! With a run of your own: `cargo run --release --example classify -- runs/<run> a.png b.png`.

use anyhow::Result;
use sll::config::Config;
use sll::predict::TrainedRun;
use std::path::{Path, PathBuf};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.split_first() {
        Some((run, files)) => classify(
            Path::new(run),
            &files.iter().map(PathBuf::from).collect::<Vec<_>>(),
        ),
        None => demo(),
    }
}

/// Prints the top 3 classes of each file.
fn classify(run: &Path, files: &[PathBuf]) -> Result<()> {
    let run = TrainedRun::load(run, None)?;
    for p in run.classify_files(files, 3)? {
        let top: Vec<String> = p
            .top
            .iter()
            .map(|&(c, prob)| format!("{} ({:.1} %)", run.class_name(c), 100.0 * prob))
            .collect();
        println!("{}: {}", p.input, top.join(", "));
    }
    Ok(())
}

/// One epoch of the default preset on 5,000 images (a few seconds), then 5 test digits
/// saved as PNG files and classified by the reloaded run.
fn demo() -> Result<()> {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/data");
    let dir = tempfile::tempdir()?;
    let config = Config::load_quietly(
        Some("mnist-mlp"),
        &[
            "train.epochs=1".into(),
            "data.train_subset=5000".into(),
            format!("data.dir={data:?}"),
        ],
    )?;
    let summary = sll::run::run(config, &dir.path().join("run"))?;
    println!("trained: test accuracy {:.2} %", 100.0 * summary.test_accuracy);

    let (_, test) = sll::data::load("mnist", Path::new(data))?;
    let mut files = vec![];
    for i in 0..5 {
        let pixels = Vec::<f32>::try_from(&test.images.get(i).flatten(0, -1))?;
        let bytes = pixels.iter().map(|v| (v * 255.0).round() as u8).collect();
        let path = dir
            .path()
            .join(format!("digit-{i}-label-{}.png", test.labels.int64_value(&[i])));
        image::GrayImage::from_raw(28, 28, bytes)
            .expect("28×28 pixels")
            .save(&path)?;
        files.push(path);
    }
    classify(&dir.path().join("run"), &files)
}

#[test]
fn runs() {
    demo().unwrap();
}
