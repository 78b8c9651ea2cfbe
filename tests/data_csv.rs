//! CSV loading through `prepare` and `Preprocessor::transform`: missing and
//! non-finite cells, byte-order marks, delimiters and decimal commas, header
//! detection, quoting, ragged rows, one-hot encoding and task inference.

use densetrain::data::csv::{self, Cell};
use densetrain::data::preprocess::FeatureTransform;
use densetrain::data::{
    CsvOptions, DataConfig, DataSource, FillMissing, PreparedData, RawData, Scale, SplitConfig,
    TaskKind, prepare,
};
use std::io::Write;
use std::path::{Path, PathBuf};

fn case(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cases")
        .join(path)
}

fn config(path: &Path) -> DataConfig {
    DataConfig {
        source: DataSource::Csv(path.to_path_buf()),
        target: Some("label".to_string()),
        ..DataConfig::default()
    }
}

/// Every row for training, unscaled, so encoded values equal the file's.
fn unscaled(path: &Path) -> DataConfig {
    DataConfig {
        scale: Scale::None,
        split: SplitConfig {
            fraction: 0.0,
            ..SplitConfig::default()
        },
        ..config(path)
    }
}

fn error_of(config: &DataConfig) -> String {
    match prepare(config) {
        Ok(_) => panic!("expected an error for {:?}", config.source),
        Err(error) => format!("{error:#}"),
    }
}

fn temp_csv(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file
}

fn total_rows(data: &PreparedData) -> usize {
    data.train.rows + data.validation.as_ref().map_or(0, |v| v.rows)
}

#[test]
fn empty_cell_names_line_column_and_text() {
    let message = error_of(&config(&case("missing-cells/empty_field.csv")));
    assert!(
        message.contains("empty_field.csv line 4, column 'x2': missing value ''"),
        "{message}"
    );
    assert!(message.contains("--fill-missing"), "{message}");
}

#[test]
fn nan_literal_is_missing() {
    let message = error_of(&config(&case("missing-cells/literal_nan.csv")));
    assert!(
        message.contains("literal_nan.csv line 3, column 'x1': missing value 'NaN'"),
        "{message}"
    );
}

#[test]
fn question_mark_is_missing() {
    let message = error_of(&config(&case("missing-cells/question_mark.csv")));
    assert!(
        message.contains("question_mark.csv line 6, column 'x1': missing value '?'"),
        "{message}"
    );
}

#[test]
fn inf_is_rejected_even_with_fill() {
    let path = case("missing-cells/literal_inf.csv");
    let expected = "literal_inf.csv line 5, column 'x2': non-finite value 'inf'";
    let message = error_of(&config(&path));
    assert!(message.contains(expected), "{message}");
    for fill in [FillMissing::Mean, FillMissing::Zero] {
        let filled = DataConfig {
            fill_missing: Some(fill),
            ..config(&path)
        };
        let message = error_of(&filled);
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn missing_target_is_always_an_error() {
    let path = case("missing-cells/missing_target.csv");
    let expected = "missing_target.csv line 2, column 'label': missing target value ''";
    for fill in [None, Some(FillMissing::Mean), Some(FillMissing::Zero)] {
        let message = error_of(&DataConfig {
            fill_missing: fill,
            ..config(&path)
        });
        assert!(message.contains(expected), "{message}");
    }
}

#[test]
fn fill_mean_uses_training_rows_only() {
    // Training is the first 3 rows (x2: 1.2, 0.9, missing), so the mean is
    // 1.05; over every row with a value it would be 0.8.
    let config = DataConfig {
        fill_missing: Some(FillMissing::Mean),
        scale: Scale::None,
        split: SplitConfig {
            fraction: 0.4,
            ..SplitConfig::default()
        },
        ..config(&case("missing-cells/empty_field.csv"))
    };
    let data = prepare(&config).unwrap();
    assert_eq!(data.train.rows, 3);
    let FeatureTransform::Numeric { fill, .. } = &data.preprocessor.features[1] else {
        panic!("x2 should be numeric");
    };
    let fill = fill.expect("fill value");
    assert!((fill - 1.05).abs() < 1e-6, "fill {fill}");
    let filled_cell = data.train.x[2 * data.train.cols + 1];
    assert!((filled_cell - 1.05).abs() < 1e-6, "cell {filled_cell}");
    let report = data.report.join("\n");
    assert!(
        report.contains("filled 1 missing cell of column 'x2' with the training mean 1.05"),
        "{report}"
    );
}

#[test]
fn fill_zero_fills_before_scaling() {
    let config = DataConfig {
        fill_missing: Some(FillMissing::Zero),
        scale: Scale::None,
        ..config(&case("missing-cells/question_mark.csv"))
    };
    let data = prepare(&config).unwrap();
    let validation = data.validation.expect("validation part");
    assert_eq!(validation.rows, 1);
    assert_eq!(validation.x[0], 0.0);
    assert_eq!(validation.x[1], 0.8);
}

#[test]
fn bom_is_stripped_from_first_name() {
    for file in ["byte-order-mark/bom.csv", "byte-order-mark/bom_quoted.csv"] {
        let data = prepare(&config(&case(file))).unwrap();
        let pre = &data.preprocessor;
        assert_eq!(pre.feature_names(), vec!["x1", "x2"], "{file}");
        assert_eq!(pre.target_name, "label", "{file}");
        assert!(!pre.target_name.contains('\u{feff}'));
        assert!(pre.feature_names().iter().all(|n| !n.contains('\u{feff}')));
        assert!(pre.feature_names().iter().all(|n| !n.contains('\r')));
        assert_eq!(total_rows(&data), 4, "{file}");
        let json = serde_json::to_string(pre).unwrap();
        assert!(!json.contains('\u{feff}'), "{json}");
        assert!(!json.contains("\\ufeff"), "{json}");
    }
}

#[test]
fn bom_values_are_read_as_numbers() {
    let data = prepare(&unscaled(&case("byte-order-mark/bom.csv"))).unwrap();
    assert_eq!(data.train.x, vec![0.1, 0.2, 0.9, 0.8, 0.2, 0.1, 0.8, 0.9]);
    assert_eq!(data.train.y, vec![0.0, 1.0, 0.0, 1.0]);
}

#[test]
fn missing_target_lists_escaped_columns() {
    // The byte-order mark sits inside the quotes, so it belongs to the name.
    let file = temp_csv("\"\u{feff}label\",x1\n0,1\n1,2\n0,3\n1,4\n");
    let message = error_of(&config(file.path()));
    assert!(
        message.contains("target column 'label' not found"),
        "{message}"
    );
    assert!(message.contains("'\\u{feff}label', 'x1'"), "{message}");
}

#[test]
fn semicolon_is_detected_and_reported() {
    let data = prepare(&config(&case("decimal-comma/semicolon_decimal_point.csv"))).unwrap();
    assert!(
        data.report.iter().any(|l| l == "detected delimiter ';'"),
        "{:?}",
        data.report
    );
    assert_eq!(data.preprocessor.feature_names(), vec!["x1", "x2"]);
    assert_eq!(data.train.cols, 2);
    assert_eq!(total_rows(&data), 4);
}

#[test]
fn decimal_comma_without_option_suggests_it() {
    let path = case("decimal-comma/semicolon_decimal_comma.csv");
    let expected = "line 2, column 'x1': '1,5' is not a number (decimal comma? use --decimal ',')";
    let detected = error_of(&config(&path));
    assert!(detected.contains(expected), "{detected}");
    let forced = error_of(&DataConfig {
        csv: CsvOptions {
            delimiter: Some(b';'),
            ..CsvOptions::default()
        },
        ..config(&path)
    });
    assert!(forced.contains(expected), "{forced}");
}

#[test]
fn decimal_comma_option_reads_fractions() {
    let config = DataConfig {
        csv: CsvOptions {
            delimiter: Some(b';'),
            decimal_comma: true,
            ..CsvOptions::default()
        },
        ..unscaled(&case("decimal-comma/semicolon_decimal_comma.csv"))
    };
    let data = prepare(&config).unwrap();
    assert_eq!(
        data.train.x,
        vec![1.5, 2.25, 0.5, 3.75, 2.0, 1.0, 0.25, 4.5]
    );
    assert_eq!(data.train.y, vec![0.0, 1.0, 0.0, 1.0]);
}

#[test]
fn decimal_comma_with_detected_semicolon() {
    let config = DataConfig {
        csv: CsvOptions {
            decimal_comma: true,
            ..CsvOptions::default()
        },
        ..unscaled(&case("decimal-comma/semicolon_decimal_comma.csv"))
    };
    let data = prepare(&config).unwrap();
    assert_eq!(data.train.x[0], 1.5);
    assert_eq!(data.train.x[1], 2.25);
}

#[test]
fn decimal_comma_rejects_comma_delimiter() {
    let config = DataConfig {
        csv: CsvOptions {
            delimiter: Some(b','),
            decimal_comma: true,
            ..CsvOptions::default()
        },
        ..config(&case("decimal-comma/semicolon_decimal_comma.csv"))
    };
    let message = error_of(&config);
    assert!(
        message.contains("needs a delimiter other than ','"),
        "{message}"
    );
}

#[test]
fn wrong_delimiter_hints_at_the_right_one() {
    let config = DataConfig {
        csv: CsvOptions {
            delimiter: Some(b','),
            ..CsvOptions::default()
        },
        ..config(&case("decimal-comma/semicolon_decimal_point.csv"))
    };
    let message = error_of(&config);
    assert!(
        message.contains("target column 'label' not found"),
        "{message}"
    );
    assert!(message.contains("try --delimiter ';'"), "{message}");
}

#[test]
fn no_header_forced_keeps_first_row() {
    let config = DataConfig {
        csv: CsvOptions {
            header: Some(false),
            ..CsvOptions::default()
        },
        target: Some("col0".to_string()),
        ..unscaled(&case("csv-layout/no_header.csv"))
    };
    let data = prepare(&config).unwrap();
    assert_eq!(data.train.rows, 6);
    assert_eq!(data.train.cols, 4);
    assert_eq!(
        data.preprocessor.feature_names(),
        vec!["col1", "col2", "col3", "col4"]
    );
    assert_eq!(&data.train.x[..4], &[0.0, 0.0, 128.0, 255.0]);
    let classes = data.preprocessor.class_names().unwrap();
    assert_eq!(classes, ["0", "1", "2", "4", "5", "9"]);
    assert_eq!(data.train.y[0], 4.0);
}

#[test]
fn numeric_first_line_is_detected_as_data() {
    let config = DataConfig {
        target: Some("col0".to_string()),
        ..unscaled(&case("csv-layout/no_header.csv"))
    };
    let data = prepare(&config).unwrap();
    assert_eq!(data.train.rows, 6);
    assert!(
        data.report
            .iter()
            .any(|l| l.contains("header: none detected") && l.contains("read as data")),
        "{:?}",
        data.report
    );
}

#[test]
fn text_first_line_is_detected_as_header() {
    let data = prepare(&config(&case("csv-layout/crlf_trailing_blank.csv"))).unwrap();
    assert!(
        data.report.iter().any(|l| l.contains("header: detected")),
        "{:?}",
        data.report
    );
}

#[test]
fn crlf_and_trailing_blank_lines() {
    let data = prepare(&unscaled(&case("csv-layout/crlf_trailing_blank.csv"))).unwrap();
    assert_eq!(data.train.rows, 4);
    assert_eq!(data.train.cols, 2);
    assert_eq!(data.preprocessor.feature_names(), vec!["x1", "x2"]);
    assert_eq!(data.train.x, vec![0.1, 0.2, 0.9, 0.8, 0.2, 0.1, 0.8, 0.9]);
}

#[test]
fn quoted_commas_and_line_breaks() {
    let config = DataConfig {
        drop: vec!["id".to_string(), "name".to_string()],
        ..unscaled(&case("csv-layout/quoted.csv"))
    };
    let data = prepare(&config).unwrap();
    assert_eq!(data.train.rows, 4);
    assert_eq!(data.train.cols, 2);
    assert_eq!(data.preprocessor.feature_names(), vec!["x1", "x2"]);
    assert_eq!(data.preprocessor.dropped, vec!["id", "name"]);
    assert_eq!(&data.train.x[6..8], &[0.8, 0.9]);
    assert_eq!(data.train.y, vec![0.0, 1.0, 0.0, 1.0]);
}

#[test]
fn quoted_fields_keep_their_text() {
    let options = CsvOptions::default();
    let table = csv::read_file(&case("csv-layout/quoted.csv"), &options)
        .unwrap()
        .table;
    let name = table.column_index("name").unwrap();
    assert_eq!(table.cell(0, name), Cell::Text("Smith, J"));
    assert_eq!(table.cell(1, name), Cell::Text("O'Neil \"Jr\""));
    assert_eq!(table.cell(3, name), Cell::Text("line\nbreak"));
    assert_eq!(table.lines, vec![2, 3, 4, 5]);
}

#[test]
fn identifier_text_column_suggests_drop() {
    let config = DataConfig {
        drop: vec!["id".to_string()],
        ..config(&case("csv-layout/quoted.csv"))
    };
    let message = error_of(&config);
    assert!(
        message.contains("column 'name' is non-numeric"),
        "{message}"
    );
    assert!(message.contains("--drop name"), "{message}");
}

#[test]
fn ragged_row_names_line_and_counts() {
    let message = error_of(&config(&case("csv-layout/ragged.csv")));
    assert!(
        message.contains("line 3 has 4 fields, header has 3"),
        "{message}"
    );
}

#[test]
fn line_numbers_count_blank_lines_inside() {
    let file = temp_csv("x,label\n\n1,0\n\n\n?,1\n2,0\n3,1\n");
    let message = error_of(&config(file.path()));
    assert!(
        message.contains("line 6, column 'x': missing value '?'"),
        "{message}"
    );
}

#[test]
fn line_numbers_count_quoted_line_breaks() {
    let file = temp_csv("note,x,label\n\"a\nb\",1,0\nc,,1\nd,2,0\ne,3,1\n");
    let config = DataConfig {
        drop: vec!["note".to_string()],
        ..config(file.path())
    };
    let message = error_of(&config);
    assert!(
        message.contains("line 4, column 'x': missing value ''"),
        "{message}"
    );
}

#[test]
fn stray_text_in_numeric_column() {
    let file = temp_csv("x,label\n1,0\n2,1\noops,0\n4,1\n5,0\n");
    let message = error_of(&config(file.path()));
    assert!(
        message.contains("line 4, column 'x': 'oops' is not a number"),
        "{message}"
    );
    assert!(message.contains("--drop x"), "{message}");
}

#[test]
fn first_bad_cell_in_file_order_wins() {
    let file = temp_csv("a,b,label\n1,2,0\n3,,1\n,4,0\n5,6,1\n");
    let message = error_of(&config(file.path()));
    assert!(message.contains("line 3, column 'b'"), "{message}");
}

#[test]
fn text_column_is_one_hot_encoded() {
    let file =
        temp_csv("size,color,label\n1,red,0\n2,green,1\n3,blue,0\n4,red,1\n5,green,0\n6,blue,1\n");
    let data = prepare(&unscaled(file.path())).unwrap();
    let pre = &data.preprocessor;
    assert_eq!(pre.input_count(), 4);
    assert_eq!(data.train.cols, 4);
    let FeatureTransform::OneHot { categories, .. } = &pre.features[1] else {
        panic!("color should be one-hot encoded");
    };
    assert_eq!(categories, &["blue", "green", "red"]);
    assert_eq!(&data.train.x[..4], &[1.0, 0.0, 0.0, 1.0]);
    assert_eq!(&data.train.x[4..8], &[2.0, 0.0, 1.0, 0.0]);
    assert_eq!(&data.train.x[8..12], &[3.0, 1.0, 0.0, 0.0]);
}

#[test]
fn too_many_categories_suggest_drop() {
    let mut text = String::from("city,x,label\n");
    for i in 0..42 {
        text.push_str(&format!("town{},{i},{}\n", i % 21, i % 2));
    }
    let file = temp_csv(&text);
    let message = error_of(&config(file.path()));
    assert!(message.contains("21 distinct values"), "{message}");
    assert!(message.contains("--drop city"), "{message}");
}

#[test]
fn unknown_drop_column_lists_columns() {
    let config = DataConfig {
        drop: vec!["nope".to_string()],
        ..config(&case("csv-layout/crlf_trailing_blank.csv"))
    };
    let message = error_of(&config);
    assert!(
        message.contains("--drop column 'nope' not found"),
        "{message}"
    );
    assert!(message.contains("'x1', 'x2', 'label'"), "{message}");
}

#[test]
fn dropping_the_target_is_rejected() {
    let config = DataConfig {
        drop: vec!["label".to_string()],
        ..config(&case("csv-layout/crlf_trailing_blank.csv"))
    };
    let message = error_of(&config);
    assert!(
        message.contains("names the target column 'label'"),
        "{message}"
    );
}

#[test]
fn default_target_is_last_column() {
    let config = DataConfig {
        target: None,
        ..config(&case("csv-layout/crlf_trailing_blank.csv"))
    };
    let data = prepare(&config).unwrap();
    assert_eq!(data.preprocessor.target_name, "label");
}

#[test]
fn numeric_labels_sort_numerically() {
    let mut text = String::from("x,label\n");
    for (i, label) in [10, 9, 2, 10, 9, 2, 100].iter().enumerate() {
        text.push_str(&format!("{i},{label}\n"));
    }
    let file = temp_csv(&text);
    let data = prepare(&unscaled(file.path())).unwrap();
    assert_eq!(data.preprocessor.task(), TaskKind::Classification);
    let classes = data.preprocessor.class_names().unwrap();
    assert_eq!(classes, ["2", "9", "10", "100"]);
    assert_eq!(data.train.y, vec![2.0, 1.0, 0.0, 2.0, 1.0, 0.0, 3.0]);
}

#[test]
fn integer_and_decimal_spellings_are_one_class() {
    let file = temp_csv("x,label\n1,1\n2,1.0\n3,2\n4,2.00\n");
    let data = prepare(&unscaled(file.path())).unwrap();
    let classes = data.preprocessor.class_names().unwrap();
    assert_eq!(classes, ["1", "2"]);
    assert_eq!(data.train.y, vec![0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn many_integers_are_regression() {
    let mut text = String::from("x,label\n");
    for i in 0..21 {
        text.push_str(&format!("{i},{}\n", i * 3));
    }
    let file = temp_csv(&text);
    let data = prepare(&config(file.path())).unwrap();
    assert_eq!(data.preprocessor.task(), TaskKind::Regression);
    let forced = prepare(&DataConfig {
        task: Some(TaskKind::Classification),
        ..config(file.path())
    })
    .unwrap();
    assert_eq!(forced.preprocessor.class_names().unwrap().len(), 21);
}

#[test]
fn fractional_target_is_regression() {
    let file = temp_csv("x,label\n1,0.5\n2,1.5\n3,0.5\n4,1.5\n5,2.5\n");
    let data = prepare(&config(file.path())).unwrap();
    assert_eq!(data.preprocessor.task(), TaskKind::Regression);
    let message = error_of(&DataConfig {
        task: Some(TaskKind::Classification),
        ..config(file.path())
    });
    assert!(
        message.contains("needs integer or text labels"),
        "{message}"
    );
    assert!(message.contains("'0.5' at line 2"), "{message}");
}

#[test]
fn regression_on_text_labels_is_rejected() {
    let file = temp_csv("x,label\n1,cat\n2,dog\n3,cat\n4,dog\n");
    let message = error_of(&DataConfig {
        task: Some(TaskKind::Regression),
        ..config(file.path())
    });
    assert!(
        message.contains("--task regression needs a numeric target"),
        "{message}"
    );
    assert!(message.contains("line 2: 'cat'"), "{message}");
}

#[test]
fn single_class_is_rejected() {
    let file = temp_csv("x,label\n1,a\n2,a\n3,a\n");
    let message = error_of(&config(file.path()));
    assert!(message.contains("one class only ('a')"), "{message}");
}

#[test]
fn regression_target_is_standardised_on_training_rows() {
    // Training rows are the first 4 (targets 1, 2, 3, 4), validation the
    // last one (100), which must not move the mean.
    let file = temp_csv("x,y\n1,1.5\n2,2.5\n3,3.5\n4,4.5\n5,100.5\n");
    let config = DataConfig {
        target: Some("y".to_string()),
        ..config(file.path())
    };
    let data = prepare(&config).unwrap();
    let (mean, std) = data.preprocessor.target_mean_std().unwrap();
    assert!((mean - 3.0).abs() < 1e-12, "mean {mean}");
    assert!((std - 1.25f64.sqrt()).abs() < 1e-12, "std {std}");
    let validation = data.validation.unwrap();
    let expected = ((100.5 - 3.0) / 1.25f64.sqrt()) as f32;
    assert!((validation.y[0] - expected).abs() < 1e-4);
}

#[test]
fn transform_applies_fitted_constants() {
    let train_file = temp_csv("a,color,label\n1,red,x\n2,blue,y\n3,red,x\n4,blue,y\n");
    let data = prepare(&DataConfig {
        split: SplitConfig {
            fraction: 0.0,
            ..SplitConfig::default()
        },
        ..config(train_file.path())
    })
    .unwrap();
    let json = serde_json::to_string(&data.preprocessor).unwrap();
    let stored: densetrain::data::Preprocessor = serde_json::from_str(&json).unwrap();
    assert_eq!(stored, data.preprocessor);

    // Columns in another order and no target: predictions need no labels.
    let new_file = temp_csv("color,a\nblue,2.5\n");
    let raw = stored
        .read(&DataSource::Csv(new_file.path().to_path_buf()))
        .unwrap();
    let encoded = stored.transform(&raw).unwrap();
    assert_eq!(encoded.rows, 1);
    assert!(encoded.y.is_empty());
    assert!(encoded.x[0].abs() < 1e-6, "2.5 is the training mean");
    assert_eq!(&encoded.x[1..], &[1.0, 0.0]);

    let labelled = temp_csv("a,color,label\n9,red,y\n");
    let raw = stored
        .read(&DataSource::Csv(labelled.path().to_path_buf()))
        .unwrap();
    assert_eq!(stored.transform(&raw).unwrap().y, vec![1.0]);
}

#[test]
fn transform_rejects_unseen_columns_and_labels() {
    let train_file = temp_csv("a,color,label\n1,red,x\n2,blue,y\n3,red,x\n4,blue,y\n");
    let pre = prepare(&config(train_file.path())).unwrap().preprocessor;
    let cases = [
        (
            "a,color,extra\n1,red,5\n",
            "a column 'extra' that the model was not trained on",
        ),
        ("a,label\n1,x\n", "lacks the feature column 'color'"),
        (
            "a,color,label\n1,red,z\n",
            "line 2, column 'label': label 'z' is not one of",
        ),
        (
            "a,color,label\n1,green,x\n",
            "line 2, column 'color': category 'green'",
        ),
        (
            "a,color,label\n,red,x\n",
            "line 2, column 'a': missing value ''",
        ),
        (
            "a,color,label\nfoo,red,x\n",
            "line 2, column 'a': 'foo' is not a number",
        ),
    ];
    for (text, expected) in cases {
        let file = temp_csv(text);
        let raw = pre
            .read(&DataSource::Csv(file.path().to_path_buf()))
            .unwrap();
        let message = format!("{:#}", pre.transform(&raw).unwrap_err());
        assert!(message.contains(expected), "{text:?}: {message}");
    }
}

#[test]
fn transform_rejects_images_for_csv_model() {
    let file = temp_csv("a,label\n1,x\n2,y\n3,x\n4,y\n");
    let pre = prepare(&config(file.path())).unwrap().preprocessor;
    let images = densetrain::data::idx::read_images(
        &case("idx-compression/tiny-images-idx3-ubyte"),
        &case("idx-compression/tiny-labels-idx1-ubyte"),
    )
    .unwrap();
    let message = format!("{:#}", pre.transform(&RawData::Images(images)).unwrap_err());
    assert!(message.contains("trained on CSV columns"), "{message}");
}

#[test]
fn validation_file_replaces_split() {
    let train = temp_csv("a,label\n1,x\n2,y\n3,x\n4,y\n5,x\n");
    let validation = temp_csv("a,label\n6,y\n7,x\n");
    let data = prepare(&DataConfig {
        validation_data: Some(validation.path().to_path_buf()),
        ..config(train.path())
    })
    .unwrap();
    assert_eq!(data.train.rows, 5);
    assert_eq!(data.validation.as_ref().unwrap().rows, 2);
    assert_eq!(data.validation.as_ref().unwrap().y, vec![1.0, 0.0]);
    assert!(data.validation_rows.is_empty());
    let report = data.report.join("\n");
    assert!(
        report.contains("training rows: 5, validation rows: 2"),
        "{report}"
    );
    assert!(
        report.contains("validation class counts: x: 1, y: 1"),
        "{report}"
    );
}

#[test]
fn validation_file_with_unknown_label() {
    let train = temp_csv("a,label\n1,x\n2,y\n3,x\n4,y\n");
    let validation = temp_csv("a,label\n6,y\n7,w\n");
    let message = error_of(&DataConfig {
        validation_data: Some(validation.path().to_path_buf()),
        ..config(train.path())
    });
    assert!(
        message.contains("line 3, column 'label': label 'w'"),
        "{message}"
    );
}

#[test]
fn validation_file_without_target() {
    let train = temp_csv("a,label\n1,x\n2,y\n3,x\n4,y\n");
    let validation = temp_csv("a\n6\n7\n");
    let message = error_of(&DataConfig {
        validation_data: Some(validation.path().to_path_buf()),
        ..config(train.path())
    });
    assert!(
        message.contains("lacks the target column 'label'"),
        "{message}"
    );
}

#[test]
fn tab_delimiter_is_detected() {
    let file = temp_csv("a\tb\tlabel\n1\t2\tx\n3\t4\ty\n5\t6\tx\n");
    let data = prepare(&unscaled(file.path())).unwrap();
    assert!(data.report.iter().any(|l| l == "detected delimiter tab"));
    assert_eq!(data.train.x, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

#[test]
fn min_max_scaling_maps_training_range() {
    let file = temp_csv("a,label\n2,x\n4,y\n6,x\n8,y\n100,x\n");
    let data = prepare(&DataConfig {
        scale: Scale::MinMax,
        ..config(file.path())
    })
    .unwrap();
    assert_eq!(data.train.x, vec![0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    let validation = data.validation.unwrap();
    assert!((validation.x[0] - 98.0 / 6.0).abs() < 1e-5);
}

#[test]
fn constant_column_becomes_zero() {
    let file = temp_csv("a,b,label\n1,7,x\n2,7,y\n3,7,x\n4,7,y\n");
    let data = prepare(&config(file.path())).unwrap();
    let column_b: Vec<f32> = data.train.x.iter().skip(1).step_by(2).copied().collect();
    assert_eq!(column_b, vec![0.0, 0.0, 0.0]);
}

#[test]
fn empty_file_is_an_error() {
    let file = temp_csv("");
    let message = error_of(&config(file.path()));
    assert!(message.contains("the file is empty"), "{message}");
}

#[test]
fn missing_file_names_the_path() {
    let message = error_of(&config(Path::new("/nonexistent/train.csv")));
    assert!(
        message.contains("cannot read /nonexistent/train.csv"),
        "{message}"
    );
}

#[test]
fn invalid_utf8_names_the_line() {
    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    file.write_all(b"a,label\n1,x\n2,\xff\xfe\n").unwrap();
    let message = error_of(&config(file.path()));
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("UTF-8"), "{message}");
}

#[test]
fn load_test_needs_an_idx_directory() {
    let message = error_of(&DataConfig {
        load_test: true,
        ..config(&case("csv-layout/crlf_trailing_blank.csv"))
    });
    assert!(
        message.contains("test files come from an IDX directory"),
        "{message}"
    );
}

#[test]
fn data_argument_resolves_sources() {
    assert_eq!(DataSource::from_arg("digits").unwrap(), DataSource::Digits);
    let dir = case("idx-compression");
    assert_eq!(
        DataSource::from_arg(dir.to_str().unwrap()).unwrap(),
        DataSource::IdxDir(dir.clone())
    );
    let csv_path = case("csv-layout/quoted.csv");
    assert_eq!(
        DataSource::from_arg(csv_path.to_str().unwrap()).unwrap(),
        DataSource::Csv(csv_path.clone())
    );
    let idx_file = case("idx-compression/tiny-images-idx3-ubyte");
    let message = format!(
        "{:#}",
        DataSource::from_arg(idx_file.to_str().unwrap()).unwrap_err()
    );
    assert!(message.contains("is an IDX file"), "{message}");
    assert!(message.contains("--images"), "{message}");
    let message = format!(
        "{:#}",
        DataSource::from_arg("/nonexistent/data.csv").unwrap_err()
    );
    assert!(message.contains("no such file or directory"), "{message}");
}

#[test]
fn missing_fashion_mnist_names_package() {
    let missing = Path::new("/nonexistent/fashion-mnist");
    let message = format!(
        "{:#}",
        DataSource::from_arg_with("fashion-mnist", missing).unwrap_err()
    );
    assert!(message.contains("dataset-fashion-mnist"), "{message}");
    assert!(message.contains("apt-get install"), "{message}");
    assert!(message.contains("/nonexistent/fashion-mnist"), "{message}");
}

#[test]
fn value_beyond_f32_range_is_rejected() {
    let file = temp_csv("x1,x2,label\n1,2,0\n1e39,3,1\n4,5,0\n6,7,1\n8,9,0\n");
    let message = error_of(&config(file.path()));
    assert!(message.contains("line 3"), "{message}");
    assert!(message.contains("column 'x1'"), "{message}");
    assert!(message.contains("'1e39'"), "{message}");
    assert!(message.contains("float32 range"), "{message}");
}

#[test]
fn value_beyond_f32_range_is_rejected_with_fill_missing() {
    let file = temp_csv("x1,x2,label\n1,2,0\n-1e300,3,1\n4,5,0\n6,7,1\n8,9,0\n");
    let message = error_of(&DataConfig {
        fill_missing: Some(FillMissing::Mean),
        ..config(file.path())
    });
    assert!(message.contains("'-1e300'"), "{message}");
}

#[test]
fn largest_f32_value_is_accepted() {
    let file = temp_csv("x1,label\n3.4e38,0\n-3.4e38,1\n1,0\n2,1\n3,0\n");
    let data = prepare(&unscaled(file.path())).unwrap();
    assert_eq!(data.train.x[0], 3.4e38_f32);
    assert_eq!(data.train.x[1], -3.4e38_f32);
}
