//! The command line: parse, validate, dispatch. Progress goes to stdout,
//! warnings and errors to stderr.

pub mod args;
pub mod control;
pub mod cv;
pub mod device;
pub mod evaluate;
pub mod experiment;
pub mod fine_tune;
pub mod info;
pub mod interrupt;
pub mod lr_find;
pub mod predict;
pub mod resume;
pub mod run_files;
pub mod rundir;
pub mod settings;
pub mod sweep;
pub mod train;

use args::{Cli, Command};
use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Success,
    /// Exit status 1: the command ran but did not reach its goal (e.g. a non-finite loss).
    TargetNotMet,
    /// Stopped by a signal after saving a checkpoint; the status is 128 plus the
    /// signal number (130 for SIGINT, 143 for SIGTERM), as shells report it.
    Interrupted(u8),
}

/// Parses the process arguments, runs the command and returns the exit status:
/// 0 success, 1 ran without reaching its goal, 2 error, 130 or 143 stopped by a signal.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_verbosity);
    let result = match &cli.command {
        Command::Train(args) => train::run(args),
        Command::LrFind(args) => lr_find::run(args),
        Command::Sweep(args) => sweep::run(args),
        Command::Cv(args) => cv::run(args),
        Command::Info(args) => info::run(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Predict(args) => predict::run(args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::TargetNotMet) => ExitCode::from(1),
        Ok(Outcome::Interrupted(status)) => ExitCode::from(status),
        Err(err) => {
            eprintln!("{}", error_text(&err));
            ExitCode::from(2)
        }
    }
}

/// Formats an error and its causes, one per line, with advice when the disk
/// is full. A cause whose text the line before already contains is left out,
/// because many library errors print their source in their own message and
/// also return it as their cause.
fn error_text(err: &anyhow::Error) -> String {
    let mut text = format!("error: {err}");
    let mut previous = err.to_string();
    for cause in err.chain().skip(1) {
        let line = cause.to_string();
        if !previous.contains(&line) {
            text.push_str(&format!("\n  caused by: {line}"));
        }
        previous = line;
    }
    let disk_full = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull)
    });
    if disk_full {
        text.push_str("\n  the disk is full: free some space, or write to another disk");
    }
    text
}

fn init_logging(verbosity: u8) {
    let default = match verbosity {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format(|buf, record| {
            let level = record.level().as_str().to_ascii_lowercase();
            writeln!(buf, "{level}: {}", record.args())
        })
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that prints its source in its own message, as many do.
    #[derive(Debug)]
    struct Wrapper(std::io::Error);

    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "write failed: {}", self.0)
        }
    }

    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_text_skips_repeated_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let err = anyhow::Error::new(Wrapper(io)).context("failed to save the checkpoint");
        assert_eq!(
            error_text(&err),
            "error: failed to save the checkpoint\n  \
             caused by: write failed: No space left on device\n  \
             the disk is full: free some space, or write to another disk"
        );
    }

    #[test]
    fn error_text_keeps_distinct_causes() {
        let err = anyhow::anyhow!("bad value")
            .context("line 3")
            .context("failed to read a.csv");
        assert_eq!(
            error_text(&err),
            "error: failed to read a.csv\n  caused by: line 3\n  caused by: bad value"
        );
    }
}
