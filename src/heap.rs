//! Live heap bytes of the process, and the peak of them over a measured region.
//!
//! libtorch's CPU allocator takes tensor storage from `posix_memalign` and gives it
//! back with `free`, so glibc's own accounting (`mallinfo2`: bytes in use in every
//! arena plus bytes in mmapped chunks) is the count of live tensor bytes plus the
//! process's other, small and steady, heap use. A [`PeakTracker`] records the largest
//! such count seen in a region, from explicit [`probe`] calls placed where a training
//! step's live memory peaks (after a block's loss is built, before its backward) and
//! from a background thread that samples every few tens of microseconds (it catches
//! the transient peaks inside backward passes). The peak minus the count at the start
//! of the region is what the region added: activations and workspace.
//! [`peak_rss_bytes`] is the kernel's count of the process's resident peak.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Peak resident memory of this process so far, in bytes.
pub fn peak_rss_bytes() -> u64 {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as u64 * 1024
}

/// Whether a [`PeakTracker`] is running (then [`probe`] samples).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The largest live count sampled since the running tracker started.
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Bytes currently allocated through malloc and friends (arenas + mmapped chunks).
pub fn live_bytes() -> usize {
    // SAFETY: mallinfo2 only reads allocator statistics (under the arenas' locks).
    let info = unsafe { libc::mallinfo2() };
    info.uordblks + info.hblkhd
}

/// Samples the live count into the running tracker's peak; nearly free (one atomic
/// load) when no tracker runs, so training code may call it unconditionally.
pub fn probe() {
    if ACTIVE.load(Ordering::Relaxed) {
        PEAK.fetch_max(live_bytes(), Ordering::Relaxed);
    }
}

/// What a measured region allocated at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peak {
    /// Live bytes when the region started.
    pub baseline: usize,
    /// Largest live count seen during the region.
    pub peak: usize,
}

impl Peak {
    /// Bytes the region added at its peak: peak − baseline.
    pub fn added(&self) -> usize {
        self.peak.saturating_sub(self.baseline)
    }
}

/// Tracks the peak of [`live_bytes`] from [`PeakTracker::start`] to
/// [`PeakTracker::finish`]. One at a time per process (the peak is global).
#[derive(Debug)]
pub struct PeakTracker {
    baseline: usize,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

impl PeakTracker {
    /// Starts tracking; with `poll`, a background thread also samples at that interval.
    pub fn start(poll: Option<Duration>) -> Self {
        let baseline = live_bytes();
        PEAK.store(baseline, Ordering::SeqCst);
        ACTIVE.store(true, Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let poller = poll.map(|interval| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    probe();
                    std::thread::sleep(interval);
                }
            })
        });
        Self {
            baseline,
            stop,
            poller,
        }
    }

    /// Stops tracking and returns the baseline and the peak (sampled once more now).
    pub fn finish(mut self) -> Peak {
        probe();
        self.stop_poller();
        ACTIVE.store(false, Ordering::SeqCst);
        Peak {
            baseline: self.baseline,
            peak: PEAK.load(Ordering::SeqCst),
        }
    }

    fn stop_poller(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(poller) = self.poller.take() {
            // A poller that panicked only lost samples; the explicit probes remain.
            let _ = poller.join();
        }
    }
}

impl Drop for PeakTracker {
    fn drop(&mut self) {
        self.stop_poller();
        ACTIVE.store(false, Ordering::SeqCst);
    }
}
