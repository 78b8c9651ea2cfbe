//! The command line: parse, validate, dispatch. Progress goes to stdout,
//! warnings and errors to stderr.

pub mod args;
pub mod rundir;
pub mod settings;
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
}

/// Parses the process arguments, runs the command and returns the exit status:
/// 0 success, 1 ran without reaching its goal, 2 error.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_verbosity);
    let result = match &cli.command {
        Command::Train(args) => train::run(args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::TargetNotMet) => ExitCode::from(1),
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
