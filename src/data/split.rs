//! Validation splits.

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
