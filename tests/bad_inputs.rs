//! The `sll` binary on bad input, as a new user would type it: settings out of range
//! (huge widths, huge d0, absurd thread counts, NaN/inf/negative values, empty lists,
//! zero sizes), bad devices, bad flags, bad files and paths (garbage configs, FIFOs,
//! missing folders), a download mirror that never answers, absurd benchmark options.
//!
//! Every case must end within [`LIMIT`] (else it is a hang), with a non-zero exit
//! status that is not a panic's (101) nor a signal's, its last stderr line starting
//! with `error:` (naming the setting, where the case says which), no panic message or
//! libtorch backtrace, and at most 3 lines of stderr. Training cases must fail before
//! any training: no epoch line, no `metrics.jsonl` in their `--out`.

mod common;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Longest a case may take before it counts as a hang and is killed.
const LIMIT: Duration = Duration::from_secs(60);

/// What a finished (or killed) run left.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    seconds: f64,
}

/// Runs the binary with `args` in `cwd` (RUST_BACKTRACE unset, as for a user, stdin
/// empty); kills it after [`LIMIT`] and fails the test: a hang.
fn run(args: &[String], cwd: &Path) -> Outcome {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sll"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_BACKTRACE")
        // Set, so that the binary does not re-execute itself to set it (half the
        // start-up time of each case).
        .env("GOMP_SPINCOUNT", "10000")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start sll");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > LIMIT {
            // SIGKILL: a run that handles SIGTERM (to checkpoint) cannot ignore it.
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "hang: `sll {}` still running after {} s; stderr so far: {}",
                args.join(" "),
                LIMIT.as_secs(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Outcome {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        seconds: start.elapsed().as_secs_f64(),
    }
}

/// Asserts that `o`, the outcome of `what`, is a clean one-line error naming `needle`.
fn assert_clean_error(what: &str, o: &Outcome, needle: Option<&str>) {
    let lines: Vec<&str> = o.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let last = lines.last().copied().unwrap_or("");
    let context = format!(
        "`sll {what}` (exit {:?}, {:.1} s), stderr:\n{}",
        o.code, o.seconds, o.stderr
    );
    match o.code {
        None => panic!("killed by a signal: {context}"),
        Some(0) => panic!("succeeded: {context}"),
        Some(101) => panic!("panicked (exit 101): {context}"),
        Some(_) => {}
    }
    assert!(
        last.starts_with("error:"),
        "last stderr line is not `error: ...`: {context}"
    );
    for bad in [
        "panicked",
        "Exception raised from",
        "stack backtrace",
        "RUST_BACKTRACE",
    ] {
        assert!(!o.stderr.contains(bad), "stderr has {bad:?}: {context}");
    }
    assert!(lines.len() <= 3, "more than 3 lines of stderr: {context}");
    if let Some(needle) = needle {
        assert!(
            last.contains(needle),
            "the error does not name {needle:?}: {context}"
        );
    }
}

/// One bad input: the arguments after `sll`, and what the error must name.
type Case = (Vec<String>, Option<&'static str>);

fn case(args: &[&str], needle: Option<&'static str>) -> Case {
    (args.iter().map(|s| s.to_string()).collect(), needle)
}

/// `sll train` with tiny real MNIST settings and `extra` (`--out` is added in the
/// test's folder): must fail before training. The data folder is given as a setting,
/// so that a case's own `--data-dir` overrides it.
fn train_case(extra: &[&str], needle: &'static str) -> Case {
    let mut args: Vec<String> = vec!["train".into()];
    for set in [
        format!("data.dir={:?}", common::REPO_DATA),
        "data.train_subset=512".into(),
        "data.test_subset=256".into(),
        "train.epochs=1".into(),
        "train.threads=1".into(),
    ] {
        args.extend(["--set".into(), set]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    (args, Some(needle))
}

/// `sll train` on a few real MNIST examples with `extra` (no `--out` added).
fn tiny<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train",
        "--data-dir",
        common::REPO_DATA,
        "--set",
        "data.train_subset=512",
        "--set",
        "data.test_subset=256",
        "--epochs",
        "1",
    ];
    args.extend(extra);
    args
}

/// `--set KEY=VALUE` for each pair, then `needle` is the key unless given.
fn sets(pairs: &[&str], needle: &'static str) -> Case {
    let extra: Vec<&str> = pairs.iter().flat_map(|p| ["--set", p]).collect();
    train_case(&extra, needle)
}

/// Runs `cases` in `dir`, each training case with its own `--out`, and checks each.
fn check_all(cases: Vec<Case>, dir: &Path) {
    for (i, (mut args, needle)) in cases.into_iter().enumerate() {
        let training = args[0] == "train";
        let out = dir.join(format!("run{i}"));
        if training && !args.iter().any(|a| a == "--out") {
            args.extend(["--out".into(), out.display().to_string()]);
        }
        let o = run(&args, dir);
        let what = args.join(" ");
        assert_clean_error(&what, &o, needle);
        if training {
            assert!(
                !o.stdout.contains("epoch 1/") && !o.stderr.contains("epoch 1/"),
                "`sll {what}` trained before failing: {}",
                o.stdout
            );
            assert!(!out.join("metrics.jsonl").exists(), "`sll {what}` wrote a run");
        }
    }
}

#[test]
fn numeric_settings_out_of_range_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let cases = vec![
        sets(&["model.hidden=[100000000]"], "model.hidden"),
        sets(&["model.hidden=[]"], "model.hidden"),
        sets(&["model.hidden=[0]"], "model.hidden"),
        sets(&["model.hidden=[1e400]"], "model.hidden"),
        sets(&["objective.d0=1000000000"], "objective.d0"),
        sets(&["objective.d0=0"], "objective.d0"),
        sets(&["objective.sparse_nonzeros=0"], "objective.sparse_nonzeros"),
        sets(&["objective.tau=-1"], "objective.tau"),
        sets(&["objective.tau=inf"], "objective.tau"),
        sets(&["objective.tau=nan"], "objective.tau"),
        sets(&["objective.beta=-1"], "objective.beta"),
        sets(&["objective.beta=inf"], "objective.beta"),
        sets(&["objective.dropout=1"], "objective.dropout"),
        sets(&["objective.label_smoothing=1"], "objective.label_smoothing"),
        sets(&["objective.head=projection"], "objective.d0"),
        sets(&["objective.prior=sometimes"], "objective.prior"),
        sets(&["optim.lr=nan"], "optim.lr"),
        sets(&["optim.lr=inf"], "optim.lr"),
        sets(&["optim.lr=1e400"], "optim.lr"),
        sets(&["optim.lr=-1"], "optim.lr"),
        sets(&["optim.weight_decay=-1"], "optim.weight_decay"),
        sets(&["optim.weight_decay=nan"], "optim.weight_decay"),
        sets(&["optim.optimizer=sgd", "optim.momentum=1"], "optim.momentum"),
        sets(&["optim.momentum=-0.5"], "optim.momentum"),
        sets(&["optim.warmup_epochs=5"], "optim.warmup_epochs"),
        sets(&["optim.warmup_epochs=nan"], "optim.warmup_epochs"),
        sets(&["optim.min_lr=1"], "optim.min_lr"),
        sets(&["optim.schedule=linear"], "optim.schedule"),
        sets(&["model.dropout=-0.5"], "model.dropout"),
        sets(&["model.block_size=4"], "model.block_size"),
        sets(&["model.block_size=0"], "model.block_size"),
        sets(&["model.pool_grid=0"], "model.pool_grid"),
        sets(&["model.kind=transformer"], "model.kind"),
        sets(&["preset=../elsewhere"], "preset"),
        sets(&["train.seed=-1"], "train.seed"),
    ];
    check_all(cases, dir.path());
}

#[test]
fn data_and_model_shape_settings_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let cases = vec![
        sets(&["data.batch_size=0"], "data.batch_size"),
        sets(&["data.batch_size=99999999999"], "data.batch_size"),
        sets(&["data.eval_batch_size=0"], "data.eval_batch_size"),
        sets(&["data.workers=100000"], "data.workers"),
        sets(&["data.mean=[nan]", "data.std=[1]"], "data.mean"),
        sets(&["data.mean=[0]", "data.std=[inf]"], "data.std"),
        sets(&["data.mean=[0]", "data.std=[0]"], "data.std"),
        sets(&["data.mean=[0.1, 0.2]", "data.std=[1, 1]"], "data.mean"),
        sets(&["data.image_size=64"], "data.image_size"),
        sets(
            &["data.dataset=imagefolder", "data.image_size=100000"],
            "data.image_size",
        ),
        sets(&["data.dataset=imagenet"], "data.dataset"),
        sets(&["data.augment.crop_size=20"], "data.augment.crop_size"),
        sets(&["data.augment.crop_padding=100000"], "data.augment.crop_padding"),
        sets(&["data.augment.cutout=100000"], "data.augment.cutout"),
        sets(&["model.kind=cnn", "model.pool_grid=100000"], "model.pool_grid"),
        sets(&["model.kind=cnn", "model.pool_after=[9]"], "model.pool_after"),
        sets(
            &["model.kind=cnn", "model.channels=[100000000]"],
            "model.channels",
        ),
        sets(
            &[
                "model.kind=cnn",
                "model.channels=[4, 4, 4, 4, 4, 4]",
                "model.pool_after=[1, 2, 3, 4, 5, 6]",
            ],
            "model.pool_after",
        ),
        sets(&["model.kind=resnet", "model.stages=[]"], "model.stages"),
        sets(
            &[
                "model.kind=resnet",
                "model.stages=[1000000000]",
                "model.channels=[4]",
            ],
            "model.stages",
        ),
        sets(
            &["model.kind=resnet", "model.stages=[2]", "model.channels=[4, 8]"],
            "model.channels",
        ),
        sets(&["model.kind=vit", "model.patch_size=5"], "model.patch_size"),
        sets(&["model.kind=vit", "model.mlp_ratio=inf"], "model.mlp_ratio"),
        sets(
            &["model.kind=vit", "model.width=100000000", "model.heads=1"],
            "model.width",
        ),
        sets(&["model.kind=vit", "model.depth=1000000000"], "model.depth"),
        sets(&["model.kind=vit", "model.heads=7"], "model.heads"),
        sets(&["model.kind=vit", "model.token_pool=cls"], "model.token_pool"),
        // Within every bound, but 14.6 TiB in all: the memory estimate refuses it.
        sets(&["model.hidden=[1000000, 1000000]"], "model.hidden"),
        train_case(&["--threads", "100000"], "train.threads"),
        train_case(&["--epochs", "99999999999"], "train.epochs"),
        train_case(&["--device", "cuda:7"], "cuda:7"),
        train_case(&["--device", "gpu"], "train.device"),
        train_case(&["--stages", "2"], "train.stages"),
        train_case(&["--pipeline", "threads", "--stages", "100"], "train.stages"),
        train_case(&["--pipeline", "threads", "--method", "bp"], "train.pipeline"),
        train_case(
            &["--pipeline", "threads", "--stage-devices", "gpu7"],
            "train.stage_devices",
        ),
        train_case(&["--replicas", "0"], "train.replicas"),
        train_case(&["--set", "train.nosuch=1"], "nosuch"),
        train_case(&["--set", "=3"], "--set"),
        train_case(&["--set", "data.batch_size"], "data.batch_size"),
    ];
    check_all(cases, dir.path());
}

/// Makes a FIFO at `path` (nothing ever writes to it: reading it blocks forever).
fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `name` is a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(name.as_ptr(), 0o644) },
        0,
        "mkfifo {}",
        path.display()
    );
}

#[test]
fn bad_files_paths_and_flags_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let file = |name: &str, bytes: &[u8]| -> String {
        let path = d.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        path.display().to_string()
    };
    let garbage = file("garbage.toml", b"garbage = = =\n[[[");
    let bad_type = file("badtype.toml", b"[data]\nbatch_size = \"x\"\n");
    let unknown = file("unknown.toml", b"[nosuch]\na = 1\n");
    let binary = file("binary.toml", b"\xff\xfe\x00\x01binary");
    let fifo = d.join("fifo");
    mkfifo(&fifo);
    let fifo = fifo.display().to_string();
    // A run directory whose config.toml is garbage, and one with no checkpoint.
    file("garbage-run/config.toml", b"[[[ not toml");
    let no_checkpoint = sll::config::Config::load(None, &[format!("data.dir={:?}", common::REPO_DATA)])
        .unwrap()
        .to_toml();
    file("no-checkpoint/config.toml", no_checkpoint.as_bytes());
    std::fs::create_dir_all(d.join("empty")).unwrap();
    // CIFAR-10 whose extracted member files are FIFOs.
    let cifar = d.join("cifar-data/cifar-10/cifar-10-batches-bin");
    std::fs::create_dir_all(&cifar).unwrap();
    for member in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin"] {
        mkfifo(&cifar.join(member));
    }
    for member in ["data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        mkfifo(&cifar.join(member));
    }
    let cifar_dir = d.join("cifar-data").display().to_string();
    let out_file = file("an-existing-file", b"x");
    let p = |s: &str| d.join(s).display().to_string();
    let (garbage_run, no_checkpoint, empty) = (p("garbage-run"), p("no-checkpoint"), p("empty"));
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_mirror = format!("http://127.0.0.1:{}/", closed.local_addr().unwrap().port());
    drop(closed);
    let cases = vec![
        case(
            &["train", "--config", &garbage, "--out", "r"],
            Some("garbage.toml"),
        ),
        case(
            &["train", "--config", &bad_type, "--out", "r"],
            Some("data.batch_size"),
        ),
        case(&["train", "--config", &unknown, "--out", "r"], Some("nosuch")),
        case(&["train", "--config", &binary, "--out", "r"], Some("binary.toml")),
        case(
            &["train", "--config", &fifo, "--out", "r"],
            Some("not a regular file"),
        ),
        case(
            &["train", "--config", &empty, "--out", "r"],
            Some("not a regular file"),
        ),
        case(
            &["train", "--config", "/nonexistent.toml", "--out", "r"],
            Some("no such file"),
        ),
        case(
            &["train", "--config", "nosuch-preset", "--out", "r"],
            Some("preset"),
        ),
        train_case(&["--data-dir", "/nonexistent"], "sll fetch"),
        train_case(&["--data-dir", &fifo], "file not found"),
        train_case(
            &["--data-dir", &cifar_dir, "--set", "data.dataset=cifar10"],
            "not a regular file",
        ),
        train_case(
            &["--data-dir", &fifo, "--set", "data.dataset=imagefolder"],
            "train",
        ),
        train_case(
            &["--data-dir", &empty, "--set", "data.dataset=imagefolder"],
            "train",
        ),
        train_case(&["--data-dir", ""], "data.dir"),
        case(&tiny(&["--out", &out_file]), Some("not a folder")),
        case(&tiny(&["--out", "/proc/nope/run"]), Some("/proc/nope")),
        case(&["train", "--threads", "abc"], Some("--threads")),
        case(&["train", "--epochs", "-1"], Some("-1")),
        case(&["train", "--thread", "3"], Some("--thread")),
        case(&["train", "--method", "magic"], Some("magic")),
        case(&["nosuch-command"], Some("nosuch-command")),
        case(&["eval", "--run", "/nonexistent"], Some("config.toml")),
        case(&["eval", "--run", &empty], Some("config.toml")),
        case(&["eval", "--run", &garbage_run], Some("config.toml")),
        case(&["eval", "--run", &no_checkpoint], Some("model.safetensors")),
        case(&["report", "/nonexistent"], Some("/nonexistent")),
        case(&["report", &empty], Some("summary.json")),
        case(&["fetch", "imagenet"], Some("imagenet")),
        case(
            &["fetch", "mnist", "--data-dir", "/proc/nope"],
            Some("/proc/nope"),
        ),
        case(
            &[
                "fetch",
                "mnist",
                "--data-dir",
                &p("dl"),
                "--mirror",
                &closed_mirror,
            ],
            Some("cannot download"),
        ),
        case(
            &["fetch", "mnist", "--data-dir", &p("dl"), "--mirror", "notaurl"],
            Some("cannot download"),
        ),
    ];
    check_all(cases, d);
}

#[test]
fn absurd_benchmark_options_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cases = vec![
        case(&["bench", "step", "--steps", "0"], Some("--steps")),
        case(&["bench", "step", "--steps", "1000000000000"], Some("--steps")),
        case(&["bench", "step", "--rounds", "1000000000"], Some("--rounds")),
        case(
            &["bench", "step", "--steps", "100000", "--rounds", "1000"],
            Some("timed steps"),
        ),
        case(&["bench", "step", "--warmup", "1000000000000"], Some("--warmup")),
        case(&["bench", "step", "--threads", "100000"], Some("--threads")),
        case(&["bench", "step", "--batch-size", "0"], Some("--batch-size")),
        case(&["bench", "step", "--model", "nosuch"], Some("nosuch")),
        case(
            &["bench", "step", "--set", "objective.d0=1000000000"],
            Some("objective.d0"),
        ),
        case(&["bench", "flops", "--steps", "1000000000000"], Some("--steps")),
        case(&["bench", "pipeline", "--rounds", "1000000000"], Some("--rounds")),
        case(
            &[
                "bench", "pipeline", "--stages", "100", "--steps", "2", "--rounds", "1", "--warmup", "1",
            ],
            Some("train.stages"),
        ),
        case(&["bench", "epochs", "--epochs", "1"], Some("--epochs")),
        case(&["bench", "epochs", "--rounds", "1000000000"], Some("--rounds")),
        case(&["bench", "epochs", "--threads", "100000"], Some("threads")),
        case(&["bench", "epochs", "--config", "nosuch"], Some("nosuch")),
        case(&["bench", "memory", "--depths", "0"], Some("depth")),
        case(
            &["bench", "memory", "--depths", "100000000", "--methods", "sll"],
            Some("depth"),
        ),
        case(
            &["bench", "memory", "--threads", "100000", "--depths", "2"],
            Some("--threads"),
        ),
        case(
            &["bench", "memory", "--batch-size", "0", "--depths", "2"],
            Some("--batch-size"),
        ),
    ];
    check_all(cases, dir.path());
}

/// A mirror that accepts the connection and never answers: `sll fetch` gives up after
/// its stall timeout (30 s) with one line, instead of waiting forever.
#[test]
fn a_mirror_that_never_answers_is_an_error_not_a_hang() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mirror = format!("http://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    std::thread::spawn(move || {
        // Keep every connection open, silent.
        let mut held = vec![];
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let data: PathBuf = dir.path().join("data");
    let args: Vec<String> = [
        "fetch",
        "mnist",
        "--data-dir",
        data.to_str().unwrap(),
        "--mirror",
        &mirror,
    ]
    .map(String::from)
    .to_vec();
    let o = run(&args, dir.path());
    assert_clean_error(&args.join(" "), &o, Some("cannot download"));
    assert!(o.stderr.contains("timed out"), "{}", o.stderr);
}
