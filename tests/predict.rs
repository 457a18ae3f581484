//! `sll predict`: MNIST test images written as PNG files get the classes the run's
//! classifier gives those examples of the test split, and the split's predictions over
//! the whole test set reproduce the accuracy `sll eval` recomputes. The real binary on
//! the MNIST shipped in `data/`.

mod common;
use std::path::Path;
use std::process::{Command, Output};

fn sll(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sll"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn predict_on_png_files_matches_the_test_split_and_eval() {
    let root = tempfile::tempdir().unwrap();
    let run = root.path().join("run");
    let run_arg = run.display().to_string();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sets = ["data.train_subset=2000", "model.hidden=[64, 64]"];
    let mut args = vec!["train", "--epochs", "1", "--threads", "1", "--out", &run_arg];
    for s in &sets {
        args.extend(["--set", s]);
    }
    ok(&sll(&args, repo));

    // The first 12 test images as 8-bit grey-scale PNG files.
    let (_, test) = sll::data::load("mnist", Path::new(common::REPO_DATA)).unwrap();
    let n = 12;
    let pixels = Vec::<f32>::try_from(&test.images.narrow(0, 0, n).flatten(0, -1)).unwrap();
    let mut files = vec![];
    for i in 0..n as usize {
        let bytes: Vec<u8> = pixels[i * 784..(i + 1) * 784]
            .iter()
            .map(|v| (v * 255.0).round() as u8)
            .collect();
        let path = root.path().join(format!("test-{i}.png"));
        image::GrayImage::from_raw(28, 28, bytes)
            .unwrap()
            .save(&path)
            .unwrap();
        files.push(path.display().to_string());
    }

    let mut args = vec!["predict", "--run", &run_arg, "--json", "--top", "3"];
    args.extend(files.iter().map(String::as_str));
    let from_files = json_lines(&ok(&sll(&args, root.path())));
    let from_split = json_lines(&ok(&sll(
        &[
            "predict", "--run", &run_arg, "--json", "--split", "test", "--first", "12",
        ],
        root.path(),
    )));
    assert_eq!(from_files.len(), 12);
    assert_eq!(from_split.len(), 12);
    for (f, s) in from_files.iter().zip(&from_split) {
        // Same classes in the same order, same probabilities (the PNG holds the same bytes).
        assert_eq!(f["top"], s["top"], "{f} / {s}");
        let top = f["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let p: Vec<f64> = top.iter().map(|t| t["probability"].as_f64().unwrap()).collect();
        assert!(p[0] >= p[1] && p[1] >= p[2] && p[0] <= 1.0 && p[2] >= 0.0, "{f}");
        assert_eq!(
            top[0]["class"],
            top[0]["index"].to_string(),
            "MNIST classes are digits"
        );
        assert!(f["label"].is_null());
        assert!(s["label"]["index"].is_u64());
    }

    // The whole test split: the share of top-1 classes equal to the label is the test
    // accuracy that `sll eval` recomputes and the run recorded.
    let all = json_lines(&ok(&sll(
        &[
            "predict", "--run", &run_arg, "--json", "--split", "test", "--first", "10000", "--top", "1",
        ],
        root.path(),
    )));
    assert_eq!(all.len(), 10_000);
    let correct = all
        .iter()
        .filter(|p| p["top"][0]["index"] == p["label"]["index"])
        .count();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    let recorded = summary["test_accuracy"].as_f64().unwrap();
    assert_eq!(correct as f64 / 10_000.0, recorded);
    let eval = ok(&sll(&["eval", "--run", &run_arg], root.path()));
    assert!(
        eval.contains(&format!("test accuracy: {:.2}%", 100.0 * recorded)),
        "{eval}"
    );

    // Text output: one line per file, the file named, probabilities in percent.
    let text = ok(&sll(&["predict", "--run", &run_arg, &files[0]], root.path()));
    assert!(text.starts_with(&files[0]) && text.contains(" %"), "{text}");

    // A file that is no image: one line naming it, non-zero exit.
    let bad = root.path().join("notes.png");
    std::fs::write(&bad, "not an image").unwrap();
    let o = sll(
        &["predict", "--run", &run_arg, &bad.display().to_string()],
        root.path(),
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let last = err.lines().last().unwrap();
    assert!(last.starts_with("error: ") && last.contains("notes.png"), "{err}");
}

#[test]
fn predict_mistakes_are_one_line_errors() {
    let root = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 3] = [
        (&["predict", "--run", "nowhere", "x.png"], "not a run directory"),
        (&["predict", "--run", "nowhere"], "--split"),
        (
            &["predict", "--run", "nowhere", "--split", "test", "x.png"],
            "cannot be used",
        ),
    ];
    for (args, needle) in cases {
        let o = sll(args, root.path());
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
