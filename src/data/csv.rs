//! CSV reading: byte-order mark, delimiter and header detection, quoting,
//! cell parsing and file line numbers for messages.
//!
//! Quoting follows RFC 4180 through the `csv` crate, so delimiters and line
//! breaks inside double quotes stay inside their field. Fields and header
//! names are trimmed of surrounding whitespace. Blank lines are skipped
//! wherever they are, which covers the trailing blank lines many exports add.

use crate::data::CsvOptions;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::Path;

/// Cell texts read as a missing value (pandas' default list plus the UCI marker `?`).
/// A cell that parses as NaN in any spelling is missing too.
pub const MISSING_MARKERS: &[&str] = &[
    "", "?", "NA", "N/A", "n/a", "na", "NaN", "nan", "-NaN", "-nan", "NULL", "null", "None",
    "#N/A", "#N/A N/A", "#NA", "<NA>", "-1.#IND", "-1.#QNAN", "1.#IND", "1.#QNAN",
];

/// One cell, classified.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'a> {
    /// A finite number.
    Number(f64),
    /// A missing-value marker, with its raw text.
    Missing(&'a str),
    /// An infinite number (`inf`, `-Infinity`, `1e999`) or one beyond the f32
    /// range (`1e39`), with its raw text.
    NonFinite(&'a str),
    /// Anything else.
    Text(&'a str),
}

impl<'a> Cell<'a> {
    /// Classifies a trimmed cell text; with `decimal_comma`, `1,5` reads as 1.5.
    pub fn parse(text: &'a str, decimal_comma: bool) -> Cell<'a> {
        if MISSING_MARKERS.contains(&text) {
            return Cell::Missing(text);
        }
        let parsed = if decimal_comma && text.contains(',') {
            text.replacen(',', ".", 1).parse::<f64>()
        } else {
            text.parse::<f64>()
        };
        match parsed {
            // Training runs in f32, so a value beyond its range is as unusable as inf.
            Ok(value) if value.is_finite() && value.abs() <= f64::from(f32::MAX) => {
                Cell::Number(value)
            }
            Ok(value) if value.is_nan() => Cell::Missing(text),
            Ok(_) => Cell::NonFinite(text),
            Err(_) => Cell::Text(text),
        }
    }

    /// Returns the cell's category or class name: the raw text, or for a
    /// number its shortest decimal form, so `1` and `1.0` are one class.
    pub fn key(&self) -> String {
        match self {
            Cell::Number(value) => format!("{value}"),
            Cell::Missing(text) | Cell::NonFinite(text) | Cell::Text(text) => text.to_string(),
        }
    }
}

/// Returns true when `text` looks like a number written with a decimal comma
/// (`1,5`, `-0,25`): digits, one comma, digits.
pub fn looks_like_decimal_comma(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let Some((whole, fraction)) = unsigned.split_once(',') else {
        return false;
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !whole.is_empty() && !fraction.is_empty() && all_digits(whole) && all_digits(fraction)
}

/// One column of a table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Column {
    /// The parsed number of each row; NaN where the cell is not a finite number.
    pub values: Vec<f64>,
    /// The raw text of every cell that is not a finite number, by row.
    pub texts: BTreeMap<usize, String>,
}

impl Column {
    /// Returns the cell of `row`, classified.
    pub fn cell(&self, row: usize, decimal_comma: bool) -> Cell<'_> {
        let value = self.values[row];
        if value.is_finite() {
            return Cell::Number(value);
        }
        match self.texts.get(&row) {
            Some(text) => Cell::parse(text, decimal_comma),
            None => Cell::Missing(""),
        }
    }

    fn push(&mut self, text: &str, decimal_comma: bool) {
        let row = self.values.len();
        match Cell::parse(text, decimal_comma) {
            Cell::Number(value) => self.values.push(value),
            _ => {
                self.values.push(f64::NAN);
                self.texts.insert(row, text.to_string());
            }
        }
    }
}

/// A CSV file as read: named columns of cells and the file line of each row.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    /// The file as named in messages: the path as given, or `built-in digits`.
    pub origin: String,
    /// Column names: the header, or `col0`, `col1`, ... without one.
    pub names: Vec<String>,
    /// Columns in file order.
    pub columns: Vec<Column>,
    /// File line (counted from 1, physical lines) where each data row starts.
    pub lines: Vec<u64>,
    /// The delimiter used.
    pub delimiter: u8,
    /// Whether the first line was read as the header.
    pub header: bool,
    /// Whether `1,5` was read as 1.5.
    pub decimal_comma: bool,
}

impl Table {
    /// Number of data rows.
    pub fn rows(&self) -> usize {
        self.lines.len()
    }

    /// Index of the column called `name`.
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Returns the cell at `row` of column `column`.
    pub fn cell(&self, row: usize, column: usize) -> Cell<'_> {
        self.columns[column].cell(row, self.decimal_comma)
    }

    /// Names every column for an error message, invisible characters escaped.
    pub fn describe_columns(&self) -> String {
        list_names(&self.names, 40)
    }
}

/// A table and the lines about how it was read.
#[derive(Clone, Debug)]
pub struct CsvRead {
    /// The data.
    pub table: Table,
    /// Detected delimiter and header choice, for the user.
    pub report: Vec<String>,
    /// Renamed empty header cells.
    pub warnings: Vec<String>,
}

/// Reads the CSV file at `path`.
pub fn read_file(path: &Path, options: &CsvOptions) -> Result<CsvRead> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {origin}"))?;
    read_bytes(&bytes, &origin, options)
}

/// Reads CSV text held in memory; `origin` names it in messages.
pub fn read_bytes(bytes: &[u8], origin: &str, options: &CsvOptions) -> Result<CsvRead> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        bail!("{origin}: the file is empty");
    }
    let mut report = Vec::new();
    let mut warnings = Vec::new();
    let delimiter = match options.delimiter {
        Some(delimiter) => delimiter,
        None => {
            let delimiter = detect_delimiter(bytes);
            report.push(format!(
                "detected delimiter {}",
                describe_delimiter(delimiter)
            ));
            delimiter
        }
    };
    if options.decimal_comma && delimiter == b',' {
        bail!(
            "{origin}: --decimal ',' needs a delimiter other than ',' (the delimiter is ','); \
             pass --delimiter ';' or --delimiter tab"
        );
    }
    // `flexible` is on so that a ragged row is reported with its line and field
    // counts below, and so that a line holding only spaces counts as blank.
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .trim(::csv::Trim::All)
        .from_reader(bytes);

    let mut names: Vec<String> = Vec::new();
    let mut columns: Vec<Column> = Vec::new();
    let mut lines = Vec::new();
    let mut header_line = 0;
    let mut header = false;
    for result in reader.records() {
        let record = result.map_err(|e| describe_csv_error(origin, &e))?;
        if record.len() == 1 && record[0].is_empty() {
            continue;
        }
        let line = record.position().map_or(0, |p| record_line(bytes, p));
        if names.is_empty() {
            header = options
                .header
                .unwrap_or_else(|| !is_numeric_line(&record, options.decimal_comma));
            header_line = line;
            report.extend(describe_header_choice(options.header, header, record.len()));
            names = if header {
                header_names(&record, &mut warnings)
            } else {
                (0..record.len()).map(|i| format!("col{i}")).collect()
            };
            check_unique(origin, &names)?;
            columns = vec![Column::default(); names.len()];
            if header {
                continue;
            }
        }
        if record.len() != names.len() {
            let reference = if header {
                "header".to_string()
            } else {
                format!("line {header_line}")
            };
            bail!(
                "{origin} line {line} has {} fields, {reference} has {}; check the quoting \
                 and the delimiter {} on that line",
                record.len(),
                names.len(),
                describe_delimiter(delimiter)
            );
        }
        for (column, text) in columns.iter_mut().zip(record.iter()) {
            column.push(text, options.decimal_comma);
        }
        lines.push(line);
    }
    if lines.is_empty() {
        bail!("{origin}: the file has a header but no data rows");
    }
    let table = Table {
        origin: origin.to_string(),
        names,
        columns,
        lines,
        delimiter,
        header,
        decimal_comma: options.decimal_comma,
    };
    Ok(CsvRead {
        table,
        report,
        warnings,
    })
}

/// Returns the file line where a record starts.
///
/// The `csv` crate records a position before it skips empty lines, so the
/// line breaks between that position and the record are counted here.
fn record_line(bytes: &[u8], position: &::csv::Position) -> u64 {
    let start = (position.byte() as usize).min(bytes.len());
    let skipped = bytes[start..]
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .filter(|&&b| b == b'\n')
        .count();
    position.line() + skipped as u64
}

/// Picks the delimiter from the first non-blank line, counting outside quotes:
/// `;` or tab when either occurs (the more frequent one), else `,`. A comma
/// loses to them because it also appears inside numbers written with a
/// decimal comma, while `;` and tab rarely appear unquoted in a
/// comma-separated header.
pub fn detect_delimiter(bytes: &[u8]) -> u8 {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    let (mut semicolons, mut tabs) = (0usize, 0usize);
    let mut quoted = false;
    for &byte in &bytes[start..] {
        match byte {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            b';' if !quoted => semicolons += 1,
            b'\t' if !quoted => tabs += 1,
            _ => {}
        }
    }
    if semicolons == 0 && tabs == 0 {
        b','
    } else if tabs > semicolons {
        b'\t'
    } else {
        b';'
    }
}

/// Names a delimiter for messages: `';'`, `','` or `tab`.
pub fn describe_delimiter(delimiter: u8) -> String {
    match delimiter {
        b'\t' => "tab".to_string(),
        other => format!("'{}'", other as char),
    }
}

/// Returns true when every cell of the line is a number or a missing marker,
/// and at least one is a number: such a first line is data, not a header.
fn is_numeric_line(record: &::csv::StringRecord, decimal_comma: bool) -> bool {
    let mut numbers = 0;
    for text in record {
        match Cell::parse(text, decimal_comma) {
            Cell::Number(_) | Cell::NonFinite(_) => numbers += 1,
            Cell::Missing(_) => {}
            Cell::Text(_) => return false,
        }
    }
    numbers > 0
}

/// Describes the header choice for the report; a requested header needs no line.
fn describe_header_choice(forced: Option<bool>, header: bool, width: usize) -> Option<String> {
    let names = format!("columns are named col0 to col{}", width.saturating_sub(1));
    match (forced, header) {
        (Some(true), _) => None,
        (Some(false), _) => Some(format!("header: none (as requested); {names}")),
        (None, true) => Some("header: detected, the first line holds column names".to_string()),
        (None, false) => Some(format!(
            "header: none detected, the first line is all numbers and is read as data; {names}"
        )),
    }
}

fn header_names(record: &::csv::StringRecord, warnings: &mut Vec<String>) -> Vec<String> {
    let mut names = Vec::with_capacity(record.len());
    for (i, name) in record.iter().enumerate() {
        if name.is_empty() {
            let replacement = format!("col{i}");
            warnings.push(format!(
                "header cell {} is empty; the column is called '{replacement}'",
                i + 1
            ));
            names.push(replacement);
        } else {
            names.push(name.to_string());
        }
    }
    names
}

fn check_unique(origin: &str, names: &[String]) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        if let Some(j) = names[..i].iter().position(|n| n == name) {
            bail!(
                "{origin}: column name '{}' appears twice (columns {} and {}); rename one",
                escape_invisible(name),
                j + 1,
                i + 1
            );
        }
    }
    Ok(())
}

fn describe_csv_error(origin: &str, error: &::csv::Error) -> anyhow::Error {
    let line = error.position().map(|p| p.line());
    match (error.kind(), line) {
        (::csv::ErrorKind::Utf8 { .. }, Some(line)) => anyhow::anyhow!(
            "{origin} line {line}: the text is not valid UTF-8; save the file as UTF-8"
        ),
        (_, Some(line)) => anyhow::anyhow!("{origin} line {line}: {error}"),
        (_, None) => anyhow::anyhow!("{origin}: {error}"),
    }
}

/// Escapes control and invisible characters (a byte-order mark, zero-width
/// spaces, a no-break space) as `\u{feff}`, so a name that looks right but
/// does not match shows why.
pub fn escape_invisible(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        let invisible = matches!(
            c,
            '\u{a0}' | '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}' | '\u{feff}'
        );
        if c.is_control() || invisible {
            escaped.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    escaped
}

/// Lists names for a message as `'a', 'b', 'c'`, escaped, at most `max` of them.
pub fn list_names(names: &[String], max: usize) -> String {
    let mut listed: Vec<String> = names
        .iter()
        .take(max)
        .map(|n| format!("'{}'", escape_invisible(n)))
        .collect();
    if names.len() > max {
        listed.push(format!("and {} more", names.len() - max));
    }
    listed.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str, options: &CsvOptions) -> Result<CsvRead> {
        read_bytes(text.as_bytes(), "test.csv", options)
    }

    #[test]
    fn cells_classify() {
        assert_eq!(Cell::parse("1.5", false), Cell::Number(1.5));
        assert_eq!(Cell::parse("1,5", true), Cell::Number(1.5));
        assert_eq!(Cell::parse("1,5", false), Cell::Text("1,5"));
        assert_eq!(Cell::parse("?", false), Cell::Missing("?"));
        assert_eq!(Cell::parse("NAN", false), Cell::Missing("NAN"));
        assert_eq!(Cell::parse("-inf", false), Cell::NonFinite("-inf"));
        assert_eq!(Cell::parse("Infinity", false), Cell::NonFinite("Infinity"));
        assert_eq!(Cell::parse("1e999", false), Cell::NonFinite("1e999"));
        assert_eq!(Cell::parse("red", false), Cell::Text("red"));
    }

    #[test]
    fn number_keys_ignore_spelling() {
        assert_eq!(Cell::parse("1.0", false).key(), "1");
        assert_eq!(Cell::parse("1", false).key(), "1");
        assert_eq!(Cell::parse("2.50", false).key(), "2.5");
    }

    #[test]
    fn decimal_comma_shapes() {
        assert!(looks_like_decimal_comma("1,5"));
        assert!(looks_like_decimal_comma("-0,25"));
        assert!(!looks_like_decimal_comma("1,5,2"));
        assert!(!looks_like_decimal_comma("a,b"));
        assert!(!looks_like_decimal_comma(",5"));
    }

    #[test]
    fn delimiter_outside_quotes_wins() {
        assert_eq!(detect_delimiter(b"\"a;b\",c,d\n1,2,3"), b',');
        assert_eq!(detect_delimiter(b"a,b,c\n1;2;3"), b',');
        assert_eq!(detect_delimiter(b"a;b;c\n1,5;2,5;0"), b';');
        assert_eq!(detect_delimiter(b"a\tb\tc\n"), b'\t');
        assert_eq!(detect_delimiter(b"1,5;2,5\n"), b';');
        assert_eq!(detect_delimiter(b"single\n1\n"), b',');
    }

    #[test]
    fn quoted_line_break_keeps_line_numbers() {
        let read = read("a,b\n\"x\ny\",1\nz,2\n", &CsvOptions::default()).unwrap();
        assert_eq!(read.table.lines, vec![2, 4]);
    }

    #[test]
    fn blank_lines_anywhere_are_skipped() {
        let read = read("a,b\n\n1,2\n   \n3,4\n\n", &CsvOptions::default()).unwrap();
        assert_eq!(read.table.rows(), 2);
        assert_eq!(read.table.lines, vec![3, 5]);
    }

    #[test]
    fn empty_header_cell_is_renamed() {
        let read = read(",x,y\n0,1,2\n", &CsvOptions::default()).unwrap();
        assert_eq!(read.table.names, vec!["col0", "x", "y"]);
        assert_eq!(read.warnings.len(), 1);
    }

    #[test]
    fn duplicate_names_are_rejected() {
        let error = read("x,y,x\n1,2,3\n", &CsvOptions::default()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("'x' appears twice (columns 1 and 3)")
        );
    }

    #[test]
    fn header_only_is_rejected() {
        let error = read("x,y\n", &CsvOptions::default()).unwrap_err();
        assert!(error.to_string().contains("no data rows"), "{error}");
    }

    #[test]
    fn whitespace_only_file_is_empty() {
        let error = read(" \n\n", &CsvOptions::default()).unwrap_err();
        assert!(error.to_string().contains("the file is empty"), "{error}");
    }

    #[test]
    fn invisible_characters_are_escaped() {
        assert_eq!(escape_invisible("\u{feff}label"), "\\u{feff}label");
        assert_eq!(escape_invisible("x\r"), "x\\u{d}");
        assert_eq!(escape_invisible("plain é"), "plain é");
    }

    #[test]
    fn decimal_comma_needs_another_delimiter() {
        let options = CsvOptions {
            delimiter: Some(b','),
            decimal_comma: true,
            ..CsvOptions::default()
        };
        let error = read("a,b\n1,2\n", &options).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("needs a delimiter other than ','")
        );
    }
}
