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
            let mut text = format!("error: {err}");
            for cause in err.chain().skip(1) {
                text.push_str(&format!("\n  caused by: {cause}"));
            }
            eprintln!("{text}");
            ExitCode::from(2)
        }
    }
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
