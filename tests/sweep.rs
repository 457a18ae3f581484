//! `sll sweep`: a grid of real runs of the real binary on the MNIST shipped in `data/`
//! (tiny runs: 1,000 training and 300 test images, two blocks of 64 units, 1 thread),
//! trained two at a time, then skipped, resumed, interrupted and tabulated.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const SLL: &str = env!("CARGO_BIN_EXE_sll");
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data");

/// `sll sweep --out DIR` with the tiny runs' sets, plus `extra`.
fn sweep_command(dir: &Path, epochs: usize, extra: &[&str]) -> Command {
    let mut command = Command::new(SLL);
    command.args(["sweep", "--out", &dir.display().to_string(), "--data-dir", DATA]);
    for set in [
        "data.train_subset=1000",
        "data.test_subset=300",
        "model.hidden=[64,64]",
        &format!("train.epochs={epochs}"),
    ] {
        command.args(["--set", set]);
    }
    command.args(["--threads", "1"]).args(extra);
    command
}

/// The 2×2 grid: method × seed.
const GRID: [&str; 4] = ["--grid", "train.method=sll,local", "--grid", "train.seed=0,1"];

const NAMES: [&str; 4] = [
    "method-sll_seed-0",
    "method-sll_seed-1",
    "method-local_seed-0",
    "method-local_seed-1",
];

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(mut command: Command) -> Output {
    command.output().unwrap()
}

/// Every file of every run directory: its modification time and length.
fn files(dir: &Path) -> BTreeMap<PathBuf, (SystemTime, u64)> {
    let mut files = BTreeMap::new();
    for run in std::fs::read_dir(dir.join("runs")).unwrap() {
        for file in std::fs::read_dir(run.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            files.insert(path, (meta.modified().unwrap(), meta.len()));
        }
    }
    files
}

/// The data rows of results.md's table of runs (not the matrix after it).
fn table_rows(dir: &Path) -> Vec<String> {
    let md = std::fs::read_to_string(dir.join("results.md")).unwrap();
    md.lines()
        .skip_while(|l| !l.starts_with("| run "))
        .take_while(|l| l.starts_with('|'))
        .filter(|l| l.starts_with("| ") && !l.starts_with("| run "))
        .map(String::from)
        .collect()
}

#[test]
fn a_grid_trains_once_then_skips_resumes_and_rebuilds_its_results() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sweep");

    // A dry run plans four new runs and writes nothing.
    let out = run({
        let mut c = sweep_command(&dir, 2, &GRID);
        c.arg("--dry-run");
        c
    });
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches(": new: sll train").count(),
        4,
        "{}",
        text(&out)
    );
    assert!(!dir.exists(), "a dry run wrote {}", dir.display());

    // Four runs, two at a time.
    let out = run(sweep_command(&dir, 2, &[&GRID[..], &["--jobs", "2"]].concat()));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    for name in NAMES {
        assert!(log.contains(&format!("{name}: started")), "{log}");
        assert!(log.contains(&format!("{name}: finished: 2/2 epochs")), "{log}");
        let summary = std::fs::read_to_string(dir.join("runs").join(name).join("summary.json")).unwrap();
        assert!(summary.contains("\"status\": \"finished\""), "{summary}");
        assert!(dir.join("logs").join(format!("{name}.log")).is_file());
    }
    assert!(log.contains("4 trained"), "{log}");
    let sweep_toml = std::fs::read_to_string(dir.join("sweep.toml")).unwrap();
    assert!(
        sweep_toml.contains(r#""train.method" = ["sll", "local"]"#),
        "{sweep_toml}"
    );
    // The results: four rows in grid order, each with its accuracies.
    let rows = table_rows(&dir);
    assert_eq!(rows.len(), 4, "{rows:?}");
    for (row, name) in rows.iter().zip(NAMES) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells[0], name, "{row}");
        assert_eq!(cells[3], "finished", "{row}");
        assert_eq!(cells[4], "2", "{row}");
        for c in &cells[5..7] {
            let accuracy: f64 = c.parse().unwrap_or_else(|_| panic!("{row}"));
            assert!((0.0..=100.0).contains(&accuracy) && accuracy > 0.0, "{row}");
        }
    }
    let csv = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.contains(",finished,2,")), "{csv}");
    assert!(dir.join("results.png").is_file());

    // Again: every run is skipped and nothing in a run directory changes.
    let before = files(&dir);
    assert_eq!(before.len(), 20, "{before:?}");
    let out = run(sweep_command(&dir, 2, &["--jobs", "2"]));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("skipped, finished already").count(), 4, "{log}");
    assert!(!log.contains(": started") && !log.contains("resuming"), "{log}");
    assert_eq!(files(&dir), before, "a skipped run was touched");

    // Another grid is refused; the same one is accepted.
    let out = run(sweep_command(&dir, 2, &["--grid", "train.method=sll,bp"]));
    assert!(!out.status.success());
    assert!(text(&out).contains("another grid"), "{}", text(&out));
    let out = run(sweep_command(&dir, 3, &[]));
    assert!(!out.status.success());
    assert!(text(&out).contains("--set"), "{}", text(&out));

    // A run without its summary (as if killed at the very end) is the only one resumed.
    let lost = dir.join("runs").join(NAMES[2]);
    std::fs::remove_file(lost.join("summary.json")).unwrap();
    let others: BTreeMap<_, _> = before
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&lost))
        .collect();
    let out = run(sweep_command(&dir, 2, &[&GRID[..], &["--jobs", "2"]].concat()));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains(&format!("{}: resuming", NAMES[2])), "{log}");
    assert!(
        log.contains(&format!("{}: finished: 2/2 epochs", NAMES[2])),
        "{log}"
    );
    assert_eq!(log.matches("skipped, finished already").count(), 3, "{log}");
    assert_eq!(log.matches("resuming").count(), 1, "{log}");
    let after: BTreeMap<_, _> = files(&dir)
        .into_iter()
        .filter(|(p, _)| !p.starts_with(&lost))
        .collect();
    assert_eq!(after, others, "a finished run was touched");
    assert!(lost.join("summary.json").is_file());

    // --report-only rebuilds the same tables, training nothing.
    let md = std::fs::read(dir.join("results.md")).unwrap();
    let csv = std::fs::read(dir.join("results.csv")).unwrap();
    std::fs::remove_file(dir.join("results.md")).unwrap();
    std::fs::remove_file(dir.join("results.csv")).unwrap();
    let before = files(&dir);
    let out = Command::new(SLL)
        .args(["sweep", "--out", &dir.display().to_string(), "--report-only"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(dir.join("results.md")).unwrap(), md);
    assert_eq!(std::fs::read(dir.join("results.csv")).unwrap(), csv);
    assert_eq!(files(&dir), before);
}

#[test]
fn an_interrupted_sweep_stops_its_runs_with_checkpoints_and_continues() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("sweep");
    let grid = ["--grid", "train.seed=0,1,2", "--jobs", "2"];
    let mut command = sweep_command(&dir, 40, &grid);
    // Its own process group, as a terminal's foreground job: Ctrl-C reaches it all.
    command
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().unwrap();
    let pid = child.id() as i32;
    // Interrupt once both running runs have finished an epoch.
    let deadline = Instant::now() + Duration::from_secs(60);
    let trained = |name: &str| {
        std::fs::read_to_string(dir.join("runs").join(name).join("metrics.jsonl"))
            .is_ok_and(|m| m.lines().count() >= 1)
    };
    while !(trained("seed-0") && trained("seed-1")) {
        assert!(Instant::now() < deadline, "the runs did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(-pid, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("sweep interrupted"), "{log}");
    assert!(
        log.contains(&format!("`sll sweep --out {}`", dir.display())),
        "{log}"
    );
    assert!(
        !dir.join("runs/seed-2").exists(),
        "a run started after the interrupt: {log}"
    );
    for name in ["seed-0", "seed-1"] {
        let summary = std::fs::read_to_string(dir.join("runs").join(name).join("summary.json")).unwrap();
        assert!(
            summary.contains("\"status\": \"interrupted\"") || summary.contains("\"status\": \"finished\""),
            "{summary}"
        );
    }
    let rows = table_rows(&dir);
    assert!(rows[2].contains("not started"), "{rows:?}");

    // Continued: everything finishes.
    let out = run(sweep_command(&dir, 40, &grid));
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("3 trained"), "{log}");
    assert!(
        table_rows(&dir).iter().all(|r| r.contains("| finished | 40 |")),
        "{log}"
    );
}

/// A grid file with `exclude` and a `variant` axis, trained in two invocations with
/// `--only`: the excluded point never exists, the variants set their keys together, the
/// first invocation trains only what `--only` selects and leaves the rest for later,
/// the second trains the rest and skips what is finished.
#[test]
fn exclude_variants_and_only_select_what_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sweep");
    let grid = dir.path().join("grid.toml");
    std::fs::write(
        &grid,
        r#"
config = "mnist-mlp"
exclude = [{ "train.method" = "local", variant = { "objective.beta" = 0.5, "objective.d0" = 64 } }]

[grid]
"train.method" = ["sll", "local"]
variant = [{}, { "objective.beta" = 0.5, "objective.d0" = 64 }]
"#,
    )
    .unwrap();
    let grid_arg = ["--grid-file", grid.to_str().unwrap()];
    let first = run(sweep_command(
        &out,
        1,
        &[&grid_arg[..], &["--only", "train.method=local"]].concat(),
    ));
    let log = text(&first);
    assert!(first.status.success(), "{log}");
    assert!(log.contains("3 runs"), "{log}");
    assert!(
        log.contains("1 trained") && log.contains("2 left for later"),
        "{log}"
    );
    let runs = |names: &[&str]| {
        names
            .iter()
            .all(|n| out.join("runs").join(n).join("summary.json").is_file())
    };
    assert!(runs(&["method-local_variant-base"]), "{log}");
    assert!(
        !out.join("runs/method-local_variant-beta-0.5_d0-64").exists(),
        "excluded point ran"
    );
    // The variant's keys reach the run's config together.
    let second = run(sweep_command(&out, 1, &[]));
    let log = text(&second);
    assert!(second.status.success(), "{log}");
    assert!(log.contains("2 trained") && log.contains("1 skipped"), "{log}");
    let config =
        std::fs::read_to_string(out.join("runs/method-sll_variant-beta-0.5_d0-64/config.toml")).unwrap();
    assert!(
        config.contains("beta = 0.5") && config.contains("d0 = 64"),
        "{config}"
    );
    // Two grid keys: results.md adds the matrix, the excluded cell blank.
    let results = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        results.contains("`train.method` across, `variant` down"),
        "{results}"
    );
    let last = results.lines().last().unwrap();
    assert!(
        last.contains("min) |  |"),
        "the excluded point has a blank cell: {last}"
    );
    // --only must name a grid key and one of its values.
    for (only, expected) in [
        ("train.seed=0", "not a grid key"),
        ("train.method=bp", "not one of"),
    ] {
        let bad = run(sweep_command(&out, 1, &["--only", only]));
        assert!(
            !bad.status.success() && text(&bad).contains(expected),
            "{}",
            text(&bad)
        );
    }
}
