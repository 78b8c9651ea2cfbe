//! Built-in data sets, embedded in the binary.
//!
//! `digits` is the UCI "Optical Recognition of Handwritten Digits" set
//! (E. Alpaydin, C. Kaynak; CC BY 4.0) as scikit-learn ships it: 1797 images
//! of 8x8 pixels with intensities 0..16, one image a row (`pixel0` to
//! `pixel63`), and the target column `digit` (0..9). `data/README.md` has the
//! licence note.

use crate::data::CsvOptions;
use crate::data::csv::{self, CsvRead};
use anyhow::Result;

/// The digits set as CSV text.
pub const DIGITS_CSV: &str = include_str!("../../data/digits.csv");

/// Name of the built-in digits in messages.
pub const DIGITS_ORIGIN: &str = "built-in digits";

/// Target column of the built-in digits.
pub const DIGITS_TARGET: &str = "digit";

/// Reads the built-in digits set.
pub fn digits() -> Result<CsvRead> {
    let options = CsvOptions {
        header: Some(true),
        delimiter: Some(b','),
        decimal_comma: false,
    };
    csv::read_bytes(DIGITS_CSV.as_bytes(), DIGITS_ORIGIN, &options)
}
