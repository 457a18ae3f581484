//! Downloading the dataset files (`sll fetch`), so that [`super::load`] can
//! stay offline. Each file is checked against the SHA-256 recorded in
//! [`super`] before it is written, and written through a temporary file and a
//! rename so that an interrupted download never leaves a half-written file.

use super::{idx, locate, sha256_hex, spec, DataFile};
use anyhow::{anyhow, bail, Result};
use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// Largest download accepted, well above the biggest file we fetch (the
/// Fashion-MNIST training images, 26 MB compressed); guards memory against a
/// mirror that serves something else.
const MAX_DOWNLOAD_BYTES: u64 = 256 << 20;

/// Time allowed to open a connection to the mirror.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed for any single read from the connection to stall.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Official download base URL of the named dataset (torchvision's mirrors), used
/// when `sll fetch` gets no `--mirror`. An unknown name is an error listing the
/// known ones.
pub fn default_mirror(name: &str) -> Result<&'static str> {
    Ok(spec(name)?.mirror)
}

/// Download the four `.gz` files of dataset `name` from `mirror` (a base URL,
/// default [`default_mirror`]; the file URL is the mirror, a `/` if it lacks
/// one, and the official file name) into `<data_dir>/<name>/`. Files already
/// present and valid are skipped; each download is checked against the
/// SHA-256 of its decompressed bytes and written through a temporary file and a
/// rename. One progress line per file goes to stderr. Network and HTTP failures
/// are one-line errors starting with `cannot download <url>`.
pub fn fetch(name: &str, data_dir: &Path, mirror: Option<&str>) -> Result<()> {
    let spec = spec(name)?;
    let base = mirror.unwrap_or(spec.mirror);
    let sep = if base.ends_with('/') { "" } else { "/" };
    let dir = data_dir.join(spec.name);
    fs::create_dir_all(&dir).map_err(|e| {
        anyhow!(
            "{}: cannot create the folder ({e}); check the --data-dir path and its permissions",
            dir.display()
        )
    })?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(READ_TIMEOUT)
        .build();

    for file in &spec.files {
        if let Some(path) = locate(&dir, file.name) {
            match check_existing(&path, file) {
                Ok(()) => {
                    eprintln!("{}: present and valid, skipped", path.display());
                    continue;
                }
                Err(why) => eprintln!("{}: {why}, downloading it again", path.display()),
            }
        }
        let url = format!("{base}{sep}{}.gz", file.name);
        let body = download(&agent, &url, &dir)?;
        let raw = idx::gunzip(&body).map_err(|e| {
            anyhow!(
                "{url}: the download is not a valid gzip file ({e}); try another --mirror or copy the files into {} by hand",
                dir.display()
            )
        })?;
        let got = sha256_hex(&raw);
        if got != file.sha256 {
            bail!(
                "{url}: SHA-256 mismatch of the decompressed download (expected {}, got {got}); the mirror serves another file: try another --mirror or copy the files into {} by hand",
                file.sha256,
                dir.display()
            );
        }
        let dest = dir.join(format!("{}.gz", file.name));
        write_atomically(&dest, &body)?;
        eprintln!(
            "{}: downloaded from {url} ({} kB), SHA-256 verified",
            dest.display(),
            body.len().div_ceil(1000)
        );
    }
    Ok(())
}

/// Whether the file at `path` decompresses to bytes with the SHA-256 recorded
/// for `file`; the error says why not, in a few words.
fn check_existing(path: &Path, file: &DataFile) -> Result<(), String> {
    let raw = fs::read(path).map_err(|e| format!("cannot read it ({e})"))?;
    let bytes = if idx::is_gzip(path, &raw) {
        idx::gunzip(&raw).map_err(|e| format!("not a valid gzip file ({e})"))?
    } else {
        raw
    };
    let got = sha256_hex(&bytes);
    if got != file.sha256 {
        return Err(format!("SHA-256 mismatch (expected {}, got {got})", file.sha256));
    }
    Ok(())
}

/// GET `url` and return its body, or a one-line "cannot download" error that
/// suggests copying the files into `dir` by hand.
fn download(agent: &ureq::Agent, url: &str, dir: &Path) -> Result<Vec<u8>> {
    let fail = |reason: String| {
        anyhow!(
            "cannot download {url}: {} (no network? copy the files into {} by hand)",
            reason.replace('\n', " "),
            dir.display()
        )
    };
    let response = agent.get(url).call().map_err(|e| fail(describe(&e)))?;
    let mut body = Vec::new();
    response
        .into_reader()
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

/// Write `bytes` to `dest` through a temporary file in the same folder and a
/// rename, so that `dest` is either absent, the old file, or complete.
fn write_atomically(dest: &Path, bytes: &[u8]) -> Result<()> {
    let file_name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dest.with_file_name(format!(".{file_name}.part{}", std::process::id()));
    let result = fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, dest));
    result.map_err(|e| {
        // The temporary file may not exist (creation failed); nothing to report then.
        let _ = fs::remove_file(&tmp);
        anyhow!(
            "{}: cannot write the file ({e}); check the free space and permissions of its folder",
            dest.display()
        )
    })
}
