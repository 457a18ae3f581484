//! Readers for the binary CIFAR-10 and CIFAR-100 formats
//! (<https://www.cs.toronto.edu/~kriz/cifar.html>), read from the extracted
//! folder or streamed straight out of the official `.tar.gz`.
//!
//! A member file is a sequence of fixed-size records: the label byte(s), then
//! 3072 pixel bytes (the 32×32 red plane, then green, then blue, row-major).
//! CIFAR-10 records have one label byte (10 classes); CIFAR-100 records have a
//! coarse label byte (20 superclasses) then the fine label byte (100 classes),
//! and we use the fine label.
//!
//! Checksums recorded here, and where they come from:
//! - CIFAR-10 members: SHA-256 computed from the CIFAR-10 archive of the
//!   shared data folder, and identical to the values listed by torchvision-ruby
//!   (`TorchVision::Datasets::CIFAR10`); their MD5s also match an independent
//!   list (a Go dataset package), so they are the official members.
//! - CIFAR-10 archive: SHA-256 `c4a38c50…a1dd` as listed by torchvision-ruby and
//!   another public note that checked it against the official MD5
//!   `c32a1d4ab5d03f1284b67883e8d87530`. The shared copy is a repack (other tar
//!   headers, same members), so this value was not reproduced here.
//! - CIFAR-100 members: only MD5s could be found (that same Go package, whose
//!   CIFAR-10 MD5s are right); they were not checked against real files, as no
//!   copy of CIFAR-100 was at hand.
//! - CIFAR-100 archive: MD5 `03b5dce01913d631647c71ecec9e9cb8`, published on the
//!   dataset's page.

use super::{fetch_command_for, Checksum, Dataset};
use anyhow::{anyhow, bail, Result};
use flate2::read::GzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Pixel bytes per record (3 planes of 32×32).
pub const PIXELS: usize = 3 * 32 * 32;

/// One member file of a CIFAR archive.
pub(crate) struct Member {
    /// File name inside the member folder.
    pub(crate) name: &'static str,
    /// Number of records it must hold.
    pub(crate) records: usize,
    /// Checksum of the file.
    pub(crate) digest: Checksum,
}

/// Everything the crate knows about one of the two CIFAR sets.
pub(crate) struct CifarSpec {
    /// Name on the command line (`cifar10`, `cifar100`).
    pub(crate) name: &'static str,
    /// Folder under the data dir (`cifar-10`, `cifar-100`).
    pub(crate) folder: &'static str,
    /// Official archive file name.
    pub(crate) archive: &'static str,
    /// Checksum of the official archive.
    pub(crate) archive_digest: Checksum,
    /// Folder the archive extracts to, holding the members.
    pub(crate) member_dir: &'static str,
    /// Label bytes per record; the last one is the label we use.
    pub(crate) label_bytes: usize,
    /// Classes of the label we use.
    pub(crate) classes: usize,
    /// Classes of the other label byte (CIFAR-100's coarse label), if any.
    pub(crate) coarse_classes: usize,
    /// Training members, in order.
    pub(crate) train: &'static [Member],
    /// Test members, in order.
    pub(crate) test: &'static [Member],
    /// Base URL of the official download.
    pub(crate) mirror: &'static str,
}

impl CifarSpec {
    /// Bytes per record.
    fn record(&self) -> usize {
        self.label_bytes + PIXELS
    }

    /// All members, training first.
    fn members(&self) -> impl Iterator<Item = &'static Member> {
        self.train.iter().chain(self.test.iter())
    }
}

/// CIFAR-10 and CIFAR-100.
pub(crate) const CIFAR: [CifarSpec; 2] = [
    CifarSpec {
        name: "cifar10",
        folder: "cifar-10",
        archive: "cifar-10-binary.tar.gz",
        archive_digest: Checksum::Sha256("c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"),
        member_dir: "cifar-10-batches-bin",
        label_bytes: 1,
        classes: 10,
        coarse_classes: 0,
        train: &[
            Member {
                name: "data_batch_1.bin",
                records: 10000,
                digest: Checksum::Sha256("cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5"),
            },
            Member {
                name: "data_batch_2.bin",
                records: 10000,
                digest: Checksum::Sha256("a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed"),
            },
            Member {
                name: "data_batch_3.bin",
                records: 10000,
                digest: Checksum::Sha256("bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67"),
            },
            Member {
                name: "data_batch_4.bin",
                records: 10000,
                digest: Checksum::Sha256("014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48"),
            },
            Member {
                name: "data_batch_5.bin",
                records: 10000,
                digest: Checksum::Sha256("755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add"),
            },
        ],
        test: &[Member {
            name: "test_batch.bin",
            records: 10000,
            digest: Checksum::Sha256("8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b"),
        }],
        mirror: "https://www.cs.toronto.edu/~kriz/",
    },
    CifarSpec {
        name: "cifar100",
        folder: "cifar-100",
        archive: "cifar-100-binary.tar.gz",
        archive_digest: Checksum::Md5("03b5dce01913d631647c71ecec9e9cb8"),
        member_dir: "cifar-100-binary",
        label_bytes: 2,
        classes: 100,
        coarse_classes: 20,
        train: &[Member {
            name: "train.bin",
            records: 50000,
            digest: Checksum::Md5("6172c7755cfe09b2fe270c85cebc1b15"),
        }],
        test: &[Member {
            name: "test.bin",
            records: 10000,
            digest: Checksum::Md5("4499cfba6c016c1be1438163640a0898"),
        }],
        mirror: "https://www.cs.toronto.edu/~kriz/",
    },
];

/// The CIFAR spec of the named set, if it is one.
pub(crate) fn cifar_spec(name: &str) -> Option<&'static CifarSpec> {
    CIFAR.iter().find(|s| s.name == name)
}

/// Where the member files are read from.
enum Source {
    /// The extracted member folder.
    Folder(PathBuf),
    /// The `.tar.gz` archive.
    Archive(PathBuf),
}

/// The source [`load_cifar`] reads in `<data_dir>/<folder>/`: the extracted
/// member folder if present, else the archive; neither is an error naming
/// both and the `sll fetch` command.
fn locate(spec: &CifarSpec, data_dir: &Path) -> Result<Source> {
    let dir = data_dir.join(spec.folder);
    let folder = dir.join(spec.member_dir);
    let archive = dir.join(spec.archive);
    if folder.is_dir() {
        Ok(Source::Folder(folder))
    } else if archive.is_file() {
        Ok(Source::Archive(archive))
    } else {
        bail!(
            "{}: file not found (nor the extracted folder {}); run `{}` to download it, or copy the official archive there by hand",
            archive.display(),
            folder.display(),
            fetch_command_for(spec.name, data_dir)
        )
    }
}

/// The bytes of every member of `spec`, in [`CifarSpec::members`] order, each
/// with the name errors should use for it (a path, or `archive: member`).
fn read_members(spec: &CifarSpec, source: &Source, advice: &str) -> Result<Vec<(String, Vec<u8>)>> {
    match source {
        Source::Folder(folder) => spec
            .members()
            .map(|m| {
                let path = folder.join(m.name);
                // A FIFO or a device would block the read (or never end): files only.
                if path.exists() && !path.is_file() {
                    bail!("{}: not a regular file; {advice}", path.display());
                }
                let bytes = std::fs::read(&path)
                    .map_err(|e| anyhow!("{}: cannot read the file ({e}); {advice}", path.display()))?;
                Ok((path.display().to_string(), bytes))
            })
            .collect(),
        Source::Archive(path) => read_archive(spec, path, &path.display().to_string(), advice),
    }
}

/// Stream the `.tar.gz` at `path` once and keep its members of `spec`; a
/// damaged stream or a missing member is an error naming the archive as
/// `shown` (its path, or the URL it came from).
fn read_archive(spec: &CifarSpec, path: &Path, shown: &str, advice: &str) -> Result<Vec<(String, Vec<u8>)>> {
    let corrupt = |e: std::io::Error| {
        anyhow!(
            "{shown}: truncated or corrupt archive ({}); {advice}",
            super::one_line(&e.to_string())
        )
    };
    let file =
        std::fs::File::open(path).map_err(|e| anyhow!("{shown}: cannot read the file ({e}); {advice}"))?;
    let mut archive = tar::Archive::new(GzDecoder::new(std::io::BufReader::new(file)));
    let mut found: Vec<Option<Vec<u8>>> = spec.members().map(|_| None).collect();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let entry_path = entry.path().map_err(corrupt)?.into_owned();
        // Repacked archives may name members `./<member_dir>/…`.
        let entry_path = entry_path.strip_prefix(".").unwrap_or(&entry_path);
        let Some((slot, member)) = spec
            .members()
            .enumerate()
            .find(|(_, m)| entry_path == Path::new(spec.member_dir).join(m.name))
        else {
            continue;
        };
        // At most one byte more than the member should have, whatever its
        // header claims: enough for `check_member` to report a wrong length.
        let limit = (member.records * spec.record()) as u64 + 1;
        let mut bytes = Vec::with_capacity(entry.header().size().unwrap_or(0).min(limit) as usize);
        entry
            .by_ref()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(corrupt)?;
        found[slot] = Some(bytes);
    }
    spec.members()
        .zip(found)
        .map(|(m, bytes)| {
            let name = format!("{shown}: member {}/{}", spec.member_dir, m.name);
            match bytes {
                Some(bytes) => Ok((name, bytes)),
                None => Err(anyhow!("{name} is missing; {advice}")),
            }
        })
        .collect()
}

/// Check one member: whole records, the expected count, labels in range, and
/// (if `verify`) its checksum, in that order so that a damaged file gets the
/// most telling message.
fn check_member(spec: &CifarSpec, member: &Member, name: &str, bytes: &[u8], verify: bool) -> Result<()> {
    let record = spec.record();
    if !bytes.len().is_multiple_of(record) {
        bail!(
            "{name}: length {} is not a multiple of the record size {record} (truncated or damaged file)",
            bytes.len()
        );
    }
    let count = bytes.len() / record;
    if count != member.records {
        bail!("{name}: {count} records, expected {}", member.records);
    }
    for (index, r) in bytes.chunks_exact(record).enumerate() {
        let label = usize::from(r[spec.label_bytes - 1]);
        if label >= spec.classes {
            bail!(
                "{name}: label {label} of record {index} is out of range (the dataset has {} classes)",
                spec.classes
            );
        }
        if spec.label_bytes == 2 && usize::from(r[0]) >= spec.coarse_classes {
            bail!(
                "{name}: coarse label {} of record {index} is out of range (there are {} superclasses)",
                r[0],
                spec.coarse_classes
            );
        }
    }
    if verify {
        member.digest.check(bytes).map_err(|e| anyhow!("{name}: {e}"))?;
    }
    Ok(())
}

/// One split from its members' bytes: pixels scaled to `[0, 1]` as
/// `[N, 3, 32, 32]` and the (fine) labels.
fn to_dataset(spec: &CifarSpec, members: &[(String, Vec<u8>)]) -> Dataset {
    let record = spec.record();
    let n: usize = members.iter().map(|(_, b)| b.len() / record).sum();
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (_, bytes) in members {
        for r in bytes.chunks_exact(record) {
            labels.push(i64::from(r[spec.label_bytes - 1]));
            pixels.extend_from_slice(&r[spec.label_bytes..]);
        }
    }
    let mut images = Tensor::from_slice(&pixels)
        .to_kind(Kind::Float)
        .view([n as i64, 3, 32, 32]);
    images /= 255.0;
    Dataset {
        images,
        labels: Tensor::from_slice(&labels),
        classes: spec.classes as i64,
    }
}

/// Loads `(train, test)` of `cifar10` or `cifar100` from `<data_dir>/cifar-10/`
/// (resp. `cifar-100/`): the extracted `cifar-10-batches-bin/` (resp.
/// `cifar-100-binary/`) if present, else the official `.tar.gz`, streamed.
/// Record lengths, counts (50,000 / 10,000) and label ranges are always
/// checked; the checksums of the member files only if `verify_checksums` (the
/// tests turn it off to read generated files). Errors are one line naming the
/// file and the `sll fetch` command.
pub fn load_cifar(name: &str, data_dir: &Path, verify_checksums: bool) -> Result<(Dataset, Dataset)> {
    let spec =
        cifar_spec(name).ok_or_else(|| anyhow!("`{name}` is not a CIFAR dataset (cifar10, cifar100)"))?;
    let advice = format!("delete it and run `{}`", fetch_command_for(spec.name, data_dir));
    let source = locate(spec, data_dir)?;
    let members = read_members(spec, &source, &advice)?;
    for (member, (name, bytes)) in spec.members().zip(&members) {
        check_member(spec, member, name, bytes, verify_checksums).map_err(|e| anyhow!("{e}; {advice}"))?;
    }
    let (train, test) = members.split_at(spec.train.len());
    Ok((to_dataset(spec, train), to_dataset(spec, test)))
}

/// Check the archive at `path` as [`load_cifar`] would (every member present,
/// whole records, counts, labels, member checksums) without building tensors;
/// used by the downloader before it keeps a download (`shown` names it in
/// errors).
pub(crate) fn check_archive(spec: &CifarSpec, path: &Path, shown: &str, advice: &str) -> Result<()> {
    let members = read_archive(spec, path, shown, advice)?;
    for (member, (name, bytes)) in spec.members().zip(&members) {
        check_member(spec, member, name, bytes, true).map_err(|e| anyhow!("{e}; {advice}"))?;
    }
    Ok(())
}

/// Check what [`load_cifar`] would read in `<data_dir>/<folder>/` (folder or
/// archive) and return its path, for the downloader's "present and valid,
/// skipped"; `advice` ends error messages.
pub(crate) fn check_present(spec: &CifarSpec, data_dir: &Path, advice: &str) -> Result<String> {
    let source = locate(spec, data_dir)?;
    let members = read_members(spec, &source, advice)?;
    for (member, (name, bytes)) in spec.members().zip(&members) {
        check_member(spec, member, name, bytes, true).map_err(|e| anyhow!("{e}; {advice}"))?;
    }
    Ok(match source {
        Source::Folder(p) | Source::Archive(p) => p.display().to_string(),
    })
}
