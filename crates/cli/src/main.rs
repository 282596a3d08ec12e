//! The `escrow-sync` binary: a thin wrapper around `escrow_sync_cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ESCROW_SYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(escrow_sync_cli::redact::Stderr)
        .init();
    // A panic's message goes through the same masking as every log line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{}", escrow_sync_cli::redact::redact(&info.to_string()));
    }));
    let cli = escrow_sync_cli::Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    ExitCode::from(runtime.block_on(escrow_sync_cli::run(cli)))
}
