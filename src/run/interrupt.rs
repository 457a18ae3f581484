//! Ctrl-C and SIGTERM during training: the first asks the run to stop after the
//! current step (it then writes its checkpoint and a summary marked interrupted, and
//! prints how to resume); a second exits at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static ARMED: AtomicBool = AtomicBool::new(false);
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

/// Exit status after a second interrupt (128 + SIGINT, as a shell reports it).
pub const EXIT_AT_ONCE: i32 = 130;

/// Installs the handler of SIGINT, SIGTERM and SIGHUP (once per process; later calls
/// do nothing). Without it, [`requested`] stays false unless [`request`] is called.
pub fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let handler = || {
            if !ARMED.load(Ordering::SeqCst) {
                // Before training starts (or after it ended) there is nothing to save.
                eprintln!("\ninterrupt: exiting");
                // SAFETY: _exit ends the process without running any more of its code.
                unsafe { libc::_exit(EXIT_AT_ONCE) };
            }
            if SIGNALS.fetch_add(1, Ordering::SeqCst) == 0 {
                REQUESTED.store(true, Ordering::SeqCst);
                eprintln!("\ninterrupt: finishing the current step, then writing the checkpoint (interrupt again to exit at once)");
            } else {
                eprintln!("\ninterrupt: exiting at once; the last checkpoint written is kept");
                // SAFETY: _exit ends the process without running any more of its code.
                unsafe { libc::_exit(EXIT_AT_ONCE) };
            }
        };
        if let Err(e) = ctrlc::set_handler(handler) {
            eprintln!("warning: cannot handle Ctrl-C ({e}); an interrupt will end the run without a checkpoint");
        }
    });
}

/// Marks the span in which a signal asks for a graceful stop (from the first training
/// step to the last checkpoint); outside it, a signal exits at once. Dropping the
/// guard ends the span.
pub fn arm() -> Armed {
    ARMED.store(true, Ordering::SeqCst);
    Armed
}

/// See [`arm`].
pub struct Armed;

impl Drop for Armed {
    fn drop(&mut self) {
        ARMED.store(false, Ordering::SeqCst);
    }
}

/// Environment variable of the crash tests: `E:S` kills the process (SIGKILL) when step
/// S (1-based) of epoch E is about to start.
pub const CRASH_AT_STEP_ENV: &str = "SLL_CRASH_AT_STEP";

/// Dies here if [`CRASH_AT_STEP_ENV`] names step `step` (1-based) of epoch `epoch`.
pub fn crash_point(epoch: usize, step: usize) {
    static TARGET: std::sync::OnceLock<Option<(usize, usize)>> = std::sync::OnceLock::new();
    let target = TARGET.get_or_init(|| {
        let value = std::env::var(CRASH_AT_STEP_ENV).ok()?;
        let (e, s) = value.split_once(':')?;
        Some((e.parse().ok()?, s.parse().ok()?))
    });
    if *target == Some((epoch, step)) {
        // SAFETY: raising a signal has no memory-safety preconditions.
        unsafe { libc::raise(libc::SIGKILL) };
    }
}

/// Asks the running training to stop after its current step (what the first signal does).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}
