//! IDX files (the MNIST format): unsigned-byte images (idx3) and labels (idx1).
//!
//! An IDX file is a magic number `00 00 TT NN` (TT the data type, NN the
//! number of dimensions), NN big-endian u32 sizes, then the data. Files may be
//! gzip-compressed; compression is decided from the first two bytes (`1F 8B`),
//! never from the file name. Nothing is allocated from the header's sizes.
//! Their product is computed with checked multiplication, and a raw file's
//! length is compared with it before reading. A compressed stream is read to
//! at most the declared size plus one byte; any bytes beyond are counted, not
//! stored.
//!
//! Label values become classes in sorted order of the distinct values that
//! occur: labels 0..9 are classes 0..9, and labels {0, 1, 200} are classes
//! 0, 1, 2 named "0", "1" and "200".

use anyhow::{Context, Result, bail};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// Directory where the Debian package `dataset-fashion-mnist` installs Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// An IDX array of unsigned bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxArray {
    /// Sizes from the header, outermost first.
    pub dims: Vec<usize>,
    /// The data in file order.
    pub data: Vec<u8>,
    /// Whether the file was gzip-compressed.
    pub gzip: bool,
}

/// Images and their labels, as read.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// The images file.
    pub images_path: PathBuf,
    /// The labels file.
    pub labels_path: PathBuf,
    /// Number of images.
    pub count: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Pixels `[count, height, width]`, row-major.
    pub pixels: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
}

/// The files of an IDX directory.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxDirFiles {
    /// Training images.
    pub train_images: PathBuf,
    /// Training labels.
    pub train_labels: PathBuf,
    /// Test images and labels, when both are present.
    pub test: Option<(PathBuf, PathBuf)>,
}

/// Reads an IDX file of unsigned bytes, raw or gzip-compressed.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let name = path.display();
    let file = File::open(path).with_context(|| format!("cannot open {name}"))?;
    let length = file
        .metadata()
        .with_context(|| format!("cannot read {name}"))?
        .len();
    if length == 0 {
        bail!("{name}: empty file (0 bytes); the download or copy probably failed");
    }
    let mut reader = BufReader::new(file);
    let mut signature = [0u8; 2];
    let signature_len =
        read_full(&mut reader, &mut signature).with_context(|| format!("cannot read {name}"))?;
    let start = io::Cursor::new(signature[..signature_len].to_vec());
    let whole = start.chain(reader);
    let result = if signature == [0x1F, 0x8B] {
        parse(MultiGzDecoder::new(whole), None, true)
    } else {
        parse(whole, Some(length), false)
    };
    result.map_err(|error| match error {
        ParseError::Format(message) => anyhow::anyhow!("{name}: {message}"),
        ParseError::Io(error) if signature == [0x1F, 0x8B] => anyhow::anyhow!(
            "{name} starts with the gzip signature 1F 8B but is not valid gzip data ({error}); \
             the download was probably cut short or corrupted"
        ),
        ParseError::Io(error) => anyhow::anyhow!("cannot read {name}: {error}"),
    })
}

enum ParseError {
    Format(String),
    Io(io::Error),
}

impl From<io::Error> for ParseError {
    fn from(error: io::Error) -> Self {
        ParseError::Io(error)
    }
}

fn format_error(message: String) -> ParseError {
    ParseError::Format(message)
}

/// Parses an IDX stream. `length` is the file length for raw files; it is
/// unknown for compressed ones.
fn parse(mut reader: impl Read, length: Option<u64>, gzip: bool) -> Result<IdxArray, ParseError> {
    let unit = if gzip {
        "decompressed data has"
    } else {
        "file has"
    };
    let dims = parse_header(&mut reader, gzip, unit)?;
    let header_len = 4 + 4 * dims.len() as u64;

    let shape = dims
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join("×");
    let Some(declared) = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)) else {
        return Err(format_error(format!(
            "the header declares an impossible size: {shape} bytes overflows 64 bits \
             (are the dimensions little-endian? IDX sizes are big-endian)"
        )));
    };
    let hint = little_endian_hint(&dims, declared);
    if let Some(length) = length {
        let available = length - header_len;
        if declared > available {
            return Err(format_error(format!(
                "truncated: header declares {shape} = {declared} data bytes, file has \
                 {available}{hint}"
            )));
        }
    }

    // Reading one byte past the declared size detects trailing data without
    // trusting the header for an allocation.
    let mut data = Vec::new();
    let got = (&mut reader)
        .take(declared.saturating_add(1))
        .read_to_end(&mut data)? as u64;
    if got < declared {
        return Err(format_error(format!(
            "truncated: header declares {shape} = {declared} data bytes, {unit} {got}{hint}"
        )));
    }
    if got > declared {
        let extra = 1 + io::copy(&mut reader, &mut io::sink())?;
        return Err(format_error(format!(
            "{extra} unexpected {} after the data (header declares {shape} = {declared} data \
             bytes, {unit} {}); the file may be damaged or not the file it is named after",
            plural(extra as usize, "byte"),
            declared + extra
        )));
    }
    Ok(IdxArray {
        dims: dims.iter().map(|&d| d as usize).collect(),
        data,
        gzip,
    })
}

/// Reads the magic number and the dimension sizes.
fn parse_header(reader: &mut impl Read, gzip: bool, unit: &str) -> Result<Vec<u64>, ParseError> {
    let mut magic = [0u8; 4];
    let got = read_full(reader, &mut magic)?;
    if magic[..got.min(2)].iter().any(|&b| b != 0) {
        return Err(format_error(describe_bad_start(&magic[..got], gzip)));
    }
    if got < 4 {
        return Err(format_error(format!(
            "incomplete header: need 4 bytes for the magic number, {unit} {got}"
        )));
    }
    check_type(magic[2]).map_err(format_error)?;

    let ndims = magic[3] as usize;
    if ndims == 0 {
        return Err(format_error(
            "the IDX header declares 0 dimensions".to_string(),
        ));
    }
    let mut dim_bytes = vec![0u8; 4 * ndims];
    let got = read_full(reader, &mut dim_bytes)?;
    if got < dim_bytes.len() {
        return Err(format_error(format!(
            "incomplete header: need {} bytes for {ndims} {}, {unit} {}",
            4 + 4 * ndims,
            plural(ndims, "dimension"),
            4 + got
        )));
    }
    let dims = dim_bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as u64)
        .collect();
    Ok(dims)
}

/// Returns a hint for a size mismatch when the dimensions read little-endian
/// would give a different size, or an empty string.
fn little_endian_hint(dims: &[u64], declared: u64) -> String {
    let swapped = dims.iter().try_fold(1u64, |acc, &d| {
        acc.checked_mul((d as u32).swap_bytes() as u64)
    });
    match swapped {
        Some(swapped) if swapped != declared => format!(
            "; read little-endian the sizes would need {swapped} data bytes \
             (IDX sizes are big-endian)"
        ),
        _ => String::new(),
    }
}

fn check_type(code: u8) -> Result<(), String> {
    let name = match code {
        0x08 => return Ok(()),
        0x09 => "int8",
        0x0B => "int16",
        0x0C => "int32",
        0x0D => "float32",
        0x0E => "float64",
        _ => {
            return Err(format!(
                "unknown IDX data type 0x{code:02X}; IDX types are 0x08 to 0x0E"
            ));
        }
    };
    Err(format!(
        "unsupported IDX data type 0x{code:02X} ({name}); only unsigned bytes (0x08) are supported"
    ))
}

fn describe_bad_start(start: &[u8], gzip: bool) -> String {
    let hex: Vec<String> = start.iter().map(|b| format!("{b:02X}")).collect();
    let text: String = start
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
        .collect();
    let shown = format!("{} (\"{text}\")", hex.join(" "));
    if start.starts_with(&[0x1F, 0x8B]) && gzip {
        return format!(
            "the decompressed data starts with {shown}, another gzip signature: the file is \
             compressed twice; decompress it once (gunzip) and try again"
        );
    }
    let lower = text.to_ascii_lowercase();
    if start.first() == Some(&b'<') || lower.starts_with("<!do") || lower.starts_with("<htm") {
        return format!(
            "not an IDX file: starts with {shown}, which looks like an HTML page; the download \
             probably failed"
        );
    }
    let inside = if gzip { " (after decompression)" } else { "" };
    format!(
        "not an IDX file: starts with {shown}{inside}; an IDX file starts with 00 00, a type \
         byte and the number of dimensions"
    )
}

fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        noun.to_string()
    } else {
        format!("{noun}s")
    }
}

/// Returns true when the file at `path` starts with the gzip signature `1F 8B`.
pub fn is_gzip(path: &Path) -> bool {
    let mut signature = [0u8; 2];
    File::open(path)
        .and_then(|mut file| read_full(&mut file, &mut signature))
        .is_ok_and(|n| n == 2 && signature == [0x1F, 0x8B])
}

/// Reads until `buffer` is full or the stream ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// Reads an images file (3 dimensions) and its labels file (1 dimension) and
/// checks that they hold the same number of items.
pub fn read_images(images_path: &Path, labels_path: &Path) -> Result<Images> {
    let images = read_idx(images_path)?;
    if images.dims.len() != 3 {
        bail!(
            "{}: expected an images file with 3 dimensions (idx3), got {} {}",
            images_path.display(),
            images.dims.len(),
            plural(images.dims.len(), "dimension")
        );
    }
    let labels = read_idx(labels_path)?;
    if labels.dims.len() != 1 {
        bail!(
            "{}: expected a labels file with 1 dimension (idx1), got {} {}",
            labels_path.display(),
            labels.dims.len(),
            plural(labels.dims.len(), "dimension")
        );
    }
    let count = images.dims[0];
    if count != labels.dims[0] {
        bail!(
            "images file has {count} items, labels file has {} ({} and {})",
            labels.dims[0],
            images_path.display(),
            labels_path.display()
        );
    }
    if count == 0 || images.dims[1] == 0 || images.dims[2] == 0 {
        bail!(
            "{}: contains no pixels (size {}×{}×{})",
            images_path.display(),
            count,
            images.dims[1],
            images.dims[2]
        );
    }
    Ok(Images {
        images_path: images_path.to_path_buf(),
        labels_path: labels_path.to_path_buf(),
        count,
        height: images.dims[1],
        width: images.dims[2],
        pixels: images.data,
        labels: labels.data,
    })
}

/// Finds the standard file names in an IDX directory: `train-images-idx3-ubyte`
/// and `train-labels-idx1-ubyte` (with `-` or `.` before `idx`, with or without
/// `.gz`), and the same with `t10k` for the test files.
pub fn find_dir_files(dir: &Path) -> Result<IdxDirFiles> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let train_images = find_file(dir, "train", "images", "idx3");
    let train_labels = find_file(dir, "train", "labels", "idx1");
    let (Some(train_images), Some(train_labels)) = (train_images, train_labels) else {
        bail!(
            "{} does not hold the IDX training files: expected train-images-idx3-ubyte and \
             train-labels-idx1-ubyte (or train-images.idx3-ubyte and train-labels.idx1-ubyte, \
             each with or without .gz)",
            dir.display()
        );
    };
    let test_images = find_file(dir, "t10k", "images", "idx3");
    let test_labels = find_file(dir, "t10k", "labels", "idx1");
    let test = test_images.zip(test_labels);
    Ok(IdxDirFiles {
        train_images,
        train_labels,
        test,
    })
}

fn find_file(dir: &Path, part: &str, kind: &str, idx: &str) -> Option<PathBuf> {
    for separator in ['-', '.'] {
        for suffix in ["", ".gz"] {
            let path = dir.join(format!("{part}-{kind}{separator}{idx}-ubyte{suffix}"));
            if path.is_file() {
                return Some(path);
            }
        }
    }
    None
}

/// Class names of IDX labels: the distinct values, sorted, as text.
pub fn label_classes(labels: &[u8]) -> Vec<String> {
    let mut seen = [false; 256];
    for &label in labels {
        seen[label as usize] = true;
    }
    (0..=255u8)
        .filter(|&v| seen[v as usize])
        .map(|v| v.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_overflow_is_caught() {
        let mut bytes = vec![0, 0, 8, 3];
        for _ in 0..3 {
            bytes.extend_from_slice(&0xFFFF_FFFFu32.to_be_bytes());
        }
        let length = bytes.len() as u64;
        let Err(ParseError::Format(message)) = parse(&bytes[..], Some(length), false) else {
            panic!("expected a format error");
        };
        assert!(message.contains("impossible size"), "{message}");
    }

    #[test]
    fn classes_are_sorted_distinct_values() {
        assert_eq!(label_classes(&[200, 0, 1, 0]), vec!["0", "1", "200"]);
    }

    #[test]
    fn unsupported_types_are_named() {
        assert!(check_type(0x0D).unwrap_err().contains("0x0D (float32)"));
        assert!(check_type(0x08).is_ok());
        assert!(
            check_type(0x42)
                .unwrap_err()
                .contains("unknown IDX data type 0x42")
        );
    }
}
