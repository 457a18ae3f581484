//! The HTTP side of `sll fetch`: one agent with connect and stall timeouts, a whole-
//! download deadline, size limits, downloads into memory or into a temporary file
//! hashed on the way, and one-line reasons for failures.

use crate::data::Checksum;
use anyhow::{anyhow, Result};
use sha2::Digest as _;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The agent every download of one `sll fetch` goes through: [`CONNECT_TIMEOUT`] to
/// connect, [`READ_TIMEOUT`] for any read or write to stall.
pub(super) fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .timeout_write(READ_TIMEOUT)
        .build()
}

/// Largest archive accepted (ImageNette 160 px is about 99 MB, CIFAR about
/// 170 MB); guards the disk against a mirror that serves something else.
const MAX_ARCHIVE_BYTES: u64 = 1 << 30;

/// Largest download accepted, well above the biggest file we fetch (the
/// Fashion-MNIST training images, 26 MB compressed); guards memory against a
/// mirror that serves something else.
const MAX_DOWNLOAD_BYTES: u64 = 256 << 20;

/// Time allowed to open a connection to the mirror.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for any single read from (or write to) the connection to stall: a
/// mirror that accepts the connection but never answers fails after this long.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for one file's whole download. A stall is caught by [`READ_TIMEOUT`];
/// this bounds a mirror that trickles bytes just fast enough never to stall (the
/// largest file, CIFAR's 170 MB, needs about 50 kB/s to finish in time). ureq's own
/// overall timeout would replace the stall timeout by the time left, so the bound is
/// kept by [`Deadline`] around the body instead.
const DOWNLOAD_TIME: Duration = Duration::from_secs(60 * 60);

/// A reader that fails with `TimedOut` once [`DOWNLOAD_TIME`] has passed since it was
/// made (each read still stalls at most [`READ_TIMEOUT`]).
struct Deadline<R> {
    inner: R,
    end: std::time::Instant,
}

impl<R> Deadline<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            end: std::time::Instant::now() + DOWNLOAD_TIME,
        }
    }
}

impl<R: Read> Read for Deadline<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if std::time::Instant::now() > self.end {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "the download did not finish within {} minutes: the mirror is too slow",
                    DOWNLOAD_TIME.as_secs() / 60
                ),
            ));
        }
        self.inner.read(buf)
    }
}

/// A download held in a temporary file next to its destination, with the
/// checksums of its bytes.
pub(super) struct Download {
    /// The temporary file.
    pub(super) tmp: PathBuf,
    /// Its length.
    pub(super) bytes: u64,
    /// Lower-case hex SHA-256.
    sha256: String,
    /// Lower-case hex MD5.
    md5: String,
}

impl Download {
    /// The digest of the algorithm of `checksum`.
    pub(super) fn hex(&self, checksum: Checksum) -> &str {
        match checksum {
            Checksum::Sha256(_) => &self.sha256,
            Checksum::Md5(_) => &self.md5,
        }
    }

    /// Move the temporary file to `dest`.
    pub(super) fn keep(&self, dest: &Path) -> Result<()> {
        fs::rename(&self.tmp, dest).map_err(|e| {
            let _ = fs::remove_file(&self.tmp);
            anyhow!(
                "{}: cannot write the file ({e}); check the free space and permissions of its folder",
                dest.display()
            )
        })
    }
}

/// GET `url` into a temporary file next to `dest`, hashing it on the way; a
/// one-line "cannot download" error (nothing left behind) on failure.
pub(super) fn download_to_file(agent: &ureq::Agent, url: &str, dest: &Path) -> Result<Download> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let fail = |reason: String| {
        anyhow!(
            "cannot download {url}: {} (no network? copy the official archive into {} by hand)",
            reason.replace('\n', " "),
            dir.display()
        )
    };
    let response = agent.get(url).call().map_err(|e| fail(describe(&e)))?;
    let tmp = temporary(dest);
    let mut file = fs::File::create(&tmp).map_err(|e| {
        anyhow!(
            "{}: cannot write the file ({e}); check the free space and permissions of its folder",
            tmp.display()
        )
    })?;
    let (mut sha256, mut md5) = (sha2::Sha256::new(), md5::Md5::new());
    let mut reader = Deadline::new(response.into_reader()).take(MAX_ARCHIVE_BYTES + 1);
    let mut buffer = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    let result = loop {
        match reader.read(&mut buffer) {
            Ok(0) => break file.sync_all().map_err(|e| fail(e.to_string())),
            Ok(n) => {
                bytes += n as u64;
                if bytes > MAX_ARCHIVE_BYTES {
                    break Err(fail(format!(
                        "the response is larger than {} MB, not a dataset archive",
                        MAX_ARCHIVE_BYTES >> 20
                    )));
                }
                sha256.update(&buffer[..n]);
                md5.update(&buffer[..n]);
                if let Err(e) = file.write_all(&buffer[..n]) {
                    break Err(anyhow!(
                        "{}: cannot write the file ({e}); check the free space and permissions of its folder",
                        tmp.display()
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(fail(e.to_string())),
        }
    };
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(Download {
        tmp,
        bytes,
        sha256: format!("{:x}", sha256.finalize()),
        md5: format!("{:x}", md5.finalize()),
    })
}

/// The temporary file written before renaming it to `dest`.
fn temporary(dest: &Path) -> PathBuf {
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{file_name}.part{}", std::process::id()))
}

/// GET `url` and return its body, or a one-line "cannot download" error that
/// suggests copying the files into `dir` by hand.
pub(super) fn download(agent: &ureq::Agent, url: &str, dir: &Path) -> Result<Vec<u8>> {
    let fail = |reason: String| {
        anyhow!(
            "cannot download {url}: {} (no network? copy the files into {} by hand)",
            reason.replace('\n', " "),
            dir.display()
        )
    };
    let response = agent.get(url).call().map_err(|e| fail(describe(&e)))?;
    let mut body = Vec::new();
    Deadline::new(response.into_reader())
        .take(MAX_DOWNLOAD_BYTES + 1)
        .read_to_end(&mut body)
        .map_err(|e| fail(e.to_string()))?;
    if body.len() as u64 > MAX_DOWNLOAD_BYTES {
        return Err(fail(format!(
            "the response is larger than {} MB, not a dataset file",
            MAX_DOWNLOAD_BYTES >> 20
        )));
    }
    Ok(body)
}

/// A short reason for a `ureq` error, without the URL (which the caller's
/// message already has).
fn describe(error: &ureq::Error) -> String {
    match error {
        ureq::Error::Status(code, response) => {
            format!("HTTP {code} {}", response.status_text())
        }
        ureq::Error::Transport(t) => {
            let mut reason = t.kind().to_string();
            if let Some(message) = t.message() {
                reason.push_str(&format!(": {message}"));
            }
            if let Some(source) = std::error::Error::source(t) {
                reason.push_str(&format!(": {source}"));
            }
            reason
        }
    }
}
