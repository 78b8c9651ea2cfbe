//! The fit loop.
