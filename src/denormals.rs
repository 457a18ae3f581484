//! Flush-to-zero and denormals-are-zero for every thread that computes.
//!
//! Trained weights and activations drift into subnormal floating-point numbers (below
//! ~1.2e-38 for f32), and x86 CPUs compute with those tens of times slower than with
//! normal numbers: the default MLP preset lost about a third of its training speed after
//! its first epoch. With FTZ (results that would be subnormal become 0) and DAZ
//! (subnormal inputs read as 0) the loss of precision is below f32's smallest normal
//! number, and the speed stays. `train.flush_denormals` (default on) sets both.
//!
//! The flags live in each thread's MXCSR register (FPCR.FZ on AArch64). A new thread
//! starts with its creator's, so setting them in the main thread before any worker is
//! started covers every thread we start later (pipeline stages, loader workers) and the
//! OpenMP teams they start; [`apply`] also sets them in the members of this thread's
//! libtorch OpenMP team, which may already exist.

/// The MXCSR bits: FTZ (bit 15) and DAZ (bit 6).
#[cfg(target_arch = "x86_64")]
const MXCSR_FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

/// Sets (`on`) or clears flush-to-zero and denormals-are-zero in the calling thread.
pub fn set_this_thread(on: bool) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut mxcsr: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write the calling thread's SSE control
        // register; only its FTZ and DAZ bits change.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut mxcsr, options(nostack));
            mxcsr = if on {
                mxcsr | MXCSR_FTZ_DAZ
            } else {
                mxcsr & !MXCSR_FTZ_DAZ
            };
            std::arch::asm!("ldmxcsr [{}]", in(reg) &mxcsr, options(nostack));
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        let mut fpcr: u64;
        // SAFETY: reads and writes the calling thread's FPCR; only its FZ bit changes.
        unsafe {
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr);
            fpcr = if on { fpcr | (1 << 24) } else { fpcr & !(1 << 24) };
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr);
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = on;
}

/// Whether flush-to-zero is set in the calling thread.
#[cfg(test)]
pub fn is_set() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut mxcsr: u32 = 0;
        // SAFETY: stmxcsr only reads the control register into `mxcsr`.
        unsafe { std::arch::asm!("stmxcsr [{}]", in(reg) &mut mxcsr, options(nostack)) };
        mxcsr & MXCSR_FTZ_DAZ == MXCSR_FTZ_DAZ
    }
    #[cfg(target_arch = "aarch64")]
    {
        let fpcr: u64;
        // SAFETY: reads the calling thread's FPCR.
        unsafe { std::arch::asm!("mrs {}, fpcr", out(reg) fpcr) };
        fpcr & (1 << 24) != 0
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    false
}

/// Sets or clears the flags in the calling thread and in every member of its libtorch
/// OpenMP team (at the team's current size).
pub fn apply(on: bool) {
    set_this_thread(on);
    let team = tch::get_num_threads().max(1) as usize;
    crate::parallel::run_shares(0..team, |_| set_this_thread(on));
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind, Tensor};

    /// With the flags on, libtorch's parallel kernels read subnormal inputs as 0; off,
    /// they compute with them.
    #[test]
    fn subnormals_are_flushed_in_libtorchs_threads() {
        let _turn = crate::libtorch_turn();
        let subnormal = 1e-40f32;
        assert!(subnormal > 0.0 && !subnormal.is_normal());
        // Large enough for libtorch to split the sum over its team.
        apply(false);
        let x = Tensor::full([1 << 20], subnormal as f64, (Kind::Float, Device::Cpu));
        apply(true);
        assert!(is_set());
        let flushed = (&x * 1.0f64).sum(Kind::Double).double_value(&[]);
        apply(false);
        assert!(!is_set());
        let kept = (&x * 1.0f64).sum(Kind::Double).double_value(&[]);
        apply(true);
        assert_eq!(flushed, 0.0);
        assert!(kept > 0.0, "{kept}");
    }
}
