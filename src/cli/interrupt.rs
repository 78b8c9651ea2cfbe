//! SIGINT (Ctrl-C) and SIGTERM during training.
//!
//! The first signal sets a flag that the fit loop checks after every batch:
//! it finishes the batch, writes a checkpoint and returns, and the command
//! writes the history and model and exits with 128 plus the signal number.
//! A second signal of either kind ends the process at once with that status.
//! Every file is written through a temporary file and a rename, so even that
//! leaves the last complete checkpoint in place.
//!
//! The `signal-hook` crate registers the handlers, because they must only
//! touch atomics (async-signal safety), and it can tell SIGINT from SIGTERM,
//! which the exit status reports.

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::flag;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Environment variable that makes `train` stop after this many batches, as
/// if SIGINT had arrived then; tests use it to interrupt at an exact point.
pub const STOP_AFTER_BATCHES_VAR: &str = "DENSETRAIN_STOP_AFTER_BATCHES";

/// Stop requests by signal, registered for the life of the process.
pub struct StopSignals {
    requested: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl StopSignals {
    /// Registers the SIGINT and SIGTERM handlers.
    pub fn install() -> Result<Self> {
        let requested = Arc::new(AtomicBool::new(false));
        let signal = Arc::new(AtomicUsize::new(0));
        for (number, status) in [(SIGINT, 130), (SIGTERM, 143)] {
            // Registered first, so it runs before the flag below is set: it
            // exits only when an earlier signal already set the flag.
            flag::register_conditional_shutdown(number, status, Arc::clone(&requested))
                .context("failed to register the signal handlers")?;
            flag::register_usize(number, Arc::clone(&signal), number as usize)
                .context("failed to register the signal handlers")?;
            flag::register(number, Arc::clone(&requested))
                .context("failed to register the signal handlers")?;
        }
        Ok(Self { requested, signal })
    }

    /// The flag the fit loop checks.
    pub fn flag(&self) -> &AtomicBool {
        &self.requested
    }

    /// Returns the name of the signal that requested the stop and the exit
    /// status that reports it; SIGINT when none arrived (a simulated stop).
    pub fn received(&self) -> (&'static str, u8) {
        match self.signal.load(Ordering::SeqCst) {
            n if n == SIGTERM as usize => ("SIGTERM", 143),
            _ => ("SIGINT", 130),
        }
    }
}

/// Reads [`STOP_AFTER_BATCHES_VAR`]; an unset variable is `None`, a value
/// that is not a whole number is an error.
pub fn stop_after_batches() -> Result<Option<u64>> {
    match std::env::var(STOP_AFTER_BATCHES_VAR) {
        Ok(text) => text.trim().parse().map(Some).with_context(|| {
            format!("invalid {STOP_AFTER_BATCHES_VAR}='{text}': expected a whole number of batches")
        }),
        Err(_) => Ok(None),
    }
}
