//! Property tests of the parsers of files a user hands to `sll`: the IDX reader, the
//! CIFAR reader (extracted folder and `.tar.gz`), the image-folder loader, the config
//! parser (`from_toml` and `--set` overrides) and the checkpoint metadata reader.
//! Each is fed arbitrary bytes and mutations (bits flipped, bytes set, inserted,
//! deleted, truncated, header fields set to extreme values) of a valid input it
//! generates itself, and must answer `Ok` or `Err`, never panic; the data readers'
//! errors must also be one line naming the file. Every case is generated here: no
//! data dir is needed.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config as ProptestConfig;
use sll::config::Config;
use sll::data::{self, cifar::load_cifar, idx, imagefolder::load_image_folder};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// `cases` cases (`PROPTEST_CASES` in the environment overrides it, for a longer
/// hunt), no regression file written beside the sources.
fn cases(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Mutations of a valid input.

/// One edit of a byte string; positions are fractions of its length, so any
/// edit applies to any input.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flip one bit.
    Flip(Index, u8),
    /// Overwrite one byte.
    Set(Index, u8),
    /// Insert bytes.
    Insert(Index, Vec<u8>),
    /// Delete up to `n` bytes.
    Delete(Index, usize),
    /// Cut the input short.
    Truncate(Index),
    /// Overwrite 4 bytes with a big-endian `u32` (IDX sizes, PNG dimensions).
    SetU32Be(Index, u32),
    /// Overwrite 8 bytes with a little-endian `u64` (safetensors header length).
    SetU64Le(Index, u64),
}

/// Values that make size fields interesting.
fn extreme_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(1),
        Just(u32::MAX),
        Just(1 << 31),
        Just((1 << 31) - 1),
        Just(1 << 16),
        any::<u32>(),
    ]
}

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(1 << 63),
        Just(u64::from(u32::MAX)),
        Just(1 << 40),
        0u64..4096,
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        1 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        1 => (any::<Index>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        1 => (any::<Index>(), extreme_u32()).prop_map(|(i, v)| Mutation::SetU32Be(i, v)),
        1 => (any::<Index>(), extreme_u64()).prop_map(|(i, v)| Mutation::SetU64Le(i, v)),
    ]
}

/// One to six edits.
fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(mutation(), 1..6)
}

/// Overwrite `bytes[at..]` with `value` as far as it fits.
fn overwrite(bytes: &mut [u8], at: usize, value: &[u8]) {
    let n = value.len().min(bytes.len() - at);
    bytes[at..at + n].copy_from_slice(&value[..n]);
}

/// `bytes` with `edits` applied in order.
fn mutate(bytes: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for edit in edits {
        if b.is_empty() {
            if let Mutation::Insert(_, new) = edit {
                b.extend_from_slice(new);
            }
            continue;
        }
        match edit {
            Mutation::Flip(i, bit) => {
                let at = i.index(b.len());
                b[at] ^= 1 << bit;
            }
            Mutation::Set(i, v) => {
                let at = i.index(b.len());
                b[at] = *v;
            }
            Mutation::Insert(i, new) => {
                let at = i.index(b.len() + 1);
                b.splice(at..at, new.iter().copied());
            }
            Mutation::Delete(i, n) => {
                let at = i.index(b.len());
                let end = (at + n).min(b.len());
                b.drain(at..end);
            }
            Mutation::Truncate(i) => b.truncate(i.index(b.len())),
            Mutation::SetU32Be(i, v) => {
                let at = i.index(b.len());
                overwrite(&mut b, at, &v.to_be_bytes());
            }
            Mutation::SetU64Le(i, v) => {
                let at = i.index(b.len());
                overwrite(&mut b, at, &v.to_le_bytes());
            }
        }
    }
    b
}

/// Gzip `bytes`.
fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// An error of a data reader must be one line naming the file (or folder) under
/// `root` it is about.
fn assert_one_line_naming(msg: &str, root: &Path) -> Result<(), TestCaseError> {
    prop_assert!(!msg.contains('\n'), "multi-line error: {msg}");
    prop_assert!(
        msg.contains(&root.display().to_string()),
        "error names no file under {}: {msg}",
        root.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// IDX.

/// A valid IDX file of unsigned bytes with dimensions `dims`.
fn idx_bytes(dims: &[u32], fill: u8) -> Vec<u8> {
    let mut b = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    let n: u32 = dims.iter().product();
    b.extend((0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(fill) % 10));
    b
}

/// Small valid IDX files: labels `[n]` or images `[n, h, w]`.
fn valid_idx() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (0u32..40, any::<u8>()).prop_map(|(n, f)| idx_bytes(&[n], f)),
        (0u32..6, 1u32..6, 1u32..6, any::<u8>()).prop_map(|(n, h, w, f)| idx_bytes(&[n, h, w], f)),
    ]
}

/// What `parse` promises on success, and on any header announcing more bytes than
/// are there: an error rather than an allocation of the announced size.
fn check_idx(bytes: &[u8]) -> Result<(), TestCaseError> {
    match idx::parse(bytes) {
        Ok(array) => {
            let n: usize = array.dims.iter().product();
            prop_assert_eq!(array.data.len(), n);
            prop_assert_eq!(bytes.len(), 4 + 4 * array.dims.len() + n);
            let _ = idx::check_labels(&array, 10);
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(!msg.is_empty() && !msg.contains('\n'), "{msg}");
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn idx_parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        check_idx(&bytes)?;
    }

    #[test]
    fn idx_parse_never_panics_on_mutated_files(base in valid_idx(), edits in mutations()) {
        check_idx(&mutate(&base, &edits))?;
    }

    /// Headers of any dimensions (huge ones included) over a short payload.
    #[test]
    fn idx_parse_rejects_sizes_the_payload_lacks(
        dims in prop::collection::vec(extreme_u32(), 1..5),
        payload in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut bytes = vec![0, 0, 8, dims.len() as u8];
        for d in &dims {
            bytes.extend(d.to_be_bytes());
        }
        bytes.extend(&payload);
        let announced = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d as usize));
        match idx::parse(&bytes) {
            Ok(array) => prop_assert_eq!(Some(array.data.len()), announced),
            Err(e) => prop_assert!(announced != Some(payload.len()), "{e}"),
        }
    }
}

/// Write MNIST's four files under `<dir>/mnist/` (valid small IDX files but for
/// `which`, replaced by `damaged`; gzipped when `gz`).
fn write_mnist(dir: &Path, which: usize, damaged: &[u8], gz: bool) {
    let mnist = dir.join("mnist");
    std::fs::create_dir_all(&mnist).unwrap();
    let files = [
        ("train-images-idx3-ubyte", idx_bytes(&[3, 2, 2], 1)),
        ("train-labels-idx1-ubyte", idx_bytes(&[3], 2)),
        ("t10k-images-idx3-ubyte", idx_bytes(&[2, 2, 2], 3)),
        ("t10k-labels-idx1-ubyte", idx_bytes(&[2], 4)),
    ];
    for (i, (name, bytes)) in files.iter().enumerate() {
        let bytes = if i == which { damaged } else { bytes };
        if gz {
            std::fs::write(mnist.join(format!("{name}.gz")), gzip(bytes)).unwrap();
        } else {
            std::fs::write(mnist.join(name), bytes).unwrap();
        }
    }
}

proptest! {
    #![proptest_config(cases(64))]

    /// `data::load("mnist")` over generated files, one of them damaged, raw or
    /// gzipped, or a damaged gzip stream: an error naming the file (these are not
    /// the official files, so it never succeeds).
    #[test]
    fn mnist_load_never_panics_on_damaged_files(
        which in 0usize..4,
        base in valid_idx(),
        edits in mutations(),
        mode in 0u8..3,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let damaged = mutate(&base, &edits);
        match mode {
            0 => write_mnist(tmp.path(), which, &damaged, false),
            1 => write_mnist(tmp.path(), which, &damaged, true),
            _ => {
                // The gzip stream itself damaged.
                write_mnist(tmp.path(), 4, &[], true);
                let name = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                    "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"][which];
                let path = tmp.path().join("mnist").join(format!("{name}.gz"));
                let gz = std::fs::read(&path).unwrap();
                std::fs::write(&path, mutate(&gz, &edits)).unwrap();
                if let Ok(bytes) = idx::read_file(&path) {
                    check_idx(&bytes)?;
                }
            }
        }
        let msg = data::load("mnist", tmp.path()).unwrap_err().to_string();
        assert_one_line_naming(&msg, tmp.path())?;
    }
}

// ---------------------------------------------------------------------------
// CIFAR.

/// `n` valid CIFAR records with `label_bytes` label bytes.
fn cifar_records(n: usize, label_bytes: usize, seed: u8) -> Vec<u8> {
    let mut b = Vec::new();
    for i in 0..n {
        for _ in 0..label_bytes {
            b.push((i as u8).wrapping_add(seed) % 10);
        }
        b.extend((0..data::cifar::PIXELS).map(|p| (p as u8).wrapping_add(seed)));
    }
    b
}

/// The member folder and member names of a CIFAR set, and its label bytes.
fn cifar_layout(name: &str) -> (&'static str, &'static str, &'static [&'static str], usize) {
    if name == "cifar10" {
        (
            "cifar-10",
            "cifar-10-batches-bin",
            &[
                "data_batch_1.bin",
                "data_batch_2.bin",
                "data_batch_3.bin",
                "data_batch_4.bin",
                "data_batch_5.bin",
                "test_batch.bin",
            ],
            1,
        )
    } else {
        ("cifar-100", "cifar-100-binary", &["train.bin", "test.bin"], 2)
    }
}

/// A `.tar` holding `members` (path, bytes) as written by `tar::Builder`.
fn tar_bytes(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, &bytes[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

/// The members of a small valid-looking archive of `name` (2 records a member).
fn cifar_members(name: &str, prefix: &str) -> Vec<(String, Vec<u8>)> {
    let (_, member_dir, members, label_bytes) = cifar_layout(name);
    members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            (
                format!("{prefix}{member_dir}/{m}"),
                cifar_records(2, label_bytes, i as u8),
            )
        })
        .collect()
}

/// Load `name` from `tmp` (without checksums, with them when `verify`): `Ok` is
/// acceptable, an error must be one line naming a file under `tmp`.
fn check_cifar(name: &str, tmp: &Path, verify: bool) -> Result<(), TestCaseError> {
    match load_cifar(name, tmp, verify) {
        Ok((train, test)) => {
            prop_assert_eq!(train.images.size()[1..].to_vec(), vec![3, 32, 32]);
            prop_assert_eq!(test.images.size()[1..].to_vec(), vec![3, 32, 32]);
        }
        Err(e) => assert_one_line_naming(&e.to_string(), tmp)?,
    }
    Ok(())
}

/// A tar header with arbitrary fields (checksum kept valid, so the reader looks
/// past it), then `data`.
#[derive(Debug, Clone)]
struct RawEntry {
    /// 0: GNU, 1: ustar, 2: old-style header.
    format: u8,
    /// One of the member paths, or arbitrary bytes.
    path: Vec<u8>,
    /// Entry type byte (regular, directory, GNU long name, PAX, sparse...).
    kind: u8,
    /// Declared size.
    size: u64,
    /// Further bytes of the header overwritten, before the checksum.
    edits: Vec<(Index, u8)>,
    /// Bytes after the header.
    data: Vec<u8>,
}

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    let path = prop_oneof![
        Just(b"cifar-10-batches-bin/data_batch_1.bin".to_vec()),
        Just(b"./cifar-10-batches-bin/test_batch.bin".to_vec()),
        Just(b"cifar-100-binary/train.bin".to_vec()),
        prop::collection::vec(any::<u8>(), 0..100),
    ];
    let kind = prop_oneof![
        Just(b'0'),
        Just(b'5'),
        Just(b'L'),
        Just(b'K'),
        Just(b'x'),
        Just(b'g'),
        Just(b'S'),
        Just(b'1'),
        Just(b'2'),
        Just(0u8),
        any::<u8>(),
    ];
    let size = prop_oneof![0u64..8192, extreme_u64()];
    (
        0u8..3,
        path,
        kind,
        size,
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..8),
        prop::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(|(format, path, kind, size, edits, data)| RawEntry {
            format,
            path,
            kind,
            size,
            edits,
            data,
        })
}

/// The bytes of `entries`, then the end-of-archive blocks if `end`.
fn raw_tar(entries: &[RawEntry], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut header = match e.format {
            0 => tar::Header::new_gnu(),
            1 => tar::Header::new_ustar(),
            _ => tar::Header::new_old(),
        };
        header.set_mode(0o644);
        header.set_size(e.size);
        header.set_entry_type(tar::EntryType::new(e.kind));
        let bytes = header.as_mut_bytes();
        let n = e.path.len().min(100);
        bytes[..n].copy_from_slice(&e.path[..n]);
        for (i, v) in &e.edits {
            // Everything but the checksum field (148..156), set below.
            let at = i.index(512 - 8);
            bytes[if at >= 148 { at + 8 } else { at }] = *v;
        }
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    if end {
        out.extend([0u8; 1024]);
    }
    out
}

proptest! {
    #![proptest_config(cases(64))]

    /// The extracted folder, one member arbitrary bytes or a mutated small valid one.
    #[test]
    fn cifar_folder_never_panics_on_damaged_members(
        cifar100 in any::<bool>(),
        which in any::<Index>(),
        arbitrary in prop::collection::vec(any::<u8>(), 0..8000),
        use_arbitrary in any::<bool>(),
        edits in mutations(),
        verify in any::<bool>(),
    ) {
        let name = if cifar100 { "cifar100" } else { "cifar10" };
        let (folder, member_dir, members, label_bytes) = cifar_layout(name);
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(folder).join(member_dir);
        std::fs::create_dir_all(&dir).unwrap();
        let which = which.index(members.len());
        for (i, m) in members.iter().enumerate() {
            let valid = cifar_records(3, label_bytes, i as u8);
            let bytes = match (i == which, use_arbitrary) {
                (false, _) => valid,
                (true, true) => arbitrary.clone(),
                (true, false) => mutate(&valid, &edits),
            };
            std::fs::write(dir.join(m), bytes).unwrap();
        }
        check_cifar(name, tmp.path(), verify)?;
    }

    /// The `.tar.gz`: a small valid archive with its tar bytes or its gzip stream
    /// mutated, or arbitrary bytes.
    #[test]
    fn cifar_archive_never_panics_on_damaged_archives(
        cifar100 in any::<bool>(),
        prefix in prop_oneof![Just(""), Just("./")],
        edits in mutations(),
        mode in 0u8..3,
        arbitrary in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let name = if cifar100 { "cifar100" } else { "cifar10" };
        let (folder, ..) = cifar_layout(name);
        let tar = tar_bytes(&cifar_members(name, prefix));
        let archive = match mode {
            0 => gzip(&mutate(&tar, &edits)),
            1 => mutate(&gzip(&tar), &edits),
            _ => arbitrary,
        };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let file = if cifar100 { "cifar-100-binary.tar.gz" } else { "cifar-10-binary.tar.gz" };
        std::fs::write(dir.join(file), archive).unwrap();
        check_cifar(name, tmp.path(), false)?;
    }

    /// The `.tar.gz`: entries whose headers have arbitrary types, paths and
    /// (possibly huge) sizes, with valid checksums, after the valid members.
    #[test]
    fn cifar_archive_never_panics_on_odd_tar_headers(
        cifar100 in any::<bool>(),
        entries in prop::collection::vec(raw_entry(), 1..4),
        before in any::<bool>(),
        end in any::<bool>(),
    ) {
        let name = if cifar100 { "cifar100" } else { "cifar10" };
        let (folder, ..) = cifar_layout(name);
        let valid = tar_bytes(&cifar_members(name, ""));
        // The valid members without their end-of-archive blocks, then the odd
        // entries (or the odd entries first).
        let members = &valid[..valid.len() - 1024];
        let odd = raw_tar(&entries, end);
        let tar = if before { [&odd[..], members].concat() } else { [members, &odd[..]].concat() };
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        let file = if cifar100 { "cifar-100-binary.tar.gz" } else { "cifar-10-binary.tar.gz" };
        std::fs::write(dir.join(file), gzip(&tar)).unwrap();
        check_cifar(name, tmp.path(), false)?;
    }
}

// ---------------------------------------------------------------------------
// Image folders.

/// A small valid PNG (RGB gradient).
fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 40) as u8, (y * 30) as u8, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A small valid JPEG (grey or RGB).
fn jpeg_bytes(w: u32, h: u32, grey: bool) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    if grey {
        image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 9 + y * 5) as u8]))
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
    } else {
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 9) as u8, (y * 5) as u8, 90]))
            .write_to(&mut out, image::ImageFormat::Jpeg)
            .unwrap();
    }
    out.into_inner()
}

/// `png` with its IHDR width and height set to `w`, `h` and the chunk's CRC made
/// right again, so that the decoder believes them.
fn png_with_size(png: &[u8], w: u32, h: u32) -> Vec<u8> {
    let mut b = png.to_vec();
    // Signature (8), length (4), "IHDR" (4), then width and height.
    assert_eq!(&b[12..16], b"IHDR");
    b[16..20].copy_from_slice(&w.to_be_bytes());
    b[20..24].copy_from_slice(&h.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&b[12..29]);
    b[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    b
}

/// `jpeg` with the height and width of its first SOF0 segment set to `h`, `w`.
fn jpeg_with_size(jpeg: &[u8], w: u16, h: u16) -> Vec<u8> {
    let mut b = jpeg.to_vec();
    if let Some(at) = b.windows(2).position(|m| m == [0xff, 0xc0]) {
        // Marker (2), length (2), precision (1), then height and width.
        if at + 9 <= b.len() {
            b[at + 5..at + 7].copy_from_slice(&h.to_be_bytes());
            b[at + 7..at + 9].copy_from_slice(&w.to_be_bytes());
        }
    }
    b
}

/// The content of one damaged image file.
fn damaged_image() -> impl Strategy<Value = Vec<u8>> {
    let base = prop_oneof![
        (1u32..9, 1u32..9).prop_map(|(w, h)| png_bytes(w, h)),
        (1u32..17, 1u32..17, any::<bool>()).prop_map(|(w, h, g)| jpeg_bytes(w, h, g)),
    ];
    prop_oneof![
        3 => (base.clone(), mutations()).prop_map(|(b, e)| mutate(&b, &e)),
        1 => prop::collection::vec(any::<u8>(), 0..256),
        1 => ((1u32..9, 1u32..9), extreme_u32(), extreme_u32(), prop::option::of(mutations()))
            .prop_map(|((w0, h0), w, h, e)| {
                let b = png_with_size(&png_bytes(w0, h0), w, h);
                match e {
                    Some(e) => mutate(&b, &e),
                    None => b,
                }
            }),
        1 => ((1u32..17, 1u32..17), any::<u16>(), any::<u16>())
            .prop_map(|((w0, h0), w, h)| jpeg_with_size(&jpeg_bytes(w0, h0, false), w, h)),
    ]
}

proptest! {
    #![proptest_config(cases(64))]

    /// `train/{a,b}/` and `val/{a,b}/` of valid images but for one damaged file
    /// (named `.png` or `.jpg` whatever it holds).
    #[test]
    fn image_folder_never_panics_on_damaged_images(
        damaged in damaged_image(),
        slot in 0usize..4,
        ext in prop_oneof![Just("png"), Just("jpg"), Just("JPEG")],
        size in 1usize..12,
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for (i, (split, class)) in [("train", "a"), ("train", "b"), ("val", "a"), ("val", "b")]
            .into_iter()
            .enumerate()
        {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("good.png"), png_bytes(5, 4)).unwrap();
            std::fs::write(dir.join("good.jpg"), jpeg_bytes(4, 6, i % 2 == 0)).unwrap();
            if i == slot {
                std::fs::write(dir.join(format!("odd.{ext}")), &damaged).unwrap();
            }
        }
        match load_image_folder(root, size) {
            Ok((train, test)) => {
                // The odd file decoded after all: it is one more image of its split.
                prop_assert_eq!(train.len(), 4 + usize::from(slot < 2));
                prop_assert_eq!(test.len(), 4 + usize::from(slot >= 2));
                prop_assert_eq!(test.images.size()[1..].to_vec(), vec![3, size as i64, size as i64]);
            }
            Err(e) => assert_one_line_naming(&e.to_string(), root)?,
        }
    }
}

// ---------------------------------------------------------------------------
// Config.

/// TOML-ish text: fragments of real config syntax glued together.
fn tomlish() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        Just("[data]\n".to_string()),
        Just("[model]\n".to_string()),
        Just("[objective]\n".to_string()),
        Just("[optim]\n".to_string()),
        Just("[train]\n".to_string()),
        Just("[data.augment]\n".to_string()),
        Just("batch_size = ".to_string()),
        Just("hidden = [".to_string()),
        Just("d0 = ".to_string()),
        Just("epochs = ".to_string()),
        Just("method = \"sll\"\n".to_string()),
        Just("name = \"x\"\n".to_string()),
        Just("= ".to_string()),
        Just("\"".to_string()),
        Just("]\n".to_string()),
        Just("\n".to_string()),
        Just("{ }".to_string()),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("1e400".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("18446744073709551616".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        "[a-z_.]{1,12}",
        any::<String>(),
    ];
    prop::collection::vec(fragment, 0..24).prop_map(|f| f.concat())
}

/// A valid config text: the default preset resolved, or a shipped preset.
fn valid_config_text() -> String {
    Config::load(None, &[]).unwrap().to_toml()
}

/// Parse `text`; on success validation and serialisation must not panic either.
fn check_config_text(text: &str) {
    if let Ok(config) = Config::from_toml(text, "prop.toml") {
        let _ = config.validate();
        for classes in [0, 1, 10, -1] {
            let _ = config.validate_for_classes(classes);
        }
        let again = config.to_toml();
        let _ = Config::from_toml(&again, "again.toml");
    }
}

/// A `--set` string: a real or odd key, `=`, a value of any kind.
fn set_string() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("data.batch_size"),
        Just("data.eval_batch_size"),
        Just("data.workers"),
        Just("data.train_subset"),
        Just("data.mean"),
        Just("data.std"),
        Just("data.augment"),
        Just("data.augment.crop_size"),
        Just("data.image_size"),
        Just("model.hidden"),
        Just("model.channels"),
        Just("model.pool_after"),
        Just("model.block_size"),
        Just("model.width"),
        Just("model.depth"),
        Just("model.heads"),
        Just("model.patch"),
        Just("objective.d0"),
        Just("objective.tau"),
        Just("objective.head"),
        Just("optim.lr"),
        Just("optim.warmup_epochs"),
        Just("train.epochs"),
        Just("train.method"),
        Just("train.threads"),
        Just("train.stages"),
        Just("train.replicas"),
        Just("train.pipeline"),
        Just("data"),
        Just("train"),
        Just(""),
        Just("."),
        Just("a..b"),
        Just("data.batch_size.x"),
    ]
    .prop_map(str::to_string);
    let key = prop_oneof![4 => key, 1 => any::<String>()];
    let value = prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("1".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("1e308".to_string()),
        Just("[]".to_string()),
        Just("[0]".to_string()),
        Just("[0, 0, 0]".to_string()),
        Just("{}".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("\"\"".to_string()),
        Just("true".to_string()),
        Just("projection".to_string()),
        Just("threads".to_string()),
        Just("mpi".to_string()),
        Just("bp".to_string()),
        Just("9223372036854775807".to_string()),
        Just("18446744073709551615".to_string()),
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| v.to_string()),
        prop::collection::vec(any::<i64>(), 0..5).prop_map(|v| format!("{v:?}")),
        any::<String>(),
    ];
    prop_oneof![
        6 => (key, value).prop_map(|(k, v)| format!("{k}={v}")),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn config_from_toml_never_panics_on_arbitrary_text(text in any::<String>()) {
        check_config_text(&text);
    }

    #[test]
    fn config_from_toml_never_panics_on_tomlish_text(text in tomlish()) {
        check_config_text(&text);
    }

    #[test]
    fn config_from_toml_never_panics_on_mutated_configs(edits in mutations()) {
        let text = mutate(valid_config_text().as_bytes(), &edits);
        check_config_text(&String::from_utf8_lossy(&text));
    }

    #[test]
    fn config_load_never_panics_on_arbitrary_sets(sets in prop::collection::vec(set_string(), 1..4)) {
        if let Ok(config) = Config::load(None, &sets) {
            for classes in [1, 10] {
                let _ = config.validate_for_classes(classes);
            }
            let _ = Config::from_toml(&config.to_toml(), "again.toml");
        }
    }
}

// ---------------------------------------------------------------------------
// Checkpoints.

/// A small valid safetensors file: two F32 tensors and sll-like metadata.
fn valid_safetensors() -> Vec<u8> {
    let a: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let b: Vec<u8> = [0.5f32].iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = vec![
        (
            "block0.layer0.linear.weight".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 3], &a).unwrap(),
        ),
        (
            "block0.head.bias".to_string(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1], &b).unwrap(),
        ),
    ];
    let metadata: HashMap<String, String> = [
        ("projection_seeds".to_string(), "[1,2]".to_string()),
        ("epoch".to_string(), "3".to_string()),
        ("config".to_string(), "[train]\nepochs = 3\n".to_string()),
    ]
    .into();
    safetensors::serialize(views, &Some(metadata)).unwrap()
}

/// A safetensors file whose JSON header is built from arbitrary parts.
fn odd_safetensors() -> impl Strategy<Value = Vec<u8>> {
    let dtype = prop_oneof![
        Just("F32".to_string()),
        Just("F16".to_string()),
        Just("BOOL".to_string()),
        Just("U8".to_string()),
        Just("I64".to_string()),
        Just("F64".to_string()),
        Just("X".to_string()),
        "[A-Z0-9]{0,4}",
    ];
    let dim = prop_oneof![0u64..8, extreme_u64()];
    let tensor = (
        "[a-z._]{0,8}",
        dtype,
        prop::collection::vec(dim, 0..4),
        extreme_u64(),
        extreme_u64(),
    )
        .prop_map(|(name, dtype, shape, start, end)| {
            format!(r#""{name}":{{"dtype":"{dtype}","shape":{shape:?},"data_offsets":[{start},{end}]}}"#)
        });
    let metadata = prop_oneof![
        Just(String::new()),
        Just(r#""__metadata__":{"epoch":"1"},"#.to_string()),
        Just(r#""__metadata__":{"epoch":1},"#.to_string()),
        Just(r#""__metadata__":null,"#.to_string()),
        Just(r#""__metadata__":[],"#.to_string()),
        "[ -~]{0,12}".prop_map(|s| format!(r#""__metadata__":{{"k":"{s}"}},"#)),
    ];
    (
        metadata,
        prop::collection::vec(tensor, 0..3),
        prop::collection::vec(any::<u8>(), 0..64),
        prop_oneof![Just(None), extreme_u64().prop_map(Some)],
    )
        .prop_map(|(metadata, tensors, payload, length)| {
            let header = format!("{{{metadata}{}}}", tensors.join(","));
            let n = length.unwrap_or(header.len() as u64);
            let mut b = n.to_le_bytes().to_vec();
            b.extend(header.as_bytes());
            b.extend(payload);
            b
        })
}

/// `read_metadata` on `bytes` written to a file: `Ok` or an error naming the file.
fn check_checkpoint(bytes: &[u8]) -> Result<(), TestCaseError> {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    std::fs::write(&path, bytes).unwrap();
    if let Err(e) = sll::checkpoint::read_metadata(&path) {
        let msg = e.to_string();
        prop_assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(256))]

    #[test]
    fn checkpoint_metadata_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        check_checkpoint(&bytes)?;
    }

    #[test]
    fn checkpoint_metadata_never_panics_on_mutated_files(edits in mutations()) {
        check_checkpoint(&mutate(&valid_safetensors(), &edits))?;
    }

    #[test]
    fn checkpoint_metadata_never_panics_on_odd_headers(bytes in odd_safetensors()) {
        check_checkpoint(&bytes)?;
    }
}

// ---------------------------------------------------------------------------
// Fixed cases.

#[test]
fn valid_inputs_parse() {
    // The starting points of the mutations are valid, so the mutations start
    // from something the parsers accept.
    let array = idx::parse(&idx_bytes(&[3, 2, 2], 0)).unwrap();
    assert_eq!(array.dims, [3, 2, 2]);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("model.safetensors");
    std::fs::write(&path, valid_safetensors()).unwrap();
    let metadata = sll::checkpoint::read_metadata(&path).unwrap();
    assert_eq!(metadata["epoch"], "3");
    Config::from_toml(&valid_config_text(), "x").unwrap();
    image::load_from_memory(&png_bytes(5, 4)).unwrap();
    image::load_from_memory(&jpeg_bytes(4, 6, true)).unwrap();
    image::load_from_memory(&png_with_size(&png_bytes(5, 4), 5, 4)).unwrap();
    // The generated CIFAR archive reads back to the records it holds (the
    // counts are not the official ones, which the error says).
    let dir = tmp.path().join("cifar-100");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("cifar-100-binary.tar.gz"),
        gzip(&tar_bytes(&cifar_members("cifar100", ""))),
    )
    .unwrap();
    let msg = load_cifar("cifar100", tmp.path(), false).unwrap_err().to_string();
    assert!(msg.contains("2 records, expected 50000"), "{msg}");
}

/// IDX headers announcing far more than they hold, up to 2^32 per dimension and
/// overflowing products, are errors straight away (no allocation of that size).
#[test]
fn huge_idx_sizes_are_errors() {
    let header = |dims: &[u32]| {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend(d.to_be_bytes());
        }
        b.extend([1, 2, 3]);
        b
    };
    for dims in [
        &[1u32 << 31][..],
        &[u32::MAX, u32::MAX, u32::MAX],
        &[60000, 1 << 20, 1 << 20],
    ] {
        let msg = idx::parse(&header(dims)).unwrap_err().to_string();
        assert!(msg.contains("truncated") || msg.contains("too large"), "{msg}");
    }
}

/// Found by the properties above: library messages quoted in an error may hold line
/// breaks (the tar reader quotes an entry's name, the JPEG decoder ends its message
/// with one); the readers' errors stay on one line.
#[test]
fn quoted_library_messages_stay_on_one_line() {
    // A tar entry named `bad\nname` whose checksum field is not a number.
    let tmp = tempfile::tempdir().unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    let bytes = header.as_mut_bytes();
    bytes[..8].copy_from_slice(b"bad\nname");
    bytes[148..156].copy_from_slice(b"zzzzzzz\0");
    let mut tar = header.as_bytes().to_vec();
    tar.extend([0u8; 1024]);
    let dir = tmp.path().join("cifar-10");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cifar-10-binary.tar.gz"), gzip(&tar)).unwrap();
    let msg = load_cifar("cifar10", tmp.path(), false).unwrap_err().to_string();
    assert!(
        msg.contains("truncated or corrupt archive") && msg.contains("bad\\nname"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");

    // Truncated JPEGs (named .png) in an image folder.
    let jpeg = jpeg_bytes(16, 16, false);
    let mut errors = 0;
    for cut in [jpeg.len() / 3, jpeg.len() / 2, jpeg.len() * 3 / 4, jpeg.len() - 4] {
        let tmp = tempfile::tempdir().unwrap();
        for split in ["train", "val"] {
            let class = tmp.path().join(split).join("a");
            std::fs::create_dir_all(&class).unwrap();
            std::fs::write(class.join("x.png"), &jpeg[..cut]).unwrap();
        }
        if let Err(e) = load_image_folder(tmp.path(), 8) {
            let msg = e.to_string();
            assert!(msg.contains("train/a/x.png: cannot decode the image"), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
            errors += 1;
        }
    }
    assert!(errors > 0, "every truncated JPEG decoded");
}
