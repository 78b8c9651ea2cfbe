//! Decisions about the columns of a CSV table: which column is the target,
//! which are features, the task, the classes, and how each feature is encoded.
//!
//! Every cell problem is reported with the file line, the column name and the
//! raw text. When several cells are bad, the one nearest the top of the file
//! is reported.

use crate::data::TaskKind;
use crate::data::csv::{self, Cell, Table, escape_invisible, looks_like_decimal_comma};
use anyhow::{Result, bail};
use std::collections::BTreeSet;

/// Maximum number of distinct values of a one-hot encoded text feature, and
/// of distinct integers of a target that counts as classes.
pub const MAX_CATEGORIES: usize = 20;

/// Minimum number of rows from which a text feature with a different value in
/// every row is rejected as an identifier or free text.
pub const MIN_ROWS_FOR_IDENTIFIER: usize = 4;

/// How a feature column is encoded.
#[derive(Clone, Debug, PartialEq)]
pub enum FeatureKind {
    /// Numbers, scaled.
    Numeric,
    /// Text with few distinct values, one-hot encoded; categories sorted.
    Categorical(Vec<String>),
}

/// The target column, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum TargetValues {
    /// Class names in index order and the class index of every row.
    Classes {
        names: Vec<String>,
        labels: Vec<u32>,
    },
    /// The value of every row.
    Values(Vec<f64>),
}

/// The columns a run uses.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnChoice {
    /// Index of the target column.
    pub target: usize,
    /// Indices of the feature columns, in file order.
    pub features: Vec<usize>,
    /// Names of the dropped columns.
    pub dropped: Vec<String>,
}

/// Resolves the target (`None`: the last column) and the dropped columns.
pub fn choose_columns(
    table: &Table,
    target: Option<&str>,
    drop: &[String],
) -> Result<ColumnChoice> {
    let target = match target {
        None => table.names.len() - 1,
        Some(name) => match table.column_index(name) {
            Some(index) => index,
            None => bail!(
                "target column '{}' not found in {}; the columns are: {}{}",
                escape_invisible(name),
                table.origin,
                table.describe_columns(),
                delimiter_hint(table)
            ),
        },
    };
    let mut dropped_indices = Vec::with_capacity(drop.len());
    for name in drop {
        let Some(index) = table.column_index(name) else {
            bail!(
                "--drop column '{}' not found in {}; the columns are: {}",
                escape_invisible(name),
                table.origin,
                table.describe_columns()
            );
        };
        if index == target {
            bail!(
                "--drop names the target column '{}'; choose another target with --target",
                escape_invisible(name)
            );
        }
        dropped_indices.push(index);
    }
    let features: Vec<usize> = (0..table.names.len())
        .filter(|&i| i != target && !dropped_indices.contains(&i))
        .collect();
    if features.is_empty() {
        bail!(
            "{} has no feature columns besides the target '{}'{}",
            table.origin,
            escape_invisible(&table.names[target]),
            delimiter_hint(table)
        );
    }
    let dropped = dropped_indices
        .iter()
        .map(|&i| table.names[i].clone())
        .collect();
    Ok(ColumnChoice {
        target,
        features,
        dropped,
    })
}

/// Suggests another delimiter when the header is one column that contains one.
fn delimiter_hint(table: &Table) -> String {
    if table.names.len() != 1 {
        return String::new();
    }
    let name = &table.names[0];
    for (byte, option) in [(b';', "';'"), (b'\t', "tab"), (b',', "','")] {
        if byte != table.delimiter && name.as_bytes().contains(&byte) {
            return format!(
                "; the header is one column '{}', so the file looks {}-separated: try \
                 --delimiter {option}",
                escape_invisible(name),
                csv::describe_delimiter(byte)
            );
        }
    }
    String::new()
}

/// Formats the start of an error about one cell.
// NOTE: the line is where the row starts, so a cell that follows a quoted
// line break inside the same row is reported on an earlier physical line.
pub fn cell_location(table: &Table, row: usize, column: usize) -> String {
    format!(
        "{} line {}, column '{}'",
        table.origin,
        table.lines[row],
        escape_invisible(&table.names[column])
    )
}

/// Counts and first rows of each kind of cell in one column.
#[derive(Default)]
struct Survey {
    numbers: usize,
    texts: usize,
    first_number: Option<usize>,
    first_text: Option<usize>,
    first_missing: Option<usize>,
    first_non_finite: Option<usize>,
    first_decimal_comma: Option<usize>,
    first_fraction: Option<usize>,
}

fn survey(table: &Table, column: usize) -> Survey {
    let mut found = Survey::default();
    for row in 0..table.rows() {
        match table.cell(row, column) {
            Cell::Number(value) => {
                found.numbers += 1;
                found.first_number.get_or_insert(row);
                if value.fract() != 0.0 {
                    found.first_fraction.get_or_insert(row);
                }
            }
            Cell::Missing(_) => {
                found.first_missing.get_or_insert(row);
            }
            Cell::NonFinite(_) => {
                found.first_non_finite.get_or_insert(row);
            }
            Cell::Text(text) => {
                found.texts += 1;
                found.first_text.get_or_insert(row);
                if looks_like_decimal_comma(text) {
                    found.first_decimal_comma.get_or_insert(row);
                }
            }
        }
    }
    found
}

/// An error about one cell, ordered by its row so the first in the file wins.
struct CellError {
    row: usize,
    column: usize,
    message: String,
}

fn raw_text(table: &Table, row: usize, column: usize) -> String {
    match table.cell(row, column) {
        Cell::Number(value) => format!("{value}"),
        Cell::Missing(text) | Cell::NonFinite(text) | Cell::Text(text) => text.to_string(),
    }
}

fn non_finite_error(table: &Table, row: usize, column: usize) -> CellError {
    CellError {
        row,
        column,
        message: format!(
            "{}: non-finite value '{}'; only finite numbers within the float32 \
             range (about ±3.4e38) are accepted, also with --fill-missing",
            cell_location(table, row, column),
            raw_text(table, row, column)
        ),
    }
}

fn decimal_comma_error(table: &Table, row: usize, column: usize) -> CellError {
    CellError {
        row,
        column,
        message: format!(
            "{}: '{}' is not a number (decimal comma? use --decimal ',')",
            cell_location(table, row, column),
            raw_text(table, row, column)
        ),
    }
}

fn stray_text_error(table: &Table, row: usize, column: usize, numbers: usize) -> CellError {
    let name = escape_invisible(&table.names[column]);
    CellError {
        row,
        column,
        message: format!(
            "{}: '{}' is not a number, but the column holds {numbers} numbers; fix the cell, \
             write it as a missing value, or drop the column with --drop {name}",
            cell_location(table, row, column),
            raw_text(table, row, column)
        ),
    }
}

fn first_error(mut errors: Vec<CellError>) -> Result<()> {
    errors.sort_by_key(|e| (e.row, e.column));
    match errors.into_iter().next() {
        Some(error) => Err(anyhow::anyhow!(error.message)),
        None => Ok(()),
    }
}

/// Decides how each feature column is encoded, and rejects cells that cannot
/// be used: non-finite numbers, decimal commas, stray text in a numeric
/// column, and missing cells unless `fill_missing` is set.
pub fn feature_kinds(
    table: &Table,
    features: &[usize],
    fill_missing: bool,
) -> Result<Vec<FeatureKind>> {
    let mut errors = Vec::new();
    let mut kinds = Vec::with_capacity(features.len());
    let mut column_errors = Vec::new();
    for &column in features {
        let found = survey(table, column);
        if let Some(row) = found.first_non_finite {
            errors.push(non_finite_error(table, row, column));
        }
        if let Some(row) = found.first_decimal_comma {
            errors.push(decimal_comma_error(table, row, column));
        }
        if let (Some(row), false) = (found.first_missing, fill_missing) {
            errors.push(CellError {
                row,
                column,
                message: format!(
                    "{}: missing value '{}'; fill in the cell, or pass --fill-missing mean \
                     (or zero) to replace missing feature values",
                    cell_location(table, row, column),
                    raw_text(table, row, column)
                ),
            });
        }
        let name = escape_invisible(&table.names[column]);
        if found.texts == 0 {
            if found.numbers == 0 {
                column_errors.push(format!(
                    "{}: column '{name}' has no values (every cell is missing); drop it with \
                     --drop {name}",
                    table.origin
                ));
            }
            kinds.push(FeatureKind::Numeric);
            continue;
        }
        if found.numbers >= found.texts {
            if let Some(row) = found.first_text {
                errors.push(stray_text_error(table, row, column, found.numbers));
            }
            kinds.push(FeatureKind::Numeric);
            continue;
        }
        match categories(table, column) {
            Ok(categories) => kinds.push(FeatureKind::Categorical(categories)),
            Err(message) => {
                column_errors.push(message);
                kinds.push(FeatureKind::Numeric);
            }
        }
    }
    first_error(errors)?;
    if let Some(message) = column_errors.into_iter().next() {
        bail!(message);
    }
    Ok(kinds)
}

/// Returns the sorted categories of a text column, or why it cannot be one-hot encoded.
fn categories(table: &Table, column: usize) -> Result<Vec<String>, String> {
    let mut distinct = BTreeSet::new();
    let mut present = 0;
    for row in 0..table.rows() {
        let cell = table.cell(row, column);
        if !matches!(cell, Cell::Missing(_)) {
            present += 1;
            distinct.insert(cell.key());
        }
    }
    let name = escape_invisible(&table.names[column]);
    let examples: Vec<String> = distinct.iter().take(3).cloned().collect();
    let examples = csv::list_names(&examples, 3);
    if distinct.len() > MAX_CATEGORIES {
        return Err(format!(
            "{}: column '{name}' is non-numeric with {} distinct values ({examples}, ...); \
             text columns are one-hot encoded only with at most {MAX_CATEGORIES} values: \
             drop it with --drop {name}",
            table.origin,
            distinct.len()
        ));
    }
    if distinct.len() == present && present >= MIN_ROWS_FOR_IDENTIFIER {
        return Err(format!(
            "{}: column '{name}' is non-numeric and has a different value in every row \
             ({examples}, ...), so it looks like an identifier or free text, not a category: \
             drop it with --drop {name}",
            table.origin
        ));
    }
    Ok(sort_names(distinct.into_iter().collect()))
}

/// Sorts names numerically when all are numbers (so "10" follows "9"), else as text.
pub fn sort_names(mut names: Vec<String>) -> Vec<String> {
    let numbers: Option<Vec<f64>> = names.iter().map(|n| n.parse::<f64>().ok()).collect();
    match numbers {
        Some(numbers) => {
            let mut pairs: Vec<(f64, String)> = numbers.into_iter().zip(names).collect();
            pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
            pairs.into_iter().map(|(_, name)| name).collect()
        }
        None => {
            names.sort();
            names
        }
    }
}

/// Decodes the target column and decides the task.
///
/// Text, or integers with at most [`MAX_CATEGORIES`] distinct values, make a
/// classification target; other numbers a regression target. `task`
/// overrides the inference. Returns the values and lines for the report.
pub fn target_values(
    table: &Table,
    column: usize,
    task: Option<TaskKind>,
) -> Result<(TargetValues, Vec<String>)> {
    let found = survey(table, column);
    let name = escape_invisible(&table.names[column]);
    let mut errors = Vec::new();
    if let Some(row) = found.first_missing {
        errors.push(CellError {
            row,
            column,
            message: format!(
                "{}: missing target value '{}'; every row needs a target (fill it in or \
                 remove the row)",
                cell_location(table, row, column),
                raw_text(table, row, column)
            ),
        });
    }
    if let Some(row) = found.first_non_finite {
        errors.push(non_finite_error(table, row, column));
    }
    if let Some(row) = found.first_decimal_comma {
        errors.push(decimal_comma_error(table, row, column));
    }
    if let (Some(row), true) = (found.first_text, found.numbers > found.texts) {
        errors.push(stray_text_error(table, row, column, found.numbers));
    }
    first_error(errors)?;

    let text = found.texts > 0;
    let distinct: BTreeSet<String> = (0..table.rows())
        .map(|row| table.cell(row, column).key())
        .collect();
    let integers = !text && found.first_fraction.is_none();
    let (classification, reason) = match (task, text) {
        (Some(TaskKind::Regression), true) => {
            let row = found.first_text.unwrap_or(0);
            bail!(
                "--task regression needs a numeric target, but column '{name}' holds text \
                 (line {}: '{}')",
                table.lines[row],
                raw_text(table, row, column)
            );
        }
        (Some(TaskKind::Classification), false) if !integers => {
            let row = found.first_fraction.unwrap_or(0);
            bail!(
                "--task classification needs integer or text labels, but column '{name}' has \
                 '{}' at line {}",
                raw_text(table, row, column),
                table.lines[row]
            );
        }
        (Some(kind), _) => (
            kind == TaskKind::Classification,
            format!("target '{name}', set by --task"),
        ),
        (None, true) => (
            true,
            format!("target '{name}' holds text; --task overrides"),
        ),
        (None, false) if integers && distinct.len() <= MAX_CATEGORIES => (
            true,
            format!(
                "target '{name}' has {} distinct integer values, and integer targets with at \
                 most {MAX_CATEGORIES} values are classes; --task overrides",
                distinct.len()
            ),
        ),
        (None, false) if integers => (
            false,
            format!(
                "target '{name}' has {} distinct integer values, more than \
                 {MAX_CATEGORIES}; --task overrides",
                distinct.len()
            ),
        ),
        (None, false) => (
            false,
            format!("target '{name}' has non-integer values; --task overrides"),
        ),
    };
    if !classification {
        let values = table.columns[column].values.clone();
        let lines = vec![format!("task: regression ({reason})")];
        return Ok((TargetValues::Values(values), lines));
    }
    let names = sort_names(distinct.into_iter().collect());
    if names.len() < 2 {
        bail!(
            "target column '{name}' of {} has one class only ('{}'); classification needs at \
             least two classes (is --target the right column?)",
            table.origin,
            names.first().map_or("", String::as_str)
        );
    }
    let index: std::collections::HashMap<&str, u32> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i as u32))
        .collect();
    let labels = (0..table.rows())
        .map(|row| index[table.cell(row, column).key().as_str()])
        .collect();
    let lines = vec![
        format!("task: classification ({reason})"),
        format!("classes in index order: {}", list_classes(&names)),
    ];
    Ok((TargetValues::Classes { names, labels }, lines))
}

/// Lists class names for the report, escaped, at most 30 of them.
pub fn list_classes(names: &[String]) -> String {
    let mut listed: Vec<String> = names.iter().take(30).map(|n| escape_invisible(n)).collect();
    if names.len() > 30 {
        listed.push(format!("and {} more", names.len() - 30));
    }
    listed.join(", ")
}
