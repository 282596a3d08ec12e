//! Log lines on stderr: text or JSON (`--log-format`), colours only on a
//! terminal, the filter from `ESCROW_SYNC_LOG`, else `RUST_LOG`, else the
//! level `-v`/`-q` choose (warn by default). Every line goes through
//! [`crate::redact`] on its way out.
//!
//! ```
//! use escrow_sync_cli::logs::default_level;
//! assert_eq!(default_level(0, 0), "warn");
//! assert_eq!(default_level(2, 0), "debug");
//! assert_eq!(default_level(0, 2), "off");
//! ```

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::{Global, LogFormat};

/// The environment variables read for the log filter, first found wins.
pub const FILTER_VARIABLES: [&str; 2] = ["ESCROW_SYNC_LOG", "RUST_LOG"];

/// The level `-v` (`verbose` times) and `-q` (`quiet` times) choose when no
/// filter is set in the environment: warn; -v info, -vv debug, -vvv (and
/// more) trace; -q error, -qq (and more) off.
pub fn default_level(verbose: u8, quiet: u8) -> &'static str {
    match (verbose, quiet) {
        (0, 0) => "warn",
        (0, 1) => "error",
        (0, _) => "off",
        (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    }
}

/// The filter: the first of [`FILTER_VARIABLES`] that is set and not empty
/// (an explicit filter wins over `-v`/`-q`), else [`default_level`]. A
/// filter that does not parse is reported and the default used.
pub fn filter(
    global: &Global,
    env: impl Fn(&str) -> Option<String>,
) -> (EnvFilter, Option<String>) {
    let level = default_level(global.verbose, global.quiet);
    for var in FILTER_VARIABLES {
        let Some(spec) = env(var).filter(|s| !s.trim().is_empty()) else { continue };
        return match EnvFilter::builder().parse(&spec) {
            Ok(f) => (f, None),
            Err(e) => (
                EnvFilter::new(level),
                Some(format!("{var}={spec:?} is not a log filter ({e}); logging at {level}")),
            ),
        };
    }
    (EnvFilter::new(level), None)
}

/// Installs the global log subscriber as `global` says.
pub fn init(global: &Global) {
    let (filter, problem) = filter(global, |v| std::env::var(v).ok());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::redact::Stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
    if let Some(problem) = problem {
        tracing::warn!("{problem}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> Global {
        let mut argv = vec!["escrow-sync"];
        argv.extend_from_slice(args);
        argv.push("plan");
        crate::Cli::try_parse_from(argv).unwrap().global
    }

    #[test]
    fn verbosity_raises_and_lowers_the_default_level() {
        assert_eq!(default_level(1, 0), "info");
        assert_eq!(default_level(3, 0), "trace");
        assert_eq!(default_level(9, 0), "trace");
        assert_eq!(default_level(0, 1), "error");
        assert_eq!(global(&["-vv"]).verbose, 2);
        assert_eq!(global(&["-qq"]).quiet, 2);
    }

    #[test]
    fn an_explicit_filter_wins_over_the_flags_and_escrow_sync_log_over_rust_log() {
        let none = |_: &str| None;
        assert_eq!(filter(&global(&["-q"]), none).0.to_string(), "error");
        assert_eq!(filter(&global(&["-v"]), none).0.to_string(), "info");
        let rust_log = |v: &str| (v == "RUST_LOG").then(|| "debug".to_string());
        assert_eq!(filter(&global(&["-q"]), rust_log).0.to_string(), "debug");
        let both =
            |v: &str| Some(if v == "RUST_LOG" { "debug" } else { "escrow_sync=trace" }.to_string());
        assert_eq!(filter(&global(&[]), both).0.to_string(), "escrow_sync=trace");
        // Set but empty: as if unset.
        let empty = |v: &str| (v == "ESCROW_SYNC_LOG").then(String::new);
        assert_eq!(filter(&global(&[]), empty).0.to_string(), "warn");
    }

    #[test]
    fn a_bad_filter_is_reported_and_the_default_used() {
        let bad = |v: &str| (v == "RUST_LOG").then(|| "=[".to_string());
        let (f, problem) = filter(&global(&["-v"]), bad);
        assert_eq!(f.to_string(), "info");
        assert!(problem.is_some_and(|p| p.contains("RUST_LOG")));
    }
}
