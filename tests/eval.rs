//! `sll eval`: it finds the run's data from any directory, reproduces the recorded
//! accuracy, and exits non-zero when the accuracy differs from the recorded one or the
//! weights hold NaN or infinite values. The real binary on the MNIST shipped in `data/`.

mod common;
use common::sll;
use std::path::Path;
use std::process::Output;

fn stderr_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

#[test]
fn eval_checks_accuracy_and_weights_from_any_directory() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let run_arg = run.display().to_string();
    // Trained from the repository with its relative `data` folder...
    let trained = sll(
        &[
            "train",
            "--epochs",
            "1",
            "--threads",
            "1",
            "--set",
            "data.train_subset=1000",
            "--set",
            "data.test_subset=300",
            "--set",
            "model.hidden=[64, 64]",
            "--out",
            &run_arg,
        ],
        Path::new(env!("CARGO_MANIFEST_DIR")),
    );
    assert!(trained.status.success(), "{}", stderr_line(&trained));
    // ...and evaluated from elsewhere: the recorded (absolute) data folder is used.
    let elsewhere = root.path();
    let out = sll(&["eval", "--run", &run_arg], elsewhere);
    assert!(out.status.success(), "{}", stderr_line(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("(identical)"));

    // A recorded accuracy that the weights do not give: an error, exit non-zero.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut line: serde_json::Value = serde_json::from_str(metrics.lines().last().unwrap()).unwrap();
    line["test_accuracy"] = serde_json::json!(0.123);
    std::fs::write(run.join("metrics.jsonl"), format!("{line}\n")).unwrap();
    let out = sll(&["eval", "--run", &run_arg], elsewhere);
    assert!(!out.status.success());
    let error = stderr_line(&out);
    assert!(
        error.starts_with("error: ") && error.contains("differs from the 12.3000% recorded"),
        "{error}"
    );
    std::fs::write(run.join("metrics.jsonl"), metrics).unwrap();

    // Weights holding a NaN: an error naming the tensor.
    let path = run.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut poisoned = bytes.clone();
    poisoned[8 + header..8 + header + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&path, poisoned).unwrap();
    let out = sll(&["eval", "--run", &run_arg], elsewhere);
    assert!(!out.status.success());
    let error = stderr_line(&out);
    assert!(error.contains("holds NaN or infinite values"), "{error}");
    std::fs::write(&path, bytes).unwrap();
    assert!(sll(&["eval", "--run", &run_arg], elsewhere).status.success());
}
