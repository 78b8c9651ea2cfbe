//! IDX loading: raw and gzip files decided by content, damaged and misnamed
//! files, directories with the standard names, and Fashion-MNIST when the
//! Debian package is installed.

use densetrain::data::idx::{self, FASHION_MNIST_DIR};
use densetrain::data::{DataConfig, DataSource, RawData, SplitConfig, TaskKind, prepare};
use std::io::Write;
use std::path::{Path, PathBuf};

const TINY_PIXELS: [u8; 12] = [0, 255, 255, 0, 10, 20, 30, 40, 255, 0, 0, 255];

fn case(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cases")
        .join(path)
}

fn files(images: &Path, labels: &Path) -> DataConfig {
    DataConfig {
        source: DataSource::IdxFiles {
            images: images.to_path_buf(),
            labels: labels.to_path_buf(),
        },
        split: SplitConfig {
            fraction: 0.0,
            ..SplitConfig::default()
        },
        ..DataConfig::default()
    }
}

fn tiny_labels() -> PathBuf {
    case("idx-compression/tiny-labels-idx1-ubyte")
}

fn images_error(images: &Path, labels: &Path) -> String {
    match prepare(&files(images, labels)) {
        Ok(_) => panic!("expected an error for {}", images.display()),
        Err(error) => format!("{error:#}"),
    }
}

fn damaged(name: &str) -> String {
    images_error(&case(&format!("idx-damaged/{name}")), &tiny_labels())
}

#[test]
fn raw_and_gzip_load_the_same_pixels() {
    for name in [
        "tiny-images-idx3-ubyte",
        "tiny-images-idx3-ubyte.gz",
        "gzip-but-no-ext-idx3-ubyte",
        "raw-but-named-idx3-ubyte.gz",
    ] {
        for labels in ["tiny-labels-idx1-ubyte", "tiny-labels-idx1-ubyte.gz"] {
            let images = case(&format!("idx-compression/{name}"));
            let labels = case(&format!("idx-compression/{labels}"));
            let raw = idx::read_images(&images, &labels).unwrap();
            assert_eq!(raw.count, 3, "{name}");
            assert_eq!((raw.height, raw.width), (2, 2), "{name}");
            assert_eq!(raw.pixels, TINY_PIXELS, "{name}");
            assert_eq!(raw.labels, vec![0, 1, 2], "{name}");
        }
    }
}

#[test]
fn pixels_are_divided_by_255() {
    let images = case("idx-compression/tiny-images-idx3-ubyte.gz");
    let data = prepare(&files(&images, &tiny_labels())).unwrap();
    assert_eq!(data.train.rows, 3);
    assert_eq!(data.train.cols, 4);
    let expected: Vec<f32> = TINY_PIXELS.iter().map(|&p| p as f32 / 255.0).collect();
    for (got, want) in data.train.x.iter().zip(&expected) {
        assert!((got - want).abs() < 1e-7, "{got} vs {want}");
    }
    assert_eq!(data.train.x[1], 1.0);
    assert_eq!(data.train.x[0], 0.0);
    assert_eq!(data.train.y, vec![0.0, 1.0, 2.0]);
    let pre = &data.preprocessor;
    assert_eq!(pre.task(), TaskKind::Classification);
    assert_eq!(pre.input_count(), 4);
    assert_eq!(pre.class_names().unwrap(), ["0", "1", "2"]);
    assert_eq!(pre.feature_names(), vec!["pixels"]);
}

#[test]
fn gzip_is_reported() {
    let images = case("idx-compression/gzip-but-no-ext-idx3-ubyte");
    let data = prepare(&files(&images, &tiny_labels())).unwrap();
    assert!(
        data.report[0].contains("gzip-but-no-ext-idx3-ubyte (gzip)"),
        "{}",
        data.report[0]
    );
}

#[test]
fn html_page_is_recognised() {
    let message = images_error(
        &case("idx-compression/html-page-idx3-ubyte.gz"),
        &tiny_labels(),
    );
    assert!(
        message.contains("not an IDX file: starts with 3C 21 44 4F"),
        "{message}"
    );
    assert!(message.contains("(\"<!DO\")"), "{message}");
    assert!(message.contains("looks like an HTML page"), "{message}");
    assert!(
        message.contains("the download probably failed"),
        "{message}"
    );
}

#[test]
fn gzip_magic_is_never_shown_as_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken-idx3-ubyte");
    let mut bytes = vec![0x1F, 0x8B, 0x08, 0x08];
    bytes.extend_from_slice(b"not really deflate data at all");
    std::fs::write(&broken, &bytes).unwrap();
    let message = images_error(&broken, &tiny_labels());
    assert!(message.contains("not valid gzip data"), "{message}");
    assert!(!message.contains("529205256"), "{message}");
}

#[test]
fn cut_gzip_stream_is_reported() {
    let whole = std::fs::read(case("idx-compression/tiny-images-idx3-ubyte.gz")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut-idx3-ubyte.gz");
    std::fs::write(&cut, &whole[..whole.len() - 12]).unwrap();
    let message = images_error(&cut, &tiny_labels());
    assert!(message.contains("not valid gzip data"), "{message}");
}

#[test]
fn double_gzip_is_named() {
    let inner = std::fs::read(case("idx-compression/tiny-images-idx3-ubyte.gz")).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&inner).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let twice = dir.path().join("twice-idx3-ubyte.gz");
    std::fs::write(&twice, encoder.finish().unwrap()).unwrap();
    let message = images_error(&twice, &tiny_labels());
    assert!(message.contains("compressed twice"), "{message}");
}

#[test]
fn tiny_damaged_reference_loads() {
    let images = case("idx-damaged/tiny-images-idx3-ubyte");
    let data = prepare(&files(&images, &tiny_labels())).unwrap();
    assert_eq!(data.train.rows, 3);
}

#[test]
fn truncated_data_is_reported() {
    let message = damaged("truncated-idx3-ubyte");
    assert!(
        message.contains("truncated: header declares 3×2×2 = 12 data bytes, file has 8"),
        "{message}"
    );
}

#[test]
fn incomplete_header_is_reported() {
    let message = damaged("header-only-idx3-ubyte");
    assert!(
        message.contains("incomplete header: need 16 bytes for 3 dimensions, file has 10"),
        "{message}"
    );
}

#[test]
fn empty_file_is_reported() {
    let message = damaged("empty-idx3-ubyte");
    assert!(message.contains("empty file"), "{message}");
}

#[test]
fn little_endian_dimensions_are_caught() {
    let message = damaged("little-endian-dims-idx3-ubyte");
    assert!(message.contains("impossible size"), "{message}");
    assert!(message.contains("little-endian"), "{message}");
    assert!(message.contains("50331648×33554432×33554432"), "{message}");
}

#[test]
fn oversized_dimensions_hint_at_byte_order() {
    // Big-endian (3, 2, 0x02000000): no overflow, far larger than the file,
    // and read little-endian it would be exactly the 12 bytes present.
    let mut bytes = vec![0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 2, 2, 0, 0, 0];
    bytes.extend_from_slice(&TINY_PIXELS);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mixed-idx3-ubyte");
    std::fs::write(&path, &bytes).unwrap();
    let message = images_error(&path, &tiny_labels());
    assert!(message.contains("truncated: header declares"), "{message}");
    assert!(message.contains("read little-endian"), "{message}");
}

#[test]
fn trailing_bytes_are_an_error() {
    let message = damaged("trailing-bytes-idx3-ubyte");
    assert!(
        message.contains("4 unexpected bytes after the data"),
        "{message}"
    );
}

#[test]
fn item_counts_must_agree() {
    let message = images_error(
        &case("idx-damaged/tiny-images-idx3-ubyte"),
        &case("idx-damaged/four-labels-idx1-ubyte"),
    );
    assert!(
        message.contains("images file has 3 items, labels file has 4"),
        "{message}"
    );
}

#[test]
fn float32_type_is_named() {
    let message = damaged("float32-idx3");
    assert!(
        message.contains("unsupported IDX data type 0x0D (float32)"),
        "{message}"
    );
}

#[test]
fn labels_given_as_images() {
    let message = damaged("labels-passed-as-images-idx1-ubyte");
    assert!(
        message.contains("expected an images file with 3 dimensions (idx3), got 1 dimension"),
        "{message}"
    );
}

#[test]
fn images_given_as_labels() {
    let images = case("idx-damaged/tiny-images-idx3-ubyte");
    let message = images_error(&images, &images);
    assert!(
        message.contains("expected a labels file with 1 dimension (idx1), got 3 dimensions"),
        "{message}"
    );
}

#[test]
fn label_values_map_to_sorted_classes() {
    let images = case("idx-damaged/tiny-images-idx3-ubyte");
    let labels = case("idx-damaged/label-out-of-range-idx1-ubyte");
    let data = prepare(&files(&images, &labels)).unwrap();
    assert_eq!(data.preprocessor.class_names().unwrap(), ["0", "1", "200"]);
    assert_eq!(data.train.y, vec![0.0, 1.0, 2.0]);
}

#[test]
fn csv_options_are_rejected_for_idx() {
    let images = case("idx-damaged/tiny-images-idx3-ubyte");
    let mut config = files(&images, &tiny_labels());
    config.target = Some("label".to_string());
    let message = format!("{:#}", prepare(&config).unwrap_err());
    assert!(
        message.contains("--target and --drop apply to CSV data"),
        "{message}"
    );
    let mut config = files(&images, &tiny_labels());
    config.task = Some(TaskKind::Regression);
    let message = format!("{:#}", prepare(&config).unwrap_err());
    assert!(
        message.contains("--task regression does not apply"),
        "{message}"
    );
}

/// Writes an IDX file with the given header bytes and data.
fn write_idx(path: &Path, magic: [u8; 4], dims: &[u32], data: &[u8]) {
    let mut bytes = magic.to_vec();
    for dim in dims {
        bytes.extend_from_slice(&dim.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

/// A directory with 10 training and 4 test images of 2x2 pixels.
fn idx_dir(separator: char, gzip: bool, test_labels: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: String, magic: [u8; 4], dims: &[u32], data: &[u8]| {
        let path = dir.path().join(name);
        write_idx(&path, magic, dims, data);
        if gzip {
            let bytes = std::fs::read(&path).unwrap();
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(&bytes).unwrap();
            std::fs::write(&path, encoder.finish().unwrap()).unwrap();
        }
    };
    let train_pixels: Vec<u8> = (0..40).map(|i| (i * 6) as u8).collect();
    let train_labels: Vec<u8> = (0..10).map(|i| (i % 2) as u8).collect();
    let test_pixels = vec![128u8; test_labels.len() * 4];
    let n_test = test_labels.len() as u32;
    let suffix = if gzip { "-ubyte.gz" } else { "-ubyte" };
    write(
        format!("train-images{separator}idx3{suffix}"),
        [0, 0, 8, 3],
        &[10, 2, 2],
        &train_pixels,
    );
    write(
        format!("train-labels{separator}idx1{suffix}"),
        [0, 0, 8, 1],
        &[10],
        &train_labels,
    );
    write(
        format!("t10k-images{separator}idx3{suffix}"),
        [0, 0, 8, 3],
        &[n_test, 2, 2],
        &test_pixels,
    );
    write(
        format!("t10k-labels{separator}idx1{suffix}"),
        [0, 0, 8, 1],
        &[n_test],
        test_labels,
    );
    dir
}

fn dir_config(dir: &Path) -> DataConfig {
    DataConfig {
        source: DataSource::IdxDir(dir.to_path_buf()),
        load_test: true,
        ..DataConfig::default()
    }
}

#[test]
fn directory_names_with_dash_or_dot() {
    for (separator, gzip) in [('-', false), ('.', false), ('-', true), ('.', true)] {
        let dir = idx_dir(separator, gzip, &[0, 1, 1, 0]);
        let data = prepare(&dir_config(dir.path())).unwrap();
        assert_eq!(data.train.rows, 8, "{separator} {gzip}");
        assert_eq!(data.validation.as_ref().unwrap().rows, 2);
        let test = data.test.expect("test part");
        assert_eq!(test.rows, 4);
        assert_eq!(test.y, vec![0.0, 1.0, 1.0, 0.0]);
        assert!((test.x[0] - 128.0 / 255.0).abs() < 1e-7);
    }
}

#[test]
fn directory_test_label_must_be_known() {
    let dir = idx_dir('-', false, &[0, 1, 7, 0]);
    let message = format!("{:#}", prepare(&dir_config(dir.path())).unwrap_err());
    assert!(message.contains("label 7 at index 2"), "{message}");
    assert!(message.contains("not one of the classes"), "{message}");
}

#[test]
fn directory_without_idx_files() {
    let dir = tempfile::tempdir().unwrap();
    let message = format!("{:#}", prepare(&dir_config(dir.path())).unwrap_err());
    assert!(
        message.contains("does not hold the IDX training files"),
        "{message}"
    );
    assert!(message.contains("train-images-idx3-ubyte"), "{message}");
}

#[test]
fn directory_without_test_files() {
    let dir = idx_dir('-', false, &[0, 1]);
    std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
    let without_test = DataConfig {
        load_test: false,
        ..dir_config(dir.path())
    };
    assert!(prepare(&without_test).unwrap().test.is_none());
    let message = format!("{:#}", prepare(&dir_config(dir.path())).unwrap_err());
    assert!(message.contains("holds no IDX test files"), "{message}");
}

#[test]
fn preprocessor_reads_directory_test_files() {
    let dir = idx_dir('-', false, &[1, 0]);
    let data = prepare(&DataConfig {
        load_test: false,
        ..dir_config(dir.path())
    })
    .unwrap();
    let json = serde_json::to_string(&data.preprocessor).unwrap();
    let stored: densetrain::data::Preprocessor = serde_json::from_str(&json).unwrap();
    let raw = stored
        .read(&DataSource::IdxDir(dir.path().to_path_buf()))
        .unwrap();
    let RawData::Images(images) = &raw else {
        panic!("expected images");
    };
    assert_eq!(images.count, 2);
    let test = stored.transform(&raw).unwrap();
    assert_eq!(test.y, vec![1.0, 0.0]);
    let csv = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/iris.csv");
    let message = format!("{:#}", stored.read(&DataSource::Csv(csv)).unwrap_err());
    assert!(message.contains("trained on IDX images"), "{message}");
}

#[test]
fn fashion_mnist_when_installed() {
    let dir = Path::new(FASHION_MNIST_DIR);
    if !dir.is_dir() {
        eprintln!("skipped: {FASHION_MNIST_DIR} is missing (Debian package dataset-fashion-mnist)");
        return;
    }
    let source = DataSource::from_arg("fashion-mnist").unwrap();
    assert_eq!(source, DataSource::IdxDir(dir.to_path_buf()));
    let config = DataConfig {
        source,
        split: SplitConfig {
            fraction: 0.33,
            ..SplitConfig::default()
        },
        load_test: true,
        ..DataConfig::default()
    };
    let data = prepare(&config).unwrap();
    assert_eq!(data.train.rows, 40199);
    assert_eq!(data.validation.as_ref().unwrap().rows, 19801);
    assert_eq!(data.train.cols, 784);
    let test = data.test.as_ref().unwrap();
    assert_eq!(test.rows, 10000);
    let names: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    assert_eq!(data.preprocessor.class_names().unwrap(), names.as_slice());
    assert!(data.train.x.iter().all(|&p| (0.0..=1.0).contains(&p)));
    assert!(data.train.x.contains(&1.0));
    // Fashion-MNIST's test set holds 1000 images of each class.
    let mut counts = [0usize; 10];
    for &label in &test.y {
        counts[label as usize] += 1;
    }
    assert_eq!(counts, [1000; 10]);
    assert!(data.warnings.is_empty(), "{:?}", data.warnings);
}

#[test]
fn csv_only_options_are_rejected_for_idx() {
    use densetrain::data::{CsvOptions, FillMissing, Scale};
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/cases/idx-compression");
    let source = DataSource::IdxFiles {
        images: dir.join("tiny-images-idx3-ubyte"),
        labels: dir.join("tiny-labels-idx1-ubyte"),
    };
    let base = DataConfig {
        source,
        ..DataConfig::default()
    };
    let cases = [
        (
            DataConfig {
                fill_missing: Some(FillMissing::Mean),
                ..base.clone()
            },
            "--fill-missing",
        ),
        (
            DataConfig {
                scale: Scale::MinMax,
                ..base.clone()
            },
            "--scale",
        ),
        (
            DataConfig {
                csv: CsvOptions {
                    delimiter: Some(b';'),
                    ..CsvOptions::default()
                },
                ..base.clone()
            },
            "--delimiter",
        ),
    ];
    for (config, flag) in cases {
        let message = format!("{:#}", prepare(&config).unwrap_err());
        assert!(message.contains(flag), "{flag}: {message}");
    }
}
