//! Running our own CPU kernels (the fused SLL objective, the fused optimizer) on
//! libtorch's intra-op threads.
//!
//! libtorch parallelises its CPU operations with OpenMP (libgomp, shipped with it).
//! After each parallel region its worker threads spin for a while waiting for the next
//! one. Work we split over freshly spawned threads competes with those spinning
//! workers for the same cores; work handed to the OpenMP team itself runs on the
//! worker that is already waiting. [`run_shares`] therefore opens an OpenMP parallel
//! region through libgomp's entry point `GOMP_parallel` (the call a C compiler emits
//! for `#pragma omp parallel`), found at run time in the libgomp that libtorch loaded,
//! and falls back to scoped threads where there is none (a libtorch built without
//! OpenMP).

use std::ffi::{c_int, c_uint, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock};

/// `void GOMP_parallel(void (*fn)(void *), void *data, unsigned num_threads, unsigned flags)`.
type GompParallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);
/// `int omp_get_thread_num(void)` and `int omp_get_num_threads(void)`.
type OmpQuery = unsafe extern "C" fn() -> c_int;

/// libgomp's entry points, when libtorch loaded it.
struct OpenMp {
    parallel: GompParallel,
    thread_num: OmpQuery,
    num_threads: OmpQuery,
}

fn openmp() -> Option<&'static OpenMp> {
    static OPENMP: OnceLock<Option<OpenMp>> = OnceLock::new();
    OPENMP
        .get_or_init(|| {
            if std::env::var_os("SLL_NO_OPENMP_TEAM").is_some() {
                return None;
            }
            // libtorch's own libgomp is loaded with the process (libtorch_cpu needs it);
            // asking libtorch for its thread count first makes sure of it.
            let _ = tch::get_num_threads();
            let symbol = |name: &[u8]| {
                // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only reads.
                let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr().cast()) };
                (!p.is_null()).then_some(p)
            };
            let (parallel, thread_num, num_threads) = (
                symbol(b"GOMP_parallel\0")?,
                symbol(b"omp_get_thread_num\0")?,
                symbol(b"omp_get_num_threads\0")?,
            );
            // SAFETY: these are libgomp's exported functions with the C signatures above.
            unsafe {
                Some(OpenMp {
                    parallel: std::mem::transmute::<*mut c_void, GompParallel>(parallel),
                    thread_num: std::mem::transmute::<*mut c_void, OmpQuery>(thread_num),
                    num_threads: std::mem::transmute::<*mut c_void, OmpQuery>(num_threads),
                })
            }
        })
        .as_ref()
}

/// What each thread of the OpenMP team reads: the shares, the work and a panic slot.
struct Region<'a> {
    openmp: &'a OpenMp,
    shares: usize,
    run: &'a (dyn Fn(usize) + Sync),
    panicked: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

/// The body of the parallel region: team member t runs shares t, t + team size, ….
extern "C" fn region_body(data: *mut c_void) {
    // SAFETY: `data` is the `Region` that `run_shares` keeps alive during the region.
    let region = unsafe { &*(data as *const Region) };
    // SAFETY: libgomp's queries, called inside its parallel region.
    let (t, team) = unsafe { ((region.openmp.thread_num)(), (region.openmp.num_threads)()) };
    let (t, team) = (t.max(0) as usize, team.max(1) as usize);
    for share in (t..region.shares).step_by(team) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (region.run)(share))) {
            *region.panicked.lock().unwrap_or_else(|e| e.into_inner()) = Some(payload);
        }
    }
}

/// Runs `work` on every share, in parallel: on libtorch's OpenMP team (one share per
/// team member), or on this thread and scoped threads when there is no OpenMP. A
/// panic in `work` is raised again here.
pub fn run_shares<T: Send>(shares: impl IntoIterator<Item = T>, work: impl Fn(T) + Sync) {
    let slots: Vec<Mutex<Option<T>>> = shares.into_iter().map(|s| Mutex::new(Some(s))).collect();
    let take = |i: usize| slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
    let run = |i: usize| {
        if let Some(share) = take(i) {
            work(share)
        }
    };
    match (openmp(), slots.len()) {
        (_, 0) => {}
        (_, 1) => run(0),
        (Some(openmp), n) => {
            let region = Region {
                openmp,
                shares: n,
                run: &run,
                panicked: Mutex::new(None),
            };
            // SAFETY: `region` outlives the call, which returns after every team member
            // has finished `region_body`.
            unsafe {
                (openmp.parallel)(
                    region_body,
                    &region as *const Region as *mut c_void,
                    n as c_uint,
                    0,
                )
            };
            if let Some(payload) = region.panicked.into_inner().unwrap_or_else(|e| e.into_inner()) {
                std::panic::resume_unwind(payload);
            }
            // A team smaller than asked for still ran every share (round robin).
        }
        (None, n) => std::thread::scope(|scope| {
            for i in 1..n {
                let run = &run;
                scope.spawn(move || run(i));
            }
            run(0);
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_share_runs_exactly_once() {
        for n in [0, 1, 2, 3, 8, 17] {
            let seen: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            run_shares(0..n, |i| {
                seen[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1), "{n} shares");
        }
    }

    #[test]
    fn libtorchs_openmp_team_is_found() {
        assert!(
            openmp().is_some(),
            "GOMP_parallel not found in the loaded libgomp"
        );
    }

    #[test]
    fn a_panicking_share_panics_the_caller() {
        let result = catch_unwind(|| run_shares(0..4, |i| assert_ne!(i, 2, "share 2 fails")));
        assert!(result.is_err());
    }
}
