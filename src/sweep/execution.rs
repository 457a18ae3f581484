//! Running the plan: each run a child process of this binary (`sll train`, or `sll
//! train --resume`) writing to its log, `--jobs` at a time, under the folder's lock and
//! the sweep's interrupt handling; then what became of each run.

use super::definition::Sweep;
use super::grid::describe_grid;
use super::plan::{accuracies, complete, train_args, Point, State};
use crate::run::summary::RunStatus;
use anyhow::{bail, Context, Result};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::SystemTime;

/// Interrupts (SIGINT, SIGTERM, SIGHUP) the sweep received.
static INTERRUPTS: AtomicUsize = AtomicUsize::new(0);

fn interrupts() -> usize {
    INTERRUPTS.load(Ordering::SeqCst)
}

/// Handles interrupts: the first stops the sweep from starting runs (the running ones,
/// in its process group, get the terminal's signal themselves and stop at their next
/// step with a checkpoint); each further one is passed on to the running children, so
/// that a signal sent to the sweep alone reaches them too (a child that gets a second
/// one exits at once, keeping its last checkpoint).
fn install_interrupt(running: Arc<Mutex<Vec<u32>>>) {
    let handler = move || {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) == 0 {
            eprintln!("\nsweep: interrupt: starting no more runs; the running ones write their checkpoints and stop (interrupt again to pass it on to them)");
        } else {
            eprintln!("\nsweep: interrupt: passing it on to the running runs");
            for &pid in running.lock().unwrap_or_else(|p| p.into_inner()).iter() {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
            }
        }
    };
    if let Err(e) = ctrlc::set_handler(handler) {
        eprintln!("warning: cannot handle Ctrl-C ({e}); an interrupt will end the sweep at once (the runs keep their checkpoints)");
    }
}

/// Takes `dir/sweep.lock` for this sweep and the runs it starts (they inherit it), so
/// that a second sweep of the same folder is refused while any of them lives.
pub(super) fn lock(dir: &Path) -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join("sweep.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let fd = file.as_raw_fd();
    // SAFETY: flock and fcntl act on a descriptor this function owns.
    if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "{} is in use by another `sll sweep` (or by runs it started that still train); wait for it to end",
            dir.display()
        );
    }
    // Inherited by the children: the lock lasts while any of them lives.
    unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
    Ok(file)
}

/// How a run ended in this invocation.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Finished before this invocation.
    Skipped,
    /// Diverged before this invocation (not retried).
    DivergedBefore,
    /// Trained to its end now.
    Trained,
    /// Diverged now.
    Diverged,
    /// Stopped by an interrupt (its checkpoint kept).
    Interrupted,
    /// Not started because of an interrupt.
    NotStarted,
    /// Failed, with why.
    Failed(String),
    /// Outside this invocation's `--only`.
    Held,
}

/// The last line of `log` if it is an error line.
pub(super) fn last_error(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    line.starts_with("error:").then(|| line.to_string())
}

/// Starts the training of `point` as a child process writing to its log.
fn start(exe: &Path, args: &[String], point: &Point, state: &State) -> Result<Child> {
    if matches!(state, State::New) {
        // Temporaries a write killed before the first file left: `sll train --out`
        // takes only an empty (or no) folder.
        if point.dir.is_dir() {
            crate::io::remove_stale_temporaries(&point.dir)?;
        }
    }
    let folder = point.log.parent().expect("logs/NAME.log");
    std::fs::create_dir_all(folder).with_context(|| format!("cannot create {}", folder.display()))?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&point.log)
        .with_context(|| format!("cannot open {}", point.log.display()))?;
    use std::io::Write;
    writeln!(
        log,
        "=== {}: sll {}",
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S"),
        args.join(" ")
    )
    .with_context(|| format!("cannot write {}", point.log.display()))?;
    let err = log.try_clone()?;
    Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

/// When the run's `summary.json` was last written (`None`: it has none).
fn summary_time(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir.join("summary.json"))
        .and_then(|m| m.modified())
        .ok()
}

/// What a child's exit means, from its exit status and the summary it wrote (one
/// written `before` it started is a previous attempt's).
fn outcome(point: &Point, status: std::io::Result<ExitStatus>, before: Option<SystemTime>) -> Outcome {
    let fresh = summary_time(&point.dir).is_some_and(|t| Some(t) != before);
    let summary = if fresh {
        crate::run::summary::read_summary(&point.dir)
    } else {
        None
    };
    let status = match status {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("cannot wait for it: {e}")),
    };
    match summary {
        Some(s) if complete(&s) && status.success() => Outcome::Trained,
        Some(s) if s.status == RunStatus::Diverged => Outcome::Diverged,
        Some(s) if s.status == RunStatus::Interrupted => Outcome::Interrupted,
        _ if interrupts() > 0 => Outcome::Interrupted,
        _ => Outcome::Failed(format!(
            "{status}{}",
            last_error(&point.log).map_or_else(String::new, |e| format!(": {e}"))
        )),
    }
}

/// Trains the runs of `plan` still to train, `jobs` at a time with `threads` threads
/// each, reporting each run's start and end; returns how each run of the plan ended.
pub(super) fn run(
    sweep: &Sweep,
    dir: &Path,
    plan: &[(Point, State)],
    jobs: usize,
    threads: usize,
) -> Result<Vec<Outcome>> {
    let n = plan.len();
    println!(
        "sweep {}: {n} runs ({}), {} at a time, {threads} thread(s) each",
        dir.display(),
        describe_grid(&sweep.grid),
        jobs
    );
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let running: Arc<Mutex<Vec<u32>>> = Arc::default();
    install_interrupt(running.clone());
    let tag = |i: usize| format!("[{}/{n}] {}", i + 1, plan[i].0.name);
    let mut outcomes: Vec<Option<Outcome>> = (0..n).map(|_| None).collect();
    let mut queue = VecDeque::new();
    for (i, (_, state)) in plan.iter().enumerate() {
        match state {
            State::Finished(s) => {
                println!("{}: skipped, finished already ({})", tag(i), accuracies(s));
                outcomes[i] = Some(Outcome::Skipped);
            }
            State::Diverged(s) => {
                println!(
                    "{}: diverged earlier after {} epochs; not retried (a result, not a failure)",
                    tag(i),
                    s.epochs_completed
                );
                outcomes[i] = Some(Outcome::DivergedBefore);
            }
            State::Blocked(why) => {
                println!("{}: failed: {why}", tag(i));
                outcomes[i] = Some(Outcome::Failed(why.clone()));
            }
            State::Held => outcomes[i] = Some(Outcome::Held),
            State::New | State::Resume(_) => queue.push_back(i),
        }
    }
    let (tx, rx) = mpsc::channel();
    let mut pids: HashMap<usize, u32> = HashMap::new();
    loop {
        while pids.len() < jobs && interrupts() == 0 {
            let Some(i) = queue.pop_front() else { break };
            let (point, state) = &plan[i];
            let train = train_args(sweep, point, threads, state);
            let before = interrupts();
            let started = summary_time(&point.dir);
            match start(&exe, &train, point, state) {
                Ok(mut child) => {
                    let pid = child.id();
                    running.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
                    if interrupts() != before {
                        // Started as the interrupt came: it may have missed it.
                        // SAFETY: kill has no memory-safety preconditions.
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
                    }
                    pids.insert(i, pid);
                    let what = match state {
                        State::Resume(why) => format!("resuming ({why})"),
                        _ => "started".to_string(),
                    };
                    println!("{}: {what}; log {}", tag(i), point.log.display());
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let status = child.wait();
                        let _ = tx.send((i, status, started));
                    });
                }
                Err(e) => {
                    let why = crate::one_line_error(&e);
                    println!("{}: failed to start: {why}", tag(i));
                    outcomes[i] = Some(Outcome::Failed(why));
                }
            }
        }
        if pids.is_empty() {
            break;
        }
        let (i, status, started) = rx.recv().expect("a waiting thread per child");
        if let Some(pid) = pids.remove(&i) {
            running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|&p| p != pid);
        }
        let point = &plan[i].0;
        let result = outcome(point, status, started);
        let summary = crate::run::summary::read_summary(&point.dir);
        let line = match (&result, &summary) {
            (Outcome::Trained, Some(s)) => format!("finished: {}", accuracies(s)),
            (Outcome::Diverged, Some(s)) => format!(
                "diverged after {} epochs ({}); a result, not a failure",
                s.epochs_completed,
                s.stopped.as_deref().unwrap_or("divergence guard")
            ),
            (Outcome::Interrupted, _) => "interrupted; its last checkpoint is kept".to_string(),
            (Outcome::Failed(why), _) => format!("failed: {why}; log {}", point.log.display()),
            (other, _) => format!("{other:?}"),
        };
        println!("{}: {line}", tag(i));
        outcomes[i] = Some(result);
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::NotStarted))
        .collect())
}

/// The tally of `outcomes`; an error when runs were interrupted, not started or failed
/// (the sweep in `dir` is then to be continued).
pub(super) fn conclude(outcomes: &[Outcome], dir: &Path) -> Result<()> {
    let n = outcomes.len();
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let trained = count(|o| matches!(o, Outcome::Trained));
    let skipped = count(|o| matches!(o, Outcome::Skipped));
    let diverged = count(|o| matches!(o, Outcome::Diverged | Outcome::DivergedBefore));
    let failed = count(|o| matches!(o, Outcome::Failed(_)));
    let interrupted = count(|o| matches!(o, Outcome::Interrupted));
    let not_started = count(|o| matches!(o, Outcome::NotStarted));
    let held = count(|o| matches!(o, Outcome::Held));
    println!(
        "sweep: {n} runs: {trained} trained, {skipped} skipped (finished already), {diverged} diverged (results, not failures), {failed} failed, {interrupted} interrupted, {not_started} not started{}",
        if held > 0 { format!(", {held} left for later (outside --only)") } else { String::new() }
    );
    let again = format!("sll sweep --out {}", dir.display());
    if interrupts() > 0 || interrupted + not_started > 0 {
        bail!(
            "sweep interrupted: {interrupted} run(s) stopped with their checkpoints, {not_started} not started{}; continue it with `{again}`",
            if failed > 0 { format!(", {failed} failed") } else { String::new() }
        );
    }
    if failed > 0 {
        bail!(
            "{failed} of {n} runs failed (their logs are in {}); `{again}` retries them",
            dir.join("logs").display()
        );
    }
    Ok(())
}
