//! Validation splits and k-fold assignment.
//!
//! Every rule keeps `floor(n * (1 - F))` rows for training, computed in f64
//! exactly as Keras computes `int(n * (1.0 - validation_split))`, and
//! validates the rest. Float rounding is part of that rule: n=60000, F=0.33
//! gives 40199 training rows (not the decimal 40200), n=10, F=0.33 gives 6,
//! and n=100, F=0.29 gives 71. The tail rule validates the last rows of the
//! file. The shuffled and stratified rules draw the same counts from the
//! `STREAM_SPLIT` stream of the seed. Returned indices are in ascending (file)
//! order.

use crate::rng::{self, Stream};
use anyhow::{Result, bail, ensure};

/// Which rows validate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SplitRule {
    /// Keras's rule: the last rows of the file, before any shuffling.
    #[default]
    Tail,
    /// A seeded random subset.
    Shuffled,
    /// A seeded random subset with each class in proportion (classification only).
    Stratified,
}

impl SplitRule {
    /// Returns the option value that selects this rule.
    pub fn name(self) -> &'static str {
        match self {
            SplitRule::Tail => "tail",
            SplitRule::Shuffled => "shuffled",
            SplitRule::Stratified => "stratified",
        }
    }
}

/// How much to hold out and how to choose it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SplitConfig {
    /// Share of rows that validate, in `[0, 1)`; 0 turns validation off.
    pub fraction: f64,
    /// Which rows.
    pub rule: SplitRule,
    /// Seed of the shuffled and stratified rules.
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            fraction: 0.2,
            rule: SplitRule::Tail,
            seed: 0,
        }
    }
}

/// Rejects a fraction outside `[0, 1)`.
pub fn check_fraction(fraction: f64) -> Result<()> {
    if !(0.0..1.0).contains(&fraction) {
        bail!(
            "--validation-split must be at least 0 and below 1 (0 turns validation off), \
             got {fraction}"
        );
    }
    Ok(())
}

/// Returns the number of training rows out of `n` for a validation fraction:
/// `floor(n * (1 - fraction))` in f64, Keras's rule.
pub fn training_count(n: usize, fraction: f64) -> usize {
    (n as f64 * (1.0 - fraction)).floor() as usize
}

/// Returns the `(training, validation)` sizes for `n` rows, or an error when
/// a fraction above 0 leaves either part empty. A fraction of 0 gives `(n, 0)`.
pub fn split_sizes(n: usize, fraction: f64) -> Result<(usize, usize)> {
    check_fraction(fraction)?;
    if fraction == 0.0 {
        return Ok((n, 0));
    }
    if n == 0 {
        bail!("cannot split 0 rows into training and validation");
    }
    if n == 1 {
        bail!("cannot split 1 row into training and validation");
    }
    let train_count = training_count(n, fraction);
    let validation_count = n - train_count;
    if validation_count == 0 {
        let minimum = smallest_fraction_with_both_parts(n);
        bail!(
            "--validation-split {fraction} of {n} rows selects 0 rows; use at least {minimum} \
             or more data"
        );
    }
    if train_count == 0 {
        let maximum = largest_fraction_with_both_parts(n);
        bail!(
            "--validation-split {fraction} of {n} rows leaves 0 training rows (training \
             keeps floor({n} x (1 - {fraction})) rows, Keras's rule, and 1 - {fraction} is \
             slightly below its decimal value in floating point); use at most {maximum} \
             or more data"
        );
    }
    Ok((train_count, validation_count))
}

/// Splits `n` rows into `(training, validation)` row indices, both ascending.
///
/// `labels` (class indices, one per row) are needed by the stratified rule
/// and ignored by the others. A fraction of 0 returns every row for training
/// and none for validation. A split that leaves either part empty is an error.
pub fn split_indices(
    n: usize,
    labels: Option<&[u32]>,
    config: &SplitConfig,
) -> Result<(Vec<usize>, Vec<usize>)> {
    check_fraction(config.fraction)?;
    if let Some(labels) = labels {
        ensure!(
            labels.len() == n,
            "{} labels given for {n} rows",
            labels.len()
        );
    }
    if config.rule == SplitRule::Stratified && labels.is_none() {
        bail!(
            "--split stratified needs class labels, but the task is regression; \
             use --split shuffled or --split tail"
        );
    }
    let (train_count, validation_count) = split_sizes(n, config.fraction)?;
    if validation_count == 0 {
        return Ok(((0..n).collect(), Vec::new()));
    }
    let validation = match config.rule {
        SplitRule::Tail => (train_count..n).collect(),
        SplitRule::Shuffled => {
            let mut order: Vec<usize> = (0..n).collect();
            Stream::new(config.seed, rng::STREAM_SPLIT).shuffle(&mut order);
            order.truncate(validation_count);
            order
        }
        SplitRule::Stratified => {
            let labels = labels.unwrap_or_default();
            stratified_validation(labels, validation_count, config.seed)
        }
    };
    Ok(complement(n, validation))
}

/// Sorts `validation` and returns `(the other rows, validation)`.
fn complement(n: usize, mut validation: Vec<usize>) -> (Vec<usize>, Vec<usize>) {
    validation.sort_unstable();
    let mut in_validation = vec![false; n];
    for &row in &validation {
        in_validation[row] = true;
    }
    let train = (0..n).filter(|&row| !in_validation[row]).collect();
    (train, validation)
}

/// Draws `count` validation rows with each class in proportion to its size.
///
/// Class `c` with `n_c` rows gets `floor(count * n_c / n)` rows, and the rows
/// still missing go one each to the classes with the largest remainders (ties:
/// larger class first, then a seeded random order). Within a class the rows
/// are a seeded random subset.
fn stratified_validation(labels: &[u32], count: usize, seed: u64) -> Vec<usize> {
    let n = labels.len();
    let members = members_by_class(labels);
    let mut stream = Stream::new(seed, rng::STREAM_SPLIT);
    let mut quotas: Vec<usize> = Vec::with_capacity(members.len());
    let mut order: Vec<(f64, usize, u64, usize)> = Vec::with_capacity(members.len());
    for (class, rows) in members.iter().enumerate() {
        let exact = count as f64 * rows.len() as f64 / n as f64;
        let quota = (exact.floor() as usize).min(rows.len());
        quotas.push(quota);
        if quota < rows.len() {
            order.push((exact - quota as f64, rows.len(), stream.next_u64(), class));
        }
    }

    // Largest remainder first, then the larger class, then the random key.
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let mut missing = count - quotas.iter().sum::<usize>();
    for &(_, _, _, class) in order.iter().cycle() {
        if missing == 0 {
            break;
        }
        if quotas[class] < members[class].len() {
            quotas[class] += 1;
            missing -= 1;
        }
    }

    let mut validation = Vec::with_capacity(count);
    for (mut rows, quota) in members.into_iter().zip(quotas) {
        stream.shuffle(&mut rows);
        validation.extend_from_slice(&rows[..quota]);
    }
    validation
}

/// Row indices of each class, ascending; classes `0..=max label`.
fn members_by_class(labels: &[u32]) -> Vec<Vec<usize>> {
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    let mut members = vec![Vec::new(); classes];
    for (row, &label) in labels.iter().enumerate() {
        members[label as usize].push(row);
    }
    members
}

/// Finds the smallest short decimal fraction that gives `n` rows a non-empty
/// validation part and a non-empty training part, for suggestions.
fn smallest_fraction_with_both_parts(n: usize) -> String {
    short_fraction(n, |digits| {
        (1..10usize.pow(digits)).map(move |k| (k, digits))
    })
}

/// Finds the largest short decimal fraction that still leaves a training row.
fn largest_fraction_with_both_parts(n: usize) -> String {
    short_fraction(n, |digits| {
        (1..10usize.pow(digits)).rev().map(move |k| (k, digits))
    })
}

fn short_fraction<I>(n: usize, candidates: impl Fn(u32) -> I) -> String
where
    I: Iterator<Item = (usize, u32)>,
{
    for digits in 1..=6 {
        for (k, digits) in candidates(digits) {
            let fraction = k as f64 / 10f64.powi(digits as i32);
            let train = training_count(n, fraction);
            if train >= 1 && train < n {
                return format!("{fraction}");
            }
        }
    }
    "a larger data set".to_string()
}

/// Assigns `n` rows to `k` folds and returns `(training, validation)` row
/// indices of each fold, both ascending.
///
/// With `labels` the folds are stratified. The rows of each class (shuffled
/// when `shuffle` is set) are dealt to the folds in turn, continuing from the
/// fold where the previous class stopped. So every class is spread evenly,
/// and fold sizes differ by at most one. Without labels the (optionally shuffled)
/// rows are cut into `k` consecutive folds, the first `n % k` one row larger,
/// as scikit-learn's `KFold` does. Shuffling draws from the `STREAM_FOLDS`
/// stream of `seed`. A class with fewer than `k` rows is absent from the
/// validation part of some folds.
pub fn kfold_indices(
    n: usize,
    k: usize,
    labels: Option<&[u32]>,
    shuffle: bool,
    seed: u64,
) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    if k < 2 {
        bail!("k-fold cross-validation needs at least 2 folds, got {k}");
    }
    if n < k {
        bail!("{k} folds need at least {k} rows, the data has {n}");
    }
    let mut stream = Stream::new(seed, rng::STREAM_FOLDS);
    let mut fold_of = vec![0usize; n];
    match labels {
        Some(labels) => {
            ensure!(
                labels.len() == n,
                "{} labels given for {n} rows",
                labels.len()
            );
            let mut position = 0;
            for mut rows in members_by_class(labels) {
                if shuffle {
                    stream.shuffle(&mut rows);
                }
                for row in rows {
                    fold_of[row] = position % k;
                    position += 1;
                }
            }
        }
        None => {
            let mut order: Vec<usize> = (0..n).collect();
            if shuffle {
                stream.shuffle(&mut order);
            }
            let (base, larger) = (n / k, n % k);
            let mut start = 0;
            for fold in 0..k {
                let size = base + usize::from(fold < larger);
                for &row in &order[start..start + size] {
                    fold_of[row] = fold;
                }
                start += size;
            }
        }
    }
    let folds = (0..k)
        .map(|fold| {
            let validation = (0..n).filter(|&row| fold_of[row] == fold).collect();
            complement(n, validation)
        })
        .collect();
    Ok(folds)
}

/// Counts the rows of each class among `rows`.
pub fn class_counts(labels: &[u32], rows: &[usize], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &row in rows {
        counts[labels[row] as usize] += 1;
    }
    counts
}

/// Describes class counts as `name: count` pairs for the report.
pub fn describe_counts(names: &[String], counts: &[usize]) -> String {
    let mut text = names
        .iter()
        .zip(counts)
        .take(MAX_LISTED)
        .map(|(name, count)| format!("{name}: {count}"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED {
        text.push_str(&format!(" and {} more classes", names.len() - MAX_LISTED));
    }
    text
}

/// Most classes named in one report line or warning.
const MAX_LISTED: usize = 20;

/// Total variation distance between the class distributions of two parts
/// (half the sum of absolute differences of the class shares): 0 for equal
/// distributions, 1 for parts with no class in common.
pub fn distribution_distance(train: &[usize], validation: &[usize]) -> f64 {
    let train_total = train.iter().sum::<usize>().max(1) as f64;
    let validation_total = validation.iter().sum::<usize>().max(1) as f64;
    train
        .iter()
        .zip(validation)
        .map(|(&t, &v)| (t as f64 / train_total - v as f64 / validation_total).abs())
        .sum::<f64>()
        / 2.0
}

/// Distance between class distributions from which the split warning calls
/// the two parts sharply different.
pub const SHARP_DISTANCE: f64 = 0.5;

/// Describes what is wrong with the class make-up of a split, or `None` when
/// nothing is: validation classes absent from training, a validation part
/// with one class, classes with no rows in either part, and sharply
/// different distributions. `rule` adds the matching advice.
pub fn class_balance_warning(
    names: &[String],
    train: &[usize],
    validation: &[usize],
    rule: Option<SplitRule>,
) -> Option<String> {
    // Names the classes with a verb that agrees: "class 4 has", "classes 3, 4 have".
    let name_list = |classes: &[usize], singular: &str, plural: &str| -> String {
        let listed: Vec<&str> = classes
            .iter()
            .take(MAX_LISTED)
            .map(|&c| names[c].as_str())
            .collect();
        let more = if classes.len() > MAX_LISTED {
            format!(" and {} more", classes.len() - MAX_LISTED)
        } else {
            String::new()
        };
        if classes.len() == 1 {
            format!("class {} {singular}", listed[0])
        } else {
            format!("classes {}{more} {plural}", listed.join(", "))
        }
    };

    let present_in_validation: Vec<usize> =
        (0..names.len()).filter(|&c| validation[c] > 0).collect();
    let only_in_validation: Vec<usize> = present_in_validation
        .iter()
        .copied()
        .filter(|&c| train[c] == 0)
        .collect();
    let mut facts = Vec::new();
    if present_in_validation.len() == 1 {
        let class = present_in_validation[0];
        let unseen = if train[class] == 0 {
            ", which does not occur in the training part"
        } else {
            ""
        };
        facts.push(format!(
            "the validation part holds only class {}{unseen}",
            names[class]
        ));
    } else if !only_in_validation.is_empty() {
        facts.push(format!(
            "{} in the validation part but not in the training part",
            name_list(&only_in_validation, "occurs", "occur")
        ));
    }

    let no_training: Vec<usize> = (0..names.len())
        .filter(|&c| train[c] == 0 && validation[c] == 0)
        .collect();
    if !no_training.is_empty() {
        facts.push(format!(
            "{} no rows in either part",
            name_list(&no_training, "has", "have")
        ));
    }
    let no_validation: Vec<usize> = (0..names.len())
        .filter(|&c| validation[c] == 0 && train[c] > 0)
        .collect();
    if !no_validation.is_empty() && present_in_validation.len() > 1 {
        facts.push(format!(
            "{} no validation rows",
            name_list(&no_validation, "has", "have")
        ));
    }

    let distance = distribution_distance(train, validation);
    if distance >= SHARP_DISTANCE {
        facts.push(format!(
            "the class distributions of the training and validation parts differ sharply \
             (total variation distance {distance:.2})"
        ));
    }
    if facts.is_empty() {
        return None;
    }

    let advice = match rule {
        Some(SplitRule::Tail) => {
            "; the file may be sorted or grouped by label: use --split stratified or --split shuffled"
        }
        Some(SplitRule::Shuffled) => "; use --split stratified to keep class proportions",
        Some(SplitRule::Stratified) => "; some classes have too few rows for this split",
        None => "",
    };
    Some(format!("{}{advice}", facts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_keras_float_rule() {
        assert_eq!(training_count(60000, 0.33), 40199);
        assert_eq!(training_count(10, 0.33), 6);
        assert_eq!(training_count(100, 0.29), 71);
        assert_eq!(training_count(10, 0.3), 7);
        assert_eq!(training_count(1797, 0.2), 1437);
    }

    #[test]
    fn stratified_quotas_sum_to_count() {
        let labels: Vec<u32> = (0..103).map(|i| (i % 7) as u32).collect();
        let validation = stratified_validation(&labels, 31, 9);
        assert_eq!(validation.len(), 31);
        let mut sorted = validation.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 31);
    }

    #[test]
    fn suggestions_satisfy_the_rule() {
        assert_eq!(smallest_fraction_with_both_parts(10), "0.1");
        let largest: f64 = largest_fraction_with_both_parts(10).parse().unwrap();
        assert_eq!(training_count(10, largest), 1);
    }

    #[test]
    fn balanced_split_has_no_warning() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        assert_eq!(class_balance_warning(&names, &[8, 8], &[2, 2], None), None);
    }
}
