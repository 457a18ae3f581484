//! Downloading the dataset files (`sll fetch`), so that [`super::load`] can
//! stay offline. Each file is checked against the checksums recorded in
//! [`super`] before it is kept, and written through a temporary file and a
//! rename so that an interrupted download never leaves a half-written file.
//!
//! MNIST and Fashion-MNIST are four `.gz` files each; CIFAR-10 and CIFAR-100
//! are the official binary archives, kept as downloaded (the loader streams
//! them); ImageNette (160 px) is an archive extracted into an image folder.

mod download;

use super::cifar::{self, cifar_spec, CifarSpec};
use super::{fetch_command_for, idx, locate, sha256_hex, spec, Checksum, DataFile};
use anyhow::{anyhow, bail, Result};
use download::{download, download_to_file};
use flate2::read::GzDecoder;
use std::fs;
use std::path::{Path, PathBuf};

/// The names `sll fetch` accepts.
const FETCHABLE: &[&str] = &["mnist", "fashion-mnist", "cifar10", "cifar100", "imagenette"];

/// The ImageNette archive (160 px shorter side) that `sll fetch imagenette`
/// downloads and extracts into `<data_dir>/imagenette/`.
struct ArchiveSpec {
    /// Name on the command line.
    name: &'static str,
    /// Folder under the data dir.
    folder: &'static str,
    /// Official archive file name.
    archive: &'static str,
    /// Folder the archive extracts to.
    extracted: &'static str,
    /// Checksum of the archive. Only the MD5 is published (torchvision's
    /// `Imagenette` and fast.ai users list `e793b78c…a412`); it was not
    /// checked against a download here, as there was no network.
    checksum: Checksum,
    /// Base URL of the official download.
    mirror: &'static str,
}

/// ImageNette, 160 px version.
const IMAGENETTE: ArchiveSpec = ArchiveSpec {
    name: "imagenette",
    folder: "imagenette",
    archive: "imagenette2-160.tgz",
    extracted: "imagenette2-160",
    checksum: Checksum::Md5("e793b78cc4c9e9a4ccc0c1155377a412"),
    mirror: "https://s3.amazonaws.com/fast-ai-imageclas/",
};

/// Which datasets `sll fetch` knows by name ("mnist", "fashion-mnist",
/// "cifar10", "cifar100", "imagenette").
pub fn fetchable() -> &'static [&'static str] {
    FETCHABLE
}

/// The error for a name `sll fetch` does not know.
fn unknown(name: &str) -> anyhow::Error {
    anyhow!(
        "unknown dataset `{name}` for fetch; known datasets: {}",
        FETCHABLE.join(", ")
    )
}

/// Official download base URL of the named dataset (torchvision's mirrors for
/// MNIST, the authors' sites otherwise), used when `sll fetch` gets no
/// `--mirror`. An unknown name is an error listing the known ones.
pub fn default_mirror(name: &str) -> Result<&'static str> {
    if let Some(c) = cifar_spec(name) {
        return Ok(c.mirror);
    }
    if name == IMAGENETTE.name {
        return Ok(IMAGENETTE.mirror);
    }
    spec(name).map(|s| s.mirror).map_err(|_| unknown(name))
}

/// Download dataset `name` (see [`fetchable`]) from `mirror` (a base URL,
/// default [`default_mirror`]; a file's URL is the mirror, a `/` if it lacks
/// one, and the official file name) into `<data_dir>/<folder>/`:
/// - `mnist`, `fashion-mnist`: the four `.gz` files into `<name>/`, each
///   checked against the SHA-256 of its decompressed bytes;
/// - `cifar10`, `cifar100`: the official archive into `cifar-10/` (resp.
///   `cifar-100/`), kept only if every member file passes the loader's checks
///   (record layout, counts, labels, checksum); whether the archive itself is
///   byte-identical to the official one is reported but not required;
/// - `imagenette`: `imagenette2-160.tgz` into `imagenette/`, checked against
///   its published MD5 and extracted to `imagenette/imagenette2-160/` (the
///   root to train on with the `imagefolder` dataset).
///
/// Files already present and valid are skipped; everything is written through
/// a temporary file and a rename. One progress line per file goes to stderr.
/// Network and HTTP failures are one-line errors starting with
/// `cannot download <url>`.
pub fn fetch(name: &str, data_dir: &Path, mirror: Option<&str>) -> Result<()> {
    let base = mirror.unwrap_or(default_mirror(name)?);
    let sep = if base.ends_with('/') { "" } else { "/" };
    let base = format!("{base}{sep}");
    let agent = download::agent();
    if let Some(c) = cifar_spec(name) {
        return fetch_cifar(&agent, c, data_dir, &base);
    }
    if name == IMAGENETTE.name {
        return fetch_imagenette(&agent, &IMAGENETTE, data_dir, &base);
    }
    let spec = spec(name)?;
    let dir = create_dir(&data_dir.join(spec.name))?;
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
        let url = format!("{base}{}.gz", file.name);
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
        crate::io::write_atomic(&dest, &body)?;
        eprintln!(
            "{}: downloaded from {url} ({} kB), SHA-256 verified",
            dest.display(),
            body.len().div_ceil(1000)
        );
    }
    Ok(())
}

/// Create `dir` (and its parents) and return it; the error names it.
fn create_dir(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| {
        anyhow!(
            "{}: cannot create the folder ({e}); check the --data-dir path and its permissions",
            dir.display()
        )
    })?;
    Ok(dir.to_path_buf())
}

/// `sll fetch cifar10|cifar100`: see [`fetch`].
fn fetch_cifar(agent: &ureq::Agent, spec: &CifarSpec, data_dir: &Path, base: &str) -> Result<()> {
    let dir = create_dir(&data_dir.join(spec.folder))?;
    let folder = dir.join(spec.member_dir);
    let dest = dir.join(spec.archive);
    let again = format!("run `{}` again", fetch_command_for(spec.name, data_dir));
    if folder.is_dir() {
        // The loader prefers the folder, so a damaged one cannot be mended by
        // downloading the archive.
        let advice = format!("delete the folder {} and {again}", folder.display());
        let path = cifar::check_present(spec, data_dir, &advice)?;
        eprintln!("{path}: present and valid, skipped");
        return Ok(());
    }
    if dest.is_file() {
        match cifar::check_present(spec, data_dir, "downloading it again") {
            Ok(path) => {
                eprintln!("{path}: present and valid, skipped");
                return Ok(());
            }
            Err(why) => eprintln!("{why}"),
        }
    }
    let url = format!("{base}{}", spec.archive);
    let download = download_to_file(agent, &url, &dest)?;
    let advice = format!(
        "the mirror serves another file: try another --mirror or copy the official archive into {} by hand",
        dir.display()
    );
    if let Err(e) = cifar::check_archive(spec, &download.tmp, &url, &advice) {
        let _ = fs::remove_file(&download.tmp);
        return Err(e);
    }
    let official = match spec.archive_digest.check_hex(download.hex(spec.archive_digest)) {
        Ok(()) => "the official archive, checksum verified".to_string(),
        Err(why) => format!("not byte-identical to the official archive ({why}), but every member verified"),
    };
    download.keep(&dest)?;
    eprintln!(
        "{}: downloaded from {url} ({} MB): {official}",
        dest.display(),
        download.bytes.div_ceil(1_000_000)
    );
    Ok(())
}

/// `sll fetch imagenette`: see [`fetch`].
fn fetch_imagenette(agent: &ureq::Agent, spec: &ArchiveSpec, data_dir: &Path, base: &str) -> Result<()> {
    let dir = create_dir(&data_dir.join(spec.folder))?;
    let root = dir.join(spec.extracted);
    if root.join("train").is_dir() && root.join("val").is_dir() {
        eprintln!(
            "{}: present, skipped (delete it to extract again); train on it with dataset `imagefolder` and --data-dir {}",
            root.display(),
            root.display()
        );
        return Ok(());
    }
    let dest = dir.join(spec.archive);
    let present = fs::read(&dest).ok().map(|bytes| spec.checksum.check(&bytes));
    match present {
        Some(Ok(())) => eprintln!("{}: present and valid, not downloaded again", dest.display()),
        other => {
            if let Some(Err(why)) = other {
                eprintln!("{}: {why}, downloading it again", dest.display());
            }
            let url = format!("{base}{}", spec.archive);
            let download = download_to_file(agent, &url, &dest)?;
            if let Err(why) = spec.checksum.check_hex(download.hex(spec.checksum)) {
                let _ = fs::remove_file(&download.tmp);
                bail!(
                    "{url}: {why}; the mirror serves another file: try another --mirror or copy the official archive into {} by hand",
                    dir.display()
                );
            }
            download.keep(&dest)?;
            eprintln!(
                "{}: downloaded from {url} ({} MB), checksum verified",
                dest.display(),
                download.bytes.div_ceil(1_000_000)
            );
        }
    }
    extract(&dest, &dir, spec.extracted)?;
    eprintln!(
        "{}: extracted; train on it with dataset `imagefolder` and --data-dir {}",
        root.display(),
        root.display()
    );
    Ok(())
}

/// Extract the `.tar.gz` at `archive` into a temporary folder of `dir`, then
/// move its top folder `top` to `dir/top`, so that an interrupted extraction
/// never leaves a partial `dir/top`.
fn extract(archive: &Path, dir: &Path, top: &str) -> Result<()> {
    let tmp = dir.join(format!(".{top}.part{}", std::process::id()));
    let fail = |e: std::io::Error| {
        let _ = fs::remove_dir_all(&tmp);
        anyhow!(
            "{}: cannot extract the archive ({e}); delete it and any {} and run `sll fetch` again",
            archive.display(),
            dir.join(top).display()
        )
    };
    let file = fs::File::open(archive).map_err(fail)?;
    // `unpack` refuses entries that would land outside `tmp`.
    tar::Archive::new(GzDecoder::new(std::io::BufReader::new(file)))
        .unpack(&tmp)
        .map_err(fail)?;
    fs::rename(tmp.join(top), dir.join(top)).map_err(fail)?;
    let _ = fs::remove_dir_all(&tmp);
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

#[cfg(test)]
mod tests {
    use super::extract;
    use std::fs;

    /// A `.tar.gz` holding `top/train/a/x.png` and `top/val/a/y.png`.
    fn archive() -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut builder = tar::Builder::new(gz);
        for (name, bytes) in [
            ("top/train/a/x.png", &b"xx"[..]),
            ("top/val/a/y.png", &b"yyy"[..]),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, bytes).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn extract_moves_the_top_folder_into_place_or_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let bytes = archive();
        fs::write(dir.join("a.tgz"), &bytes).unwrap();
        extract(&dir.join("a.tgz"), dir, "top").unwrap();
        assert_eq!(fs::read(dir.join("top/train/a/x.png")).unwrap(), b"xx");
        assert_eq!(fs::read(dir.join("top/val/a/y.png")).unwrap(), b"yyy");
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["a.tgz", "top"]);

        // A truncated archive: an error naming it, and no partial folder.
        fs::remove_dir_all(dir.join("top")).unwrap();
        fs::write(dir.join("a.tgz"), &bytes[..bytes.len() / 2]).unwrap();
        let msg = extract(&dir.join("a.tgz"), dir, "top").unwrap_err().to_string();
        assert!(msg.contains("a.tgz: cannot extract the archive"), "{msg}");
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1);
    }
}
