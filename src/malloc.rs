//! glibc's allocator set up for training: freed memory kept for the next step instead
//! of returned to the kernel.
//!
//! A training step allocates and frees the same large buffers every time (activations,
//! gradients, convolution workspaces: 33.5 MB for the first activation of the
//! cifar10-vgg preset at batch 128). With glibc's defaults, buffers above its mmap
//! threshold (128 KiB, raised on the fly up to 32 MiB) get pages of their own from the
//! kernel and give them back on `free`, and freed memory at the top of the heap is
//! returned past 128 KiB: every step then faults its buffers' pages in again, and the
//! kernel zeroes each one. On the cifar10-vgg preset that was 2.1 million page faults and
//! over a third of the CPU time of an epoch (`perf stat`, docs/performance.md).
//! `train.keep_freed_memory` (default on) makes glibc serve every allocation from its
//! heaps (no separate mappings: `M_MMAP_MAX` 0) and keep up to 1 GiB of free memory at
//! their tops, so the buffers are reused. The trainers apply it once the data is loaded
//! (the loaders' large temporary buffers are still returned); memory freed after that
//! stays with the process until it exits.
//!
//! Environment settings of the allocator (`GLIBC_TUNABLES`, `MALLOC_MMAP_THRESHOLD_`,
//! `MALLOC_TRIM_THRESHOLD_`) win: with any of them set, nothing changes here.

/// Free bytes at the top of the heap past which glibc returns them to the kernel.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Applies the thresholds (once per process; later calls do nothing). Returns whether
/// they are in force: false off glibc, or when the environment configures the
/// allocator itself.
pub fn keep_freed_memory() -> bool {
    static APPLIED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *APPLIED.get_or_init(|| {
        let configured = [
            "GLIBC_TUNABLES",
            "MALLOC_MMAP_THRESHOLD_",
            "MALLOC_TRIM_THRESHOLD_",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
        !configured && set_thresholds()
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    // SAFETY: mallopt only changes allocator parameters (under the arenas' locks).
    unsafe {
        let mmap = libc::mallopt(libc::M_MMAP_MAX, 0) == 1;
        let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1;
        mmap && trim
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}
