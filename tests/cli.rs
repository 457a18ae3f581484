//! The `sll` binary end to end: train, eval, and one-line errors for user mistakes.

mod common;
use common::sll;
use std::process::Output;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A user mistake: non-zero exit, one `error:` line, no panic or backtrace.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {err}");
    let line = err.lines().last().unwrap_or("");
    assert!(line.starts_with("error: "), "last line is not an error: {err}");
    assert!(line.contains(needle), "error does not mention {needle:?}: {line}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
}

#[test]
fn train_then_eval_reproduces_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::REPO_DATA.to_string();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let args = [
        "train",
        "--epochs",
        "2",
        "--data-dir",
        &data,
        "--out",
        run_s,
        "--threads",
        "2",
        "--set",
        "data.train_subset=5000",
        "--set",
        "model.hidden=[128, 128]",
        "--set",
        "objective.d0=64",
    ];
    let o = sll(&args, dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    for file in [
        "config.toml",
        "metrics.jsonl",
        "summary.json",
        "model.safetensors",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    for key in [
        "method",
        "model",
        "dataset",
        "epochs",
        "batch_size",
        "seed",
        "test_accuracy",
        "block_test_accuracy",
        "train_seconds",
        "train_samples_per_second",
        "peak_rss_bytes",
        "time_to_accuracy",
        "parameters",
        "backend",
        "version",
    ] {
        assert!(summary.get(key).is_some(), "summary.json lacks {key}");
    }
    let accuracy = summary["test_accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.8, "accuracy {accuracy}");
    // A training step costs at least 4 FLOPs per weight (forward, weight gradient).
    let flops = summary["train_flops_per_example"].as_f64().unwrap();
    let parameters = summary["parameters"].as_f64().unwrap();
    assert!(
        flops >= 4.0 * parameters,
        "{flops} FLOPs for {parameters} weights"
    );

    let o = sll(&["eval", "--run", run_s], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(&format!("test accuracy: {:.2}%", 100.0 * accuracy)),
        "{out}"
    );
    assert!(out.contains("(identical)"), "{out}");

    // Time to accuracy: recorded in the summary, tabulated and plotted by `sll report`.
    let reached = summary["time_to_accuracy"].as_array().unwrap();
    assert!(
        reached.iter().any(|t| t["threshold"].as_f64() == Some(0.8)),
        "{reached:?}"
    );
    let plot = dir.path().join("curves.png");
    let flops_plot = dir.path().join("flops.png");
    let o = sll(
        &[
            "report",
            run_s,
            "--thresholds",
            "50,99.9",
            "--plot",
            plot.to_str().unwrap(),
            "--flops-plot",
            flops_plot.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::metadata(&flops_plot).unwrap().len() > 1000);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("time to 50%") && out.contains("sll") && out.contains(" -  "),
        "{out}"
    );
    assert!(std::fs::metadata(&plot).unwrap().len() > 1000);
    let o = sll(
        &["report", dir.path().join("nothing").to_str().unwrap()],
        dir.path(),
    );
    assert_one_line_error(&o, "summary.json");

    // The run directory is never overwritten.
    let o = sll(&args, dir.path());
    assert_one_line_error(&o, "already holds a run");
}

#[test]
fn config_mistakes_are_one_line_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    assert_one_line_error(
        &sll(&["train", "--set", "objective.dzero=4"], dir.path()),
        "dzero",
    );
    assert_one_line_error(
        &sll(&["train", "--set", "objective.tau=-1"], dir.path()),
        "objective.tau",
    );
    assert_one_line_error(
        &sll(&["train", "--set", "model.hidden=\"wide\""], dir.path()),
        "model.hidden",
    );
    assert_one_line_error(
        &sll(&["train", "--config", "no-such-preset"], dir.path()),
        "no-such-preset",
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[objective\nd0 = 3").unwrap();
    assert_one_line_error(
        &sll(&["train", "--config", bad.to_str().unwrap()], dir.path()),
        "bad.toml",
    );
    let o = sll(
        &[
            "train",
            "--data-dir",
            common::REPO_DATA,
            "--set",
            "objective.head=projection",
            "--out",
            "r",
        ],
        dir.path(),
    );
    assert_one_line_error(&o, "objective.d0");
}

#[test]
fn missing_data_and_bad_checkpoint_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert_one_line_error(
        &sll(&["train", "--data-dir", "nowhere", "--out", "r"], dir.path()),
        "sll fetch",
    );
    assert_one_line_error(&sll(&["eval", "--run", "nowhere"], dir.path()), "config.toml");

    // A run whose checkpoint is damaged.
    let run = dir.path().join("run");
    let o = sll(
        &[
            "train",
            "--epochs",
            "1",
            "--data-dir",
            common::REPO_DATA,
            "--out",
            run.to_str().unwrap(),
            "--set",
            "data.train_subset=500",
            "--set",
            "model.hidden=[32]",
            "--set",
            "objective.d0=16",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    std::fs::write(
        run.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{broken",
    )
    .unwrap();
    assert_one_line_error(
        &sll(&["eval", "--run", run.to_str().unwrap()], dir.path()),
        "model.safetensors",
    );
}

#[test]
fn fetch_offline_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mirror = format!("http://{}/mnist/", closed.local_addr().unwrap());
    drop(closed);
    let o = sll(
        &["fetch", "mnist", "--data-dir", "d", "--mirror", &mirror],
        dir.path(),
    );
    assert_one_line_error(&o, "cannot download");
}

#[test]
fn bench_step_prints_json_with_the_figures() {
    let dir = tempfile::tempdir().unwrap();
    let o = sll(
        &[
            "bench", "step", "--model", "mlp", "--steps", "2", "--rounds", "1", "--warmup", "1", "--json",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for key in ["samples_per_second", "ms_per_step", "objective_share", "gflops"] {
        assert!(v[key].as_f64().is_some_and(|x| x >= 0.0), "{key}: {v}");
    }
    assert!(v["samples_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_epochs_sets_each_epoch_beside_the_step_bench() {
    let dir = tempfile::tempdir().unwrap();
    let o = sll(
        &[
            "bench",
            "epochs",
            "--epochs",
            "3",
            "--threads",
            "1",
            "--rounds",
            "1",
            "--data-dir",
            common::REPO_DATA,
            "--set",
            "data.train_subset=2000",
            "--json",
        ],
        dir.path(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let epochs: Vec<f64> = v["epoch_samples_per_second"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(epochs.len(), 3, "{v}");
    assert!(epochs.iter().all(|s| *s > 0.0), "{v}");
    // The steady state is the (upper) median of epochs 2 and 3; the ratios are its.
    let steady = v["steady_samples_per_second"].as_f64().unwrap();
    assert_eq!(steady, epochs[1].max(epochs[2]), "{v}");
    let bench = v["step_bench_samples_per_second"].as_f64().unwrap();
    assert!(bench > 0.0);
    assert!((v["steady_over_first"].as_f64().unwrap() - steady / epochs[0]).abs() < 1e-9);
    assert!((v["steady_over_step_bench"].as_f64().unwrap() - steady / bench).abs() < 1e-9);
    assert_eq!(v["flush_denormals"], true);
    assert_eq!(v["preset"], "mnist-mlp");
    // 3 epochs of 2,000 MNIST images.
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.85, "{v}");
    // The run went to a temporary folder: nothing left in the working directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
