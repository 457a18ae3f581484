//! Links the binary against libtorch so that it runs without `LD_LIBRARY_PATH`.
//!
//! `tch`'s own build script finds libtorch (through `LIBTORCH`, which
//! `.cargo/config.toml` points at the in-repo `.libtorch/torch` that
//! `scripts/setup` installs). Here we only add an rpath to its `lib/` folder, and,
//! with the `cuda` feature, force-link `libtorch.so` so that the linker keeps
//! `libtorch_cuda.so` (otherwise `Cuda::is_available()` is false, tch-rs #980).
//!
//! It also compiles `csrc/autocast.cpp`, our shim over libtorch's CPU/CUDA autocast
//! (which tch does not bind), against the same libtorch's headers.

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

/// Compiles the autocast shim against libtorch's headers (beside `lib/`).
fn build_shim(lib: &std::path::Path) {
    let include = lib.parent().expect("lib/ has a parent").join("include");
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    cc::Build::new()
        .cpp(true)
        .file("csrc/autocast.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!(
            "-D_GLIBCXX_USE_CXX11_ABI={}",
            std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into())
        ))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .warnings(false)
        .compile("sll_autocast");
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = libtorch_lib_dir().expect(
        "libtorch not found: run scripts/setup (or set LIBTORCH=/path/to/libtorch, or LIBTORCH_USE_PYTORCH=1)",
    );
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    build_shim(&lib);
    if std::env::var("CARGO_FEATURE_CUDA").is_ok() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
}
