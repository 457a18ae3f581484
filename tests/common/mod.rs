//! Helpers shared by the integration tests.

use sll::data::Dataset;
use std::io::Write;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Runs the `sll` binary with `args` in `cwd` and returns what it did.
#[allow(dead_code)]
pub fn sll(args: &[&str], cwd: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sll"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// The repository's own data dir, which ships MNIST (`data/mnist/`): tests on
/// MNIST read it, so they run on a fresh clone.
#[allow(dead_code)]
pub const REPO_DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data");

/// The data dir holding the datasets the repository does not ship (CIFAR-10,
/// Fashion-MNIST): `$SLL_TEST_DATA` if set (`none` meaning "there is none",
/// to check that the tests skip cleanly), else `../shared/data` beside the
/// repository if it exists; `Err` says why there is none.
#[allow(dead_code)]
pub fn shared_data_dir() -> Result<PathBuf, String> {
    match std::env::var_os("SLL_TEST_DATA") {
        Some(v) if v == "none" => Err("SLL_TEST_DATA=none".into()),
        Some(v) => {
            let dir = PathBuf::from(v);
            match dir.is_dir() {
                true => Ok(dir),
                false => Err(format!("SLL_TEST_DATA={} is not a folder", dir.display())),
            }
        }
        None => {
            let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data"));
            match dir.is_dir() {
                true => Ok(dir),
                false => Err(format!("no folder {}", dir.display())),
            }
        }
    }
}

/// The shared data dir (see [`shared_data_dir`]) if it holds every file of
/// `files` (paths relative to it); otherwise prints one line to stderr saying
/// the calling test is skipped because it needs `what`, and returns `None`, so
/// that a test needing data that is not there passes without checking anything:
///
/// ```ignore
/// let Some(dir) = common::shared_data("CIFAR-10", &[common::CIFAR10_ARCHIVE]) else {
///     return;
/// };
/// ```
///
/// With `SLL_TEST_DATA_REQUIRED=1` (for CI) a missing file fails the test instead.
#[allow(dead_code)]
pub fn shared_data(what: &str, files: &[&str]) -> Option<PathBuf> {
    let why = match shared_data_dir() {
        Ok(dir) => match files.iter().find(|f| !dir.join(f).is_file()) {
            None => return Some(dir),
            Some(f) => format!("no file {}", dir.join(f).display()),
        },
        Err(why) => why,
    };
    skip(
        &format!("needs {what} in ../shared/data or $SLL_TEST_DATA ({why})"),
        "SLL_TEST_DATA_REQUIRED",
    );
    None
}

/// Reports a test skipped for want of `what` (`<test>: skipped: <what>`), or fails it
/// when the environment variable `required` is `1` (CI, where it must not skip).
#[allow(dead_code)]
pub fn skip(what: &str, required: &str) {
    let test = std::thread::current().name().unwrap_or("test").to_string();
    let notice = format!("{test}: skipped: {what}");
    if std::env::var_os(required).is_some_and(|v| v == "1") {
        panic!("{notice}, and {required}=1");
    }
    // Straight to stderr, past the test harness's capture, so that the skip
    // shows; one write, so that it stays on its own line.
    let _ = std::io::stderr().write_all(format!("{notice}\n").as_bytes());
}

/// The CIFAR-10 archive a shared data dir holds, relative to it.
#[allow(dead_code)]
pub const CIFAR10_ARCHIVE: &str = "cifar-10/cifar-10-binary.tar.gz";

/// The four Fashion-MNIST files a shared data dir holds, relative to it.
#[allow(dead_code)]
pub const FASHION_MNIST_FILES: [&str; 4] = [
    "fashion-mnist/train-images-idx3-ubyte.gz",
    "fashion-mnist/train-labels-idx1-ubyte.gz",
    "fashion-mnist/t10k-images-idx3-ubyte.gz",
    "fashion-mnist/t10k-labels-idx1-ubyte.gz",
];

/// A synthetic set of `n` 1x2x2 images whose pixels all equal the example's
/// index, with label `index % 10`.
#[allow(dead_code)]
pub fn synthetic(n: i64) -> Dataset {
    Dataset {
        images: Tensor::arange(n, (Kind::Float, tch::Device::Cpu))
            .view([n, 1, 1, 1])
            .expand([n, 1, 2, 2], false)
            .contiguous(),
        labels: Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)).remainder(10),
        classes: 10,
    }
}

/// Every tensor of a run's checkpoint, by name.
#[allow(dead_code)] // not every test crate uses every helper
pub fn checkpoint(run: &Path) -> Vec<(String, Tensor)> {
    let mut tensors = Tensor::read_safetensors(run.join("model.safetensors")).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

/// Each epoch's losses and test accuracies (everything but the timings).
#[allow(dead_code)]
pub fn numbers(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let fields = v.as_object_mut().unwrap();
            fields.remove("seconds");
            fields.remove("wall_seconds");
            fields.remove("train_samples_per_second");
            v
        })
        .collect()
}

/// The small MNIST run of the pipeline tests (3 blocks, dropout on, 1,500 training
/// examples, 2 epochs, 1 intra-op thread), as config overrides.
#[allow(dead_code)]
pub fn small_sets() -> Vec<String> {
    vec![
        format!("data.dir={REPO_DATA:?}"),
        "data.train_subset=1500".into(),
        "data.test_subset=1000".into(),
        "model.hidden=[256, 256, 256]".into(),
        "objective.d0=128".into(),
        "train.epochs=2".into(),
        "train.threads=1".into(),
    ]
}

/// Asserts that `run` trained exactly what `sequential` did (every checkpoint tensor
/// bit for bit, every epoch's losses and test accuracies) and that `sll eval` on it
/// reproduces its last accuracy; `what` names the run in failures.
#[allow(dead_code)]
pub fn assert_same_training(sequential: &Path, run: &Path, what: &str) {
    let (a, b) = (checkpoint(sequential), checkpoint(run));
    assert_eq!(a.len(), b.len(), "{what}");
    for ((name, x), (other, y)) in a.iter().zip(&b) {
        assert_eq!(name, other, "{what}");
        assert!(x.equal(y), "{what}: {name} differs from sequential training");
    }
    assert_eq!(numbers(sequential), numbers(run), "{what}");
    let evaluation = sll::cli::eval_command(&sll::cli::EvalArgs {
        run: run.to_path_buf(),
        data_dir: None,
    })
    .unwrap();
    assert_eq!(
        Some(evaluation.accuracy),
        numbers(run).last().unwrap()["test_accuracy"].as_f64(),
        "{what}"
    );
}

/// A generated `.tar.gz` in the CIFAR-10 layout cut short, like a download
/// broken off: the first MiB of an archive whose only member,
/// `cifar-10-batches-bin/data_batch_1.bin`, holds 1,000 records of noise (which
/// does not compress, so the cut falls inside it).
#[allow(dead_code)]
pub fn truncated_cifar10_archive() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let member: Vec<u8> = (0..1000 * 3073)
        .map(|_| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect();
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(member.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder
        .append_data(&mut header, "cifar-10-batches-bin/data_batch_1.bin", &member[..])
        .unwrap();
    let mut archive = builder.into_inner().unwrap().finish().unwrap();
    assert!(archive.len() > 2 << 20);
    archive.truncate(1 << 20);
    archive
}

/// A copy of block `i`'s trainable tensors (to compare before and after a step).
#[allow(dead_code)]
pub fn snapshot(model: &sll::learner::Model, i: usize) -> Vec<Tensor> {
    model
        .network
        .trainable(i)
        .iter()
        .map(|t| t.detach().copy())
        .collect()
}

/// libtorch's generator and thread settings are process-wide: the tests of one binary
/// that seed or train take turns (a failed test does not poison the turn for the others).
#[allow(dead_code)]
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LIBTORCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LIBTORCH.lock().unwrap_or_else(|e| e.into_inner())
}
