//! `keelctl`: the command-line client, shaped like etcdctl.
//!
//! `keelctl put a 1`, `keelctl get a`, `keelctl get --prefix app/ -w json`,
//! `keelctl txn -i`, `keelctl watch --prefix app/`, `keelctl lease grant 60`,
//! `keelctl lock my-lock`, `keelctl elect my-election me`,
//! `keelctl endpoint status`. A failure prints `Error: ...` on stderr and
//! exits with etcdctl's status for it (`cli::Failure`).

mod auth;
mod cli;
mod connect;
mod etcd_format;
mod kv;
mod maintenance;
mod output;
mod sessions;
mod txn;

use std::process::ExitCode;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::Parser;

use crate::cli::Failure;

fn main() -> ExitCode {
    // etcdctl's variables, when keelctl's own are not set.
    for name in ["ENDPOINTS", "CACERT", "CERT", "KEY", "USER", "PASSWORD"] {
        let keelctl = format!("KEELCTL_{name}");
        if std::env::var_os(&keelctl).is_none() {
            if let Some(value) = std::env::var_os(format!("ETCDCTL_{name}")) {
                std::env::set_var(keelctl, value);
            }
        }
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return exit(usage_failure(&error)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return exit(Failure::from(format!("cannot start the runtime: {error}"))),
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => exit(failure),
    }
}

fn exit(failure: Failure) -> ExitCode {
    if !failure.message.is_empty() {
        eprintln!("Error: {}", failure.message);
    }
    ExitCode::from(failure.status)
}

/// What etcdctl does with a command line it cannot take: help asked for,
/// or a command group without its subcommand, prints the help on stdout
/// and succeeds; missing or extra arguments are bad arguments (128); an
/// unknown output format, sort target or order is a missing feature (4);
/// any other bad flag is an error (1).
fn usage_failure(error: &clap::Error) -> Failure {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            print!("{}", error.render());
            Failure::new(0, "")
        }
        kind => {
            let status = match kind {
                ErrorKind::MissingRequiredArgument
                | ErrorKind::TooFewValues
                | ErrorKind::WrongNumberOfValues => Failure::BAD_ARGS,
                ErrorKind::InvalidValue if names_a_feature(error) => Failure::BAD_FEATURE,
                _ => Failure::ERROR,
            };
            eprint!("{}", error.render());
            Failure::new(status, "")
        }
    }
}

/// Whether a bad value was given to a flag that picks a feature.
fn names_a_feature(error: &clap::Error) -> bool {
    match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(flag)) => {
            ["--write-out", "--sort-by", "--order", "--consistency"]
                .iter()
                .any(|feature| flag.contains(feature))
        }
        _ => false,
    }
}
