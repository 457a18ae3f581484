//! Runs that survive: a training process killed (SIGKILL) or interrupted (SIGINT,
//! SIGTERM) at many moments leaves a consistent run directory, and `sll train
//! --resume` finishes it to the same weights, optimizer state and metrics, bit for bit,
//! as a run that was never stopped. Real processes of the real binary on the MNIST
//! shipped in `data/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SLL: &str = env!("CARGO_BIN_EXE_sll");

/// A small 3-epoch MNIST run (3 blocks of 128 units, dropout on, 1 thread), plus `extra`.
fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--data-dir",
        concat!(env!("CARGO_MANIFEST_DIR"), "/data"),
        "--epochs",
        "3",
        "--threads",
        "1",
        "--set",
        "data.train_subset=4000",
        "--set",
        "data.test_subset=500",
        "--set",
        "model.hidden=[128, 128, 128]",
        "--set",
        "objective.d0=64",
        // fp32 unless a case says `--precision bf16` (a flag wins over --set).
        "--set",
        "train.precision=\"fp32\"",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--out".into());
    args.push(out.display().to_string());
    args
}

fn spawn(args: &[String], env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(SLL);
    command.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

fn run(args: &[String], env: &[(&str, &str)]) -> Output {
    let child = spawn(args, env);
    child.wait_with_output().unwrap()
}

fn resume(dir: &Path) -> Output {
    let out = Command::new(SLL)
        .args(["train", "--resume", &dir.display().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "resume of {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every tensor of a safetensors file by name, as raw bytes (metadata left out).
fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.data().to_vec()))
        .collect();
    out.sort();
    out
}

/// Each epoch's losses and accuracies (everything but the timings).
fn numbers(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            let fields = v.as_object_mut().unwrap();
            for timing in ["seconds", "wall_seconds", "train_samples_per_second"] {
                fields.remove(timing);
            }
            v
        })
        .collect()
}

/// Asserts `run` holds exactly what `reference` does: weights, optimizer state, metrics.
fn assert_same(reference: &Path, run: &Path, what: &str) {
    for file in ["model.safetensors", "state.safetensors"] {
        let (a, b) = (tensors(&reference.join(file)), tensors(&run.join(file)));
        assert_eq!(a.len(), b.len(), "{what}: {file}");
        for ((name, x), (other, y)) in a.iter().zip(&b) {
            assert_eq!(name, other, "{what}: {file}");
            assert!(
                x == y,
                "{what}: {file}: tensor {name} differs from the uninterrupted run"
            );
        }
    }
    assert_eq!(numbers(reference), numbers(run), "{what}: metrics");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "finished", "{what}");
}

/// The epoch a checkpoint file records in its metadata.
fn metadata(path: &Path, key: &str) -> Option<String> {
    sll::checkpoint::read_metadata(path).ok()?.get(key).cloned()
}

/// What a killed run must leave: every complete file parses, metrics are never ahead
/// of the checkpoint, the checkpoint never ahead of the state, and only hidden
/// temporary files may be half-written.
fn assert_consistent(dir: &Path, what: &str) {
    let known = [
        "config.toml",
        "metrics.jsonl",
        "model.safetensors",
        "state.safetensors",
        "summary.json",
    ];
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            known.contains(&name.as_str()) || name.starts_with(sll::io::TEMP_PREFIX),
            "{what}: unexpected file {name}"
        );
    }
    let state_epoch = dir.join("state.safetensors").exists().then(|| {
        let progress = metadata(&dir.join("state.safetensors"), "progress").expect("state has progress");
        let v: serde_json::Value = serde_json::from_str(&progress).unwrap();
        v["epoch"].as_u64().unwrap() as usize
    });
    let model_epoch = dir.join("model.safetensors").exists().then(|| {
        metadata(&dir.join("model.safetensors"), "epoch")
            .expect("checkpoint loadable")
            .parse::<usize>()
            .unwrap()
    });
    let metrics = numbers(dir).len();
    assert!(
        metrics <= model_epoch.unwrap_or(0),
        "{what}: metrics ahead of the checkpoint"
    );
    assert!(
        model_epoch.unwrap_or(0) <= state_epoch.unwrap_or(0),
        "{what}: checkpoint ahead of the training state"
    );
}

/// No temporary file is left once a run has finished.
fn assert_no_temporaries(dir: &Path, what: &str) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !name.starts_with(sll::io::TEMP_PREFIX),
            "{what}: {name} left behind"
        );
    }
}

/// Waits until `dir/metrics.jsonl` has `lines` lines (the run is in epoch `lines + 1`).
fn wait_for_epochs(child: &mut Child, dir: &Path, lines: usize) {
    let start = Instant::now();
    while numbers(dir).len() < lines {
        assert!(child.try_wait().unwrap().is_none(), "run ended early");
        assert!(start.elapsed() < Duration::from_secs(120), "run too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn reference(root: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let dir = root.join(name);
    let out = run(&args(&dir, extra), &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    dir
}

/// The "done means" of resume: killed by SIGKILL during epoch 2 and resumed, every
/// method and the thread pipeline, in fp32 and in bf16, end bit-identical to an
/// uninterrupted run.
#[test]
fn sigkill_during_epoch_two_then_resume_is_bit_identical() {
    let root = tempfile::tempdir().unwrap();
    let cases: [(&str, &[&str]); 8] = [
        ("sll", &["--method", "sll"]),
        (
            "sll-momentum",
            &["--method", "sll", "--set", "objective.momentum_head=true"],
        ),
        (
            "local-auglocal",
            &["--method", "local", "--set", "objective.head=\"auglocal\""],
        ),
        ("local", &["--method", "local"]),
        ("bp", &["--method", "bp"]),
        ("threads", &["--pipeline", "threads", "--stages", "2"]),
        ("sll-bf16", &["--method", "sll", "--precision", "bf16"]),
        (
            "threads-bf16",
            &["--pipeline", "threads", "--stages", "2", "--precision", "bf16"],
        ),
    ];
    for (name, extra) in cases {
        let expected = reference(root.path(), &format!("{name}-reference"), extra);
        let dir = root.path().join(format!("{name}-killed"));
        // SIGKILL as step 20 of epoch 2 (of 32) is about to be fed in.
        let out = run(&args(&dir, extra), &[("SLL_CRASH_AT_STEP", "2:20")]);
        assert!(!out.status.success(), "{name}: the run was to be killed");
        assert_consistent(&dir, name);
        assert_eq!(numbers(&dir).len(), 1, "{name}: killed during epoch 2");
        resume(&dir);
        assert_same(&expected, &dir, name);
        assert_no_temporaries(&dir, name);
    }
}

/// SIGKILL half-way through writing each file of the run directory, at several epochs,
/// and at many moments during steps: each time the directory is consistent and the
/// resumed run is the uninterrupted one.
#[test]
fn crashes_at_many_moments_leave_a_resumable_run() {
    let root = tempfile::tempdir().unwrap();
    let expected = reference(root.path(), "reference", &[]);
    let mut case = 0;
    let check = |dir: &Path, what: &str| {
        assert_consistent(dir, what);
        resume(dir);
        assert_same(&expected, dir, what);
        assert_no_temporaries(dir, what);
    };
    // During writes: the n-th write of each file (config.toml is written once at the
    // start and once more by every resume).
    for (file, n) in [
        ("state.safetensors", 1),
        ("state.safetensors", 2),
        ("model.safetensors", 1),
        ("model.safetensors", 3),
        ("metrics.jsonl", 2),
        ("metrics.jsonl", 3),
        ("summary.json", 1),
    ] {
        case += 1;
        let dir = root.path().join(format!("write-{case}"));
        let crash = format!("{file}:{n}");
        let out = run(&args(&dir, &[]), &[(sll::io::CRASH_ENV, &crash)]);
        assert!(!out.status.success(), "{crash}: the run was to be killed");
        check(&dir, &crash);
    }
    // During steps: just before steps spread over epochs 1 to 3 (of 32 each)...
    for at in ["1:1", "1:17", "2:1", "2:32", "3:9", "3:32"] {
        case += 1;
        let dir = root.path().join(format!("step-{case}"));
        let out = run(&args(&dir, &[]), &[("SLL_CRASH_AT_STEP", at)]);
        assert!(!out.status.success(), "step {at}: the run was to be killed");
        check(&dir, &format!("killed at step {at}"));
    }
    // ...and at moments chosen by the clock, wherever they fall.
    for delay_ms in [700, 1900] {
        case += 1;
        let dir = root.path().join(format!("clock-{case}"));
        let mut child = spawn(&args(&dir, &[]), &[]);
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        child.wait().unwrap();
        if !dir.join("config.toml").exists() {
            continue; // Killed before the run directory was made: nothing to check.
        }
        check(&dir, &format!("killed after {delay_ms} ms"));
    }
}

/// Ctrl-C (SIGINT) or SIGTERM: the current step finishes, the checkpoint and a summary
/// marked interrupted are written, the resume command is printed, the exit status is
/// non-zero; resuming finishes the run bit-identically (sequential and pipeline).
#[test]
fn interrupt_writes_a_checkpoint_and_resume_finishes_the_run() {
    let root = tempfile::tempdir().unwrap();
    for (name, signal, extra) in [
        ("sigint", libc::SIGINT, &[][..]),
        ("sigterm-threads", libc::SIGTERM, &["--pipeline", "threads"][..]),
    ] {
        let expected = reference(root.path(), &format!("{name}-reference"), extra);
        let dir = root.path().join(name);
        let mut child = spawn(&args(&dir, extra), &[]);
        wait_for_epochs(&mut child, &dir, 1);
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, signal) };
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: exit status {:?}", out.status);
        let last = stderr.lines().last().unwrap_or("");
        assert!(
            // "at epoch E, step S", or "at the end of epoch E" when the signal lands
            // between epochs (a loaded machine).
            last.starts_with("error: interrupted at ") && last.contains("sll train --resume"),
            "{name}: {last}"
        );
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["status"], "interrupted", "{name}");
        assert_consistent(&dir, name);
        resume(&dir);
        assert_same(&expected, &dir, name);
        // A finished run resumed again does nothing and keeps its files.
        let again = resume(&dir);
        assert!(
            String::from_utf8_lossy(&again.stderr).contains("nothing to do"),
            "{name}"
        );
        assert_same(&expected, &dir, name);
    }
}

/// `--epochs N` on resume extends a finished run; an existing, non-empty `--out` is
/// refused and left as it was.
#[test]
fn resume_extends_and_out_never_overwrites() {
    let root = tempfile::tempdir().unwrap();
    let dir = reference(root.path(), "run", &[]);
    let before = tensors(&dir.join("model.safetensors"));
    // The same --out again: refused, nothing touched.
    let out = run(&args(&dir, &[]), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--resume"), "{stderr}");
    assert_eq!(tensors(&dir.join("model.safetensors")), before);
    // A folder holding someone's file: refused, the file kept.
    let other = root.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), b"mine").unwrap();
    let out = run(&args(&other, &[]), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(std::fs::read(other.join("notes.txt")).unwrap(), b"mine");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
    // Extending: 3 epochs done, continue to 4.
    let out = Command::new(SLL)
        .args(["train", "--resume", &dir.display().to_string(), "--epochs", "4"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(numbers(&dir).len(), 4);
    let config = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(config.contains("epochs = 4"), "{config}");
}

/// The divergence guard: a 1e4 learning rate stops every trainer within the first
/// steps, with a one-line error naming the block, epoch and step, a non-zero exit and
/// a summary marked diverged (a run whose loss explodes is not a finished run).
#[test]
fn exploding_loss_stops_every_trainer_with_the_block_named() {
    let root = tempfile::tempdir().unwrap();
    for (name, extra) in [
        ("sll", &["--method", "sll"][..]),
        ("bp", &["--method", "bp"][..]),
        ("threads", &["--pipeline", "threads"][..]),
    ] {
        let dir = root.path().join(name);
        let mut extra = extra.to_vec();
        extra.extend(["--set", "optim.lr=1e4"]);
        let out = run(&args(&dir, &extra), &[]);
        assert!(!out.status.success(), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let error = stderr.lines().last().unwrap_or("");
        assert!(
            error.starts_with("error: ")
                && error.contains("loss exploded")
                && error.contains("train.divergence_factor")
                && error.contains("at epoch 1, step "),
            "{name}: {error}"
        );
        // "... block N loss exploded ..." (after "stage S (block N): " in a pipeline).
        let before = error.split(" loss exploded").next().unwrap_or("");
        let block = before.rsplit("block ").next().unwrap_or("");
        assert!(block.parse::<usize>().is_ok(), "{name}: {error}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
        assert_eq!(summary["status"], "diverged", "{name}");
        assert_eq!(summary["epochs_completed"], 0, "{name}");
        assert!(
            !dir.join("model.safetensors").exists(),
            "{name}: no good checkpoint to keep"
        );
    }
}

/// A full disk: the run stops with one line naming the folder and the bytes needed,
/// and leaves no temporary or half-written file. Needs a small tmpfs (root); skipped
/// with a notice where `mount` is not allowed.
#[test]
fn full_disk_is_one_clear_error_and_leaves_nothing_half_written() {
    let root = tempfile::tempdir().unwrap();
    let mount = root.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mount)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: full_disk test needs to mount a tmpfs (run as root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let dir = mount.join("run");
    let out = run(&args(&dir, &[]), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr.lines().last().unwrap_or("");
    assert!(
        error.starts_with("error: no space left in ")
            && error.contains(&dir.display().to_string())
            && error.contains("bytes needed"),
        "{error}"
    );
    assert_no_temporaries(&dir, "full disk");
    assert!(!dir.join("state.safetensors").exists() && !dir.join("model.safetensors").exists());
}
