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
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Feature `otel`: spans and metrics to the OTLP endpoint the OTEL_* variables name (none
    // set: nothing exported). Kept to the end of main: dropping it flushes.
    #[cfg(feature = "otel")]
    let otel = match jobforge::otel::init_from_env() {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("jobforge-server: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let registry = tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "jobforge=info,tower_http=warn".into()),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only on a terminal, not in log files and collectors.
                .with_ansi(std::io::stderr().is_terminal()),
        );
    #[cfg(feature = "otel")]
    let registry = registry.with(otel.as_ref().map(jobforge::otel::OtelGuard::layer));
    registry.init();
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jobforge-server: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
