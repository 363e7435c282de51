//! `keelctl`: the command-line client, shaped like etcdctl.
//!
//! `keelctl put a 1`, `keelctl get a`, `keelctl get --prefix app/ -w json`,
//! `keelctl txn -i`, `keelctl watch --prefix app/`, `keelctl lease grant 60`,
//! `keelctl lock my-lock`, `keelctl elect my-election me`,
//! `keelctl endpoint status`. Every failure prints `Error: ...` on stderr
//! and exits with status 1.

mod cli;
mod kv;
mod output;
mod sessions;
mod txn;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error}");
            ExitCode::FAILURE
        }
    }
}
