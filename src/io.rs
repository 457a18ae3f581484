//! Durable, atomic file writes: the one way this project writes a file.
//!
//! [`write_atomic`] writes the bytes to a temporary file in the destination's folder,
//! flushes it to disk, renames it over the destination and flushes the folder, so that
//! after a crash (or a full disk, or a kill) the destination is either the old file or
//! the complete new one, never a prefix of it, and no temporary file is left behind by
//! an error.
//!
//! Beside it, the path helpers of the commands: [`safe_name`] for a directory name made
//! from a preset or a grid point, [`absolute`] for a folder a later invocation reads.

use anyhow::{anyhow, Result};
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// Prefix of every temporary file [`write_atomic`] creates (hidden, so that a listing
/// of a run directory shows only complete files).
pub const TEMP_PREFIX: &str = ".sll-tmp-";

/// Whether a file named `name` is a temporary file of [`write_atomic`].
pub fn is_temporary(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with(TEMP_PREFIX)
}

/// The temporary file beside `path`: `.sll-tmp-<pid>-<name>` in the same folder (the
/// process id keeps two processes writing the same name apart).
fn temporary(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    path.with_file_name(format!("{TEMP_PREFIX}{}-{name}", std::process::id()))
}

/// The folder holding `path` (`.` for a bare file name).
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The text of the regular file `path` (a folder, FIFO or device is an error, so that a
/// read never blocks on a pipe).
pub fn read_text(path: &Path) -> Result<String> {
    if !path.is_file() {
        return Err(anyhow!("cannot read {}: no such file", path.display()));
    }
    fs::read_to_string(path).map_err(|e| anyhow!("cannot read {}: {e}", path.display()))
}

/// Flushes the folder `dir` itself (its entries: a rename into it becomes durable).
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| anyhow!("cannot flush folder {}: {e}", dir.display()))
}

/// Writes `bytes` to `path` atomically and durably (see the module docs). On any error
/// the temporary file is removed and `path` is untouched; a full disk is reported with
/// the folder and the bytes that were to be written.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temporary(path);
    let dir = folder_of(path);
    let written = File::create(&tmp)
        .and_then(|mut f| {
            if crash_requested(path) {
                // Fault injection for the crash tests: die half-way through the write.
                f.write_all(&bytes[..bytes.len() / 2])?;
                f.sync_all()?;
                // SAFETY: raising a signal has no memory-safety preconditions.
                unsafe { libc::raise(libc::SIGKILL) };
            }
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(match e.kind() {
            ErrorKind::StorageFull | ErrorKind::QuotaExceeded => anyhow!(
                "no space left in {} to write {} ({} bytes needed); free some space, nothing was half-written",
                dir.display(),
                path.display(),
                bytes.len()
            ),
            _ => anyhow!("cannot write {}: {e}", path.display()),
        });
    }
    sync_dir(dir)
}

/// Environment variable of the crash tests: `NAME:N` kills the process (SIGKILL) half-way
/// through the N-th (1-based) write of a file named NAME.
pub const CRASH_ENV: &str = "SLL_CRASH_IN_WRITE";

/// Whether this write of `path` is the one [`CRASH_ENV`] asks to die in.
fn crash_requested(path: &Path) -> bool {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, usize)>> = OnceLock::new();
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let target = TARGET.get_or_init(|| {
        let value = std::env::var(CRASH_ENV).ok()?;
        let (name, n) = value.rsplit_once(':')?;
        Some((name.to_string(), n.parse().ok()?))
    });
    match target {
        Some((name, n))
            if path
                .file_name()
                .is_some_and(|f| f.to_string_lossy() == name.as_str()) =>
        {
            SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *n
        }
        _ => false,
    }
}

/// Removes temporary files a killed writer left in `dir` (names starting with
/// [`TEMP_PREFIX`]); returns how many.
pub fn remove_stale_temporaries(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let entries = fs::read_dir(dir).map_err(|e| anyhow!("cannot list {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        if is_temporary(&entry.file_name()) {
            fs::remove_file(entry.path())
                .map_err(|e| anyhow!("cannot remove {}: {e}", entry.path().display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A run directory name from `name`: letters, digits, `.`, `_` and `-` kept, anything
/// else (path separators included) replaced by `_`, no leading dot, so that the run
/// lands in `runs/` whatever the preset is called.
pub fn safe_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = name.trim_start_matches('.');
    if name.is_empty() {
        "run".into()
    } else {
        name.chars().take(120).collect()
    }
}

/// `dir` made absolute (relative to the current directory), when it exists.
pub fn absolute(dir: &str) -> String {
    fs::canonicalize(dir).map_or_else(|_| dir.to_string(), |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        // The destination is a non-empty folder: the rename fails after the write.
        let path = dir.path().join("taken");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), b"x").unwrap();
        let e = write_atomic(&path, b"bytes").unwrap_err().to_string();
        assert!(e.contains("taken"), "{e}");
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 0);
        assert_eq!(fs::read(path.join("inside")).unwrap(), b"x");
    }

    #[test]
    fn stale_temporaries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(format!("{TEMP_PREFIX}1-model.safetensors")),
            b"half",
        )
        .unwrap();
        fs::write(dir.path().join("keep"), b"x").unwrap();
        assert_eq!(remove_stale_temporaries(dir.path()).unwrap(), 1);
        assert!(dir.path().join("keep").exists());
    }

    /// Run names from presets stay inside `runs/`.
    #[test]
    fn run_names_cannot_leave_runs() {
        assert_eq!(safe_name("20261201-mnist-mlp-sll"), "20261201-mnist-mlp-sll");
        assert_eq!(safe_name("../../etc/x"), "_.._etc_x");
        assert_eq!(safe_name("/abs/path"), "_abs_path");
        assert_eq!(safe_name(".."), "run");
        assert_eq!(safe_name("a b\\c\0"), "a_b_c_");
        assert_eq!(safe_name(&"x".repeat(500)).len(), 120);
    }
}
