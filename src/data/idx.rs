//! Reader for the IDX format in which MNIST and Fashion-MNIST are distributed
//! (layout described at <http://yann.lecun.com/exdb/mnist/>).
//!
//! An IDX file is a 4-byte magic number `00 00 <type> <ndims>`, then `ndims`
//! big-endian `u32` dimension sizes, then the payload in row-major order. Only
//! the unsigned-byte element type (`0x08`) is used by the datasets we read, so it
//! is the only one supported.

use anyhow::{anyhow, Result};
use flate2::read::MultiGzDecoder;
use std::fmt;
use std::io::Read;
use std::path::Path;

/// The IDX element-type code of unsigned bytes, the only type we read.
const TYPE_U8: u8 = 0x08;

/// The two bytes every gzip stream starts with, used to recognise compressed
/// files whatever their name.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Parsed IDX file: its dimension sizes and its raw `u8` payload (row-major),
/// kept as bytes so that the caller decides how to turn it into tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Size of each dimension, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// The payload, `dims.iter().product()` bytes long.
    pub data: Vec<u8>,
}

/// Why bytes are not a valid IDX array of unsigned bytes, or why a label array
/// is unusable. Its `Display` is one line without the file name, which callers
/// add since only they know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdxError {
    /// Fewer bytes than the header announces (magic number plus dimension sizes).
    ShortHeader {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes present.
        got: usize,
    },
    /// The first two bytes are not `00 00`: this is not an IDX file.
    BadMagic([u8; 2]),
    /// The element type is not unsigned byte (`0x08`).
    UnsupportedType(u8),
    /// The header announces zero dimensions.
    NoDimensions,
    /// The product of the dimension sizes does not fit in memory sizes.
    TooLarge,
    /// The payload is shorter than the product of the dimension sizes.
    Truncated {
        /// Payload bytes the dimensions call for.
        expected: usize,
        /// Payload bytes present.
        got: usize,
    },
    /// The payload is longer than the product of the dimension sizes.
    TrailingBytes {
        /// Payload bytes the dimensions call for.
        expected: usize,
        /// Payload bytes present.
        got: usize,
    },
    /// A label array does not have exactly one dimension.
    LabelsNot1d(Vec<usize>),
    /// A label is not below the number of classes.
    LabelOutOfRange {
        /// Position of the first offending label.
        index: usize,
        /// Its value.
        value: u8,
        /// Number of classes of the dataset.
        classes: usize,
    },
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdxError::ShortHeader { needed, got } => {
                write!(f, "truncated IDX header ({got} bytes, the header needs {needed})")
            }
            IdxError::BadMagic([a, b]) => write!(
                f,
                "wrong magic number (starts with {a:02x} {b:02x}, expected 00 00): not an IDX file"
            ),
            IdxError::UnsupportedType(t) => write!(
                f,
                "unsupported IDX element type 0x{t:02x} (only unsigned byte, 0x08, is supported)"
            ),
            IdxError::NoDimensions => write!(f, "IDX header announces zero dimensions"),
            IdxError::TooLarge => write!(f, "IDX dimensions are too large to hold in memory"),
            IdxError::Truncated { expected, got } => write!(
                f,
                "truncated IDX payload ({got} bytes, the dimensions call for {expected})"
            ),
            IdxError::TrailingBytes { expected, got } => write!(
                f,
                "trailing bytes after the IDX payload ({got} bytes, the dimensions call for {expected})"
            ),
            IdxError::LabelsNot1d(dims) => {
                write!(f, "label array has dimensions {dims:?}, expected one dimension")
            }
            IdxError::LabelOutOfRange {
                index,
                value,
                classes,
            } => write!(
                f,
                "label {value} at index {index} is out of range (the dataset has {classes} classes)"
            ),
        }
    }
}

impl std::error::Error for IdxError {}

/// Parse IDX bytes (already decompressed): magic `00 00 08 <ndims>`, `ndims`
/// big-endian `u32` dimension sizes, then exactly `product(dims)` payload bytes.
/// A short payload is reported as truncated, a long one as trailing bytes, and
/// any element type other than unsigned byte as unsupported.
pub fn parse(bytes: &[u8]) -> Result<IdxArray, IdxError> {
    if bytes.len() < 4 {
        return Err(IdxError::ShortHeader {
            needed: 4,
            got: bytes.len(),
        });
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(IdxError::BadMagic([bytes[0], bytes[1]]));
    }
    if bytes[2] != TYPE_U8 {
        return Err(IdxError::UnsupportedType(bytes[2]));
    }
    let ndims = usize::from(bytes[3]);
    if ndims == 0 {
        return Err(IdxError::NoDimensions);
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(IdxError::ShortHeader {
            needed: header,
            got: bytes.len(),
        });
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or(IdxError::TooLarge)?;
    let payload = &bytes[header..];
    match payload.len().cmp(&expected) {
        std::cmp::Ordering::Less => Err(IdxError::Truncated {
            expected,
            got: payload.len(),
        }),
        std::cmp::Ordering::Greater => Err(IdxError::TrailingBytes {
            expected,
            got: payload.len(),
        }),
        std::cmp::Ordering::Equal => Ok(IdxArray {
            dims,
            data: payload.to_vec(),
        }),
    }
}

/// Check that `labels` is one-dimensional and every label is below `classes`,
/// so that a corrupt label file is caught at load time rather than as an
/// out-of-range index deep inside a loss function.
pub fn check_labels(labels: &IdxArray, classes: usize) -> Result<(), IdxError> {
    if labels.dims.len() != 1 {
        return Err(IdxError::LabelsNot1d(labels.dims.clone()));
    }
    match labels.data.iter().position(|&v| usize::from(v) >= classes) {
        Some(index) => Err(IdxError::LabelOutOfRange {
            index,
            value: labels.data[index],
            classes,
        }),
        None => Ok(()),
    }
}

/// Decompress a whole gzip stream held in memory (all members, as `gzip -d`
/// does); shared by [`read_file`] and the downloader, which checks what it
/// received before writing it.
pub(crate) fn gunzip(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(4));
    MultiGzDecoder::new(compressed).read_to_end(&mut out)?;
    Ok(out)
}

/// Whether the file at `path`, whose bytes are `raw`, is gzip-compressed: its
/// name ends in `.gz` or its bytes start with the gzip magic.
pub(crate) fn is_gzip(path: &Path, raw: &[u8]) -> bool {
    path.extension().is_some_and(|e| e == "gz") || raw.starts_with(&GZIP_MAGIC)
}

/// Read a file and return its decompressed bytes: it is gunzipped when its name
/// ends in `.gz` or its bytes start with the gzip magic, and returned as is
/// otherwise. Errors name the file (a corrupt gzip stream is reported as "not a
/// valid gzip file").
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    read_file_advising(path, "the file is corrupt: delete it and download it again")
}

/// [`read_file`], with `advice` (what to do about a corrupt file) ending the
/// message of a gzip error, so that dataset loading can name its own command.
pub(crate) fn read_file_advising(path: &Path, advice: &str) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| anyhow!("{}: cannot read the file ({e})", path.display()))?;
    if !is_gzip(path, &raw) {
        return Ok(raw);
    }
    gunzip(&raw).map_err(|e| anyhow!("{}: not a valid gzip file ({e}); {advice}", path.display()))
}
