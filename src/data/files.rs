//! Dataset files on disk: finding a file's raw or `.gz` copy, checking it against its
//! recorded checksum, and the `sll fetch` command that (re)downloads it.

use anyhow::Result;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A checksum recorded for a file: SHA-256 where one is known, else MD5 (the
/// only value published for some archives).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Checksum {
    /// Lower-case hex SHA-256.
    Sha256(&'static str),
    /// Lower-case hex MD5.
    Md5(&'static str),
}

impl Checksum {
    /// Whether `bytes` have this checksum; the error says "<algo> mismatch
    /// (expected …, got …)".
    pub(crate) fn check(&self, bytes: &[u8]) -> Result<(), String> {
        let got = match self {
            Checksum::Sha256(_) => sha256_hex(bytes),
            Checksum::Md5(_) => format!("{:x}", md5::Md5::digest(bytes)),
        };
        self.check_hex(&got)
    }

    /// Whether `got`, the hex digest of this checksum's algorithm, matches.
    pub(crate) fn check_hex(&self, got: &str) -> Result<(), String> {
        let (algo, expected) = match self {
            Checksum::Sha256(h) => ("SHA-256", h),
            Checksum::Md5(h) => ("MD5", h),
        };
        if got == *expected {
            Ok(())
        } else {
            Err(format!("{algo} mismatch (expected {expected}, got {got})"))
        }
    }
}

/// The copy of `file` in `dir` that [`super::load`] reads: `<file>.gz` if present,
/// else the raw `<file>`, else none.
pub(crate) fn locate(dir: &Path, file: &str) -> Option<PathBuf> {
    [format!("{file}.gz"), file.to_string()]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Lower-case hex SHA-256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// What to tell the user to run to (re)download dataset `name` into `data_dir`.
pub(crate) fn fetch_command_for(name: &str, data_dir: &Path) -> String {
    format!("sll fetch {name} --data-dir {}", data_dir.display())
}
