//! The `escrow-sync` binary: a thin wrapper around `escrow_sync_cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = escrow_sync_cli::Cli::parse();
    // Text or JSON, colours only on a terminal, every line redacted.
    escrow_sync_cli::logs::init(&cli.global);
    // A panic's message goes through the same masking as every log line.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("{}", escrow_sync_cli::redact::redact(&info.to_string()));
    }));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    ExitCode::from(runtime.block_on(escrow_sync_cli::run(cli)))
}
