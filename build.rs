//! Links the binary against libtorch so that it runs without `LD_LIBRARY_PATH`.
//!
//! `tch`'s own build script finds libtorch (through `LIBTORCH`, which
//! `.cargo/config.toml` points at the in-repo `.libtorch/torch` that
//! `scripts/setup` installs). Here we only add an rpath to its `lib/` folder, and,
//! with the `cuda` feature, force-link `libtorch.so` so that the linker keeps
//! `libtorch_cuda.so` (otherwise `Cuda::is_available()` is false, tch-rs #980).

use std::path::PathBuf;
use std::process::Command;

fn libtorch_lib_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        return Some(PathBuf::from(dir).join("lib"));
    }
    if std::env::var("LIBTORCH_USE_PYTORCH").is_ok() {
        let out = Command::new("python3")
            .args(["-c", "import torch, os; print(os.path.dirname(torch.__file__))"])
            .output()
            .ok()?;
        let dir = String::from_utf8(out.stdout).ok()?;
        return Some(PathBuf::from(dir.trim()).join("lib"));
    }
    None
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    if let Some(lib) = libtorch_lib_dir() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    if std::env::var("CARGO_FEATURE_CUDA").is_ok() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
