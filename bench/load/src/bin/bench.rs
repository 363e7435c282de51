//! `bench`: keel's load generator. See `bench --help` and docs/bench.md.

use anyhow::{Context, Result};
use clap::Parser;
use keel_load::args::{Cli, Command, RunArgs};
use keel_load::report::{markdown, RunReport};

/// mimalloc, as in `keel`: glibc's allocator had been about a sixth of the
/// generator's CPU in the watch workload (each event a few allocations per
/// watcher), the same for both systems measured.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Some(Command::Report { runs }) => report(&runs),
        None => run(cli.run),
    };
    if let Err(error) = outcome {
        eprintln!("Error: {error:#}");
        std::process::exit(1);
    }
}

fn run(args: RunArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .context("start the runtime")?;
    let json = args.json;
    let plot = args.plot.clone();
    let mut report = runtime.block_on(keel_load::workload::run(args))?;
    report.plot = plot.as_ref().map(|path| path.display().to_string());
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    if let Some(path) = plot {
        keel_load::plot::add_to_chart(&path, &report)?;
    }
    // Connections and watches may still be open; the process ends here.
    runtime.shutdown_background();
    Ok(())
}

fn report(paths: &[std::path::PathBuf]) -> Result<()> {
    let mut runs = Vec::new();
    for path in paths {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let run: RunReport = serde_json::from_str(&text)
            .with_context(|| format!("{} is not the JSON of a bench run", path.display()))?;
        runs.push(run);
    }
    print!("{}", markdown(&runs));
    Ok(())
}
