//! `jobforge-server`: jobforge's HTTP API and workers in one process. See
//! `jobforge-server --help`, and `jobforge::http::server` for what each flag does.

use std::io::IsTerminal;

use clap::Parser;
use jobforge::http::server::{Cli, run};

/// mimalloc for the binary (feature `mimalloc`): see Cargo.toml for why.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "jobforge=info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal, not in log files and collectors.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jobforge-server: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
