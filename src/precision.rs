//! Mixed precision (`train.precision`): bf16 autocast with fp32 master weights.
//!
//! `bf16` follows PyTorch's `torch.autocast(device, torch.bfloat16)`: inside an
//! [`Autocast`] region libtorch runs convolutions, linear layers and matrix products in
//! bf16 (casting their fp32 weights once per region and caching the casts), while
//! normalisation keeps fp32 statistics and parameters. The weights, their gradients
//! and the optimizer state stay fp32: the bf16 copies are casts inside the graph, whose
//! backward returns fp32 gradients to the fp32 parameters. Every loss term is computed
//! in fp32: cross-entropy reads `log_softmax(.., Float)`, and the rules compute their
//! other terms (the Bhattacharyya term, InfoPro's reconstruction, PredSim's similarity)
//! inside [`full_precision`]. A region is opened around a block's forward pass and
//! loss and closed before `backward()` and the optimizer step, which drops the cached
//! bf16 weights before they go stale. Evaluation runs in fp32.
//!
//! libtorch's autocast state is per thread: every trainer thread opens its own region.
//! tch binds only the deprecated CUDA switch, so the regions go through our shim
//! `csrc/autocast.cpp`, built against libtorch by `build.rs`.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The arithmetic a run trains in.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// bf16 where the device computes it natively (CPU: AMX or AVX-512 BF16; GPU:
    /// compute capability ≥ 8.0), fp32 elsewhere; a run records what this resolved to.
    #[default]
    Auto,
    /// Everything in fp32.
    Fp32,
    /// bf16-mixed: bf16 matrix products and convolutions, fp32 weights, optimizer state,
    /// normalisation statistics and losses.
    Bf16,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Auto => "auto",
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

mod ffi {
    extern "C" {
        pub fn sll_autocast_enter(cuda: i32, was_enabled: *mut i32) -> i32;
        pub fn sll_autocast_exit(cuda: i32, was_enabled: i32) -> i32;
        pub fn sll_autocast_set(cuda: i32, enabled: i32) -> i32;
        pub fn sll_autocast_is_enabled(cuda: i32) -> i32;
        pub fn sll_cuda_native_bf16() -> i32;
    }
}

fn cuda_flag(device: Device) -> i32 {
    i32::from(device.is_cuda())
}

/// An open autocast region on this thread (nothing for fp32): bf16 matrix products
/// and convolutions on its device until it is dropped. Regions nest; when the
/// outermost closes, libtorch's cache of bf16 weight copies is cleared.
#[must_use = "the region closes when the guard is dropped"]
pub struct Autocast {
    open: Option<(i32, i32)>,
}

impl Autocast {
    /// Opens a region for `precision` on `device` (a no-op for fp32). `precision`
    /// must be resolved (not `auto`).
    pub fn enter(precision: Precision, device: Device) -> Self {
        debug_assert!(precision != Precision::Auto, "precision resolved before training");
        if precision != Precision::Bf16 {
            return Self { open: None };
        }
        let cuda = cuda_flag(device);
        let mut was = 0;
        // SAFETY: the shim catches every C++ exception; `was` outlives the call.
        let failed = unsafe { ffi::sll_autocast_enter(cuda, &mut was) };
        assert!(failed == 0, "libtorch refused to open an autocast region");
        Self {
            open: Some((cuda, was)),
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        if let Some((cuda, was)) = self.open.take() {
            // SAFETY: closes the region `enter` opened on this thread.
            unsafe { ffi::sll_autocast_exit(cuda, was) };
        }
    }
}

/// Runs `f` with autocast off on `device` (a loss term computed in fp32 inside a bf16
/// region); exactly `f()` outside one.
pub fn full_precision<T>(device: Device, f: impl FnOnce() -> T) -> T {
    let cuda = cuda_flag(device);
    // SAFETY: the shim only reads libtorch's per-thread switch.
    if unsafe { ffi::sll_autocast_is_enabled(cuda) } != 1 {
        return f();
    }
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: sets back this thread's switch.
            unsafe { ffi::sll_autocast_set(self.0, 1) };
        }
    }
    // SAFETY: as above.
    unsafe { ffi::sll_autocast_set(cuda, 0) };
    let _restore = Restore(cuda);
    f()
}

/// Whether an autocast region is open on this thread for `device`.
pub fn autocast_enabled(device: Device) -> bool {
    // SAFETY: reads libtorch's per-thread switch.
    unsafe { ffi::sll_autocast_is_enabled(cuda_flag(device)) == 1 }
}

/// `t` in fp32 (the same tensor when it already is).
pub fn fp32(t: &Tensor) -> Tensor {
    if t.kind() == Kind::Float {
        t.shallow_clone()
    } else {
        t.to_kind(Kind::Float)
    }
}

/// Whether `device` computes bf16 natively, and what says so (one line).
pub fn native_bf16(device: Device) -> (bool, String) {
    if device.is_cuda() {
        // SAFETY: the shim catches every C++ exception.
        return match unsafe { ffi::sll_cuda_native_bf16() } {
            1 => (true, "the GPU has compute capability ≥ 8.0".into()),
            0 => (false, "the GPU's compute capability is below 8.0".into()),
            _ => (false, "CUDA's capabilities could not be read".into()),
        };
    }
    cpu_native_bf16().clone()
}

/// [`native_bf16`] for the CPU: /proc/cpuinfo's flags, read once per process (every
/// model built asks).
fn cpu_native_bf16() -> &'static (bool, String) {
    static CPU: std::sync::OnceLock<(bool, String)> = std::sync::OnceLock::new();
    CPU.get_or_init(|| {
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let has = |flag: &str| {
            flags
                .lines()
                .filter(|l| l.starts_with("flags"))
                .any(|l| l.split_whitespace().any(|f| f == flag))
        };
        if has("amx_bf16") {
            (true, "the CPU has AMX (amx_bf16)".into())
        } else if has("avx512_bf16") {
            (true, "the CPU has AVX-512 BF16 (avx512_bf16)".into())
        } else {
            (false, "the CPU has neither AMX nor AVX-512 BF16".into())
        }
    })
}

/// What `requested` means on `device`: the precision to train in and why (one line for
/// the start line). `bf16` without native support trains (libtorch emulates it) and
/// the reason says it will be slow.
pub fn resolve(requested: Precision, device: Device) -> Result<(Precision, String)> {
    let (native, why) = native_bf16(device);
    Ok(match requested {
        Precision::Auto if native => (Precision::Bf16, format!("auto: {why}")),
        Precision::Auto => (Precision::Fp32, format!("auto: {why}")),
        Precision::Fp32 => (Precision::Fp32, "as asked".into()),
        Precision::Bf16 if native => (Precision::Bf16, format!("as asked; {why}")),
        Precision::Bf16 => {
            if device.is_cuda() && why.starts_with("CUDA") {
                bail!("config key `train.precision` = \"bf16\": {why}");
            }
            (
                Precision::Bf16,
                format!("as asked, but {why}: bf16 is emulated and slower than fp32 here"),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_casts_products_to_bf16_and_closes() {
        let a = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([8, 3], (Kind::Float, Device::Cpu));
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        {
            let _region = Autocast::enter(Precision::Bf16, Device::Cpu);
            assert!(autocast_enabled(Device::Cpu));
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            // Losses computed inside `full_precision` stay fp32.
            assert_eq!(full_precision(Device::Cpu, || a.matmul(&b)).kind(), Kind::Float);
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16, "the switch is back on");
            {
                let _inner = Autocast::enter(Precision::Bf16, Device::Cpu);
                assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
            }
            assert!(
                autocast_enabled(Device::Cpu),
                "an inner region keeps the outer one"
            );
        }
        assert!(!autocast_enabled(Device::Cpu));
        assert_eq!(a.matmul(&b).kind(), Kind::Float);
        let _fp32 = Autocast::enter(Precision::Fp32, Device::Cpu);
        assert!(!autocast_enabled(Device::Cpu));
    }

    #[test]
    fn the_state_is_per_thread() {
        let _region = Autocast::enter(Precision::Bf16, Device::Cpu);
        let other = std::thread::spawn(|| autocast_enabled(Device::Cpu))
            .join()
            .unwrap();
        assert!(!other);
        assert!(autocast_enabled(Device::Cpu));
    }

    #[test]
    fn fp32_and_bf16_resolve_to_themselves() {
        assert_eq!(resolve(Precision::Fp32, Device::Cpu).unwrap().0, Precision::Fp32);
        assert_eq!(resolve(Precision::Bf16, Device::Cpu).unwrap().0, Precision::Bf16);
        let (auto, why) = resolve(Precision::Auto, Device::Cpu).unwrap();
        assert_eq!(auto == Precision::Bf16, native_bf16(Device::Cpu).0, "{why}");
    }
}
