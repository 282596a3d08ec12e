//! `trail events` and `trail athena`: the escrowed CloudTrail logs of a
//! `[[cloudtrail]]` job read for forensics (the `cloudtrail` feature).
//!
//! `events` streams: proven events are written as the library hands them
//! over (a day at a time); events of unproven log files are spooled to an
//! anonymous temporary file and written after them, apart and marked, so
//! that a timeline never mixes the two and memory does not grow with them.

use std::io::{BufRead, BufReader, Seek, Write};

use escrow_sync::cloudtrail::{TimelineEvent, TimelineSummary};
use escrow_sync::{EventsRequest, Runner};

use crate::output::exit;
use crate::{ConfigPath, fatal, load};

/// `trail`: the escrowed CloudTrail logs of a `[[cloudtrail]]` job.
#[derive(Debug, clap::Args)]
pub struct TrailArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TrailCommand,
}

/// The `trail` commands.
#[derive(Debug, clap::Subcommand)]
pub enum TrailCommand {
    /// List the job's escrowed events as a timeline, from escrow alone. An
    /// event is listed only once its log file is proven by a digest signed
    /// by CloudTrail; events of log files that fail validation are listed
    /// apart, marked, and the exit code is 3.
    Events(EventsArgs),
    /// Print the Athena DDL (partition projection by account, region and
    /// day) and example queries over the job's escrow copy.
    Athena(AthenaArgs),
}

/// Output of `trail events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventsFormat {
    /// A timeline, one line an event.
    Text,
    /// One JSON document: `events`, `unverified`, `summary`.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Arguments of `trail events`.
#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    /// The config file.
    #[command(flatten)]
    pub config: ConfigPath,
    /// The `[[cloudtrail]]` job.
    #[arg(long)]
    pub job: String,
    /// Only events at or after this time (RFC 3339, or a day: 2026-12-01).
    #[arg(long)]
    pub from: Option<String>,
    /// Only events at or before this time (RFC 3339, or a day: to its end).
    #[arg(long)]
    pub to: Option<String>,
    /// Only events whose name matches this glob (e.g. 'Delete*').
    #[arg(long, value_name = "GLOB")]
    pub event_name: Option<String>,
    /// Only events of a caller (or a role session's role) whose ARN matches
    /// this glob (e.g. 'arn:aws:iam::*:user/*').
    #[arg(long, value_name = "ARN-GLOB")]
    pub principal: Option<String>,
    /// Only events from an address in this CIDR block (or this address).
    #[arg(long, value_name = "CIDR")]
    pub source_ip: Option<String>,
    /// Only events that delete or weaken data or its protection (the list is
    /// in docs/forensics.md).
    #[arg(long)]
    pub destructive: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = EventsFormat::Text)]
    pub output: EventsFormat,
}

/// Arguments of `trail athena`.
#[derive(Debug, clap::Args)]
pub struct AthenaArgs {
    /// The config file.
    #[command(flatten)]
    pub config: ConfigPath,
    /// The `[[cloudtrail]]` job.
    #[arg(long)]
    pub job: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = crate::OutputFormat::Text)]
    pub output: crate::OutputFormat,
}

/// Runs a `trail` command; returns the exit code.
pub(crate) async fn run(args: &TrailArgs) -> u8 {
    match &args.command {
        TrailCommand::Events(a) => events(a).await,
        TrailCommand::Athena(a) => athena(a).await,
    }
}

/// Control characters (a terminal's escapes, line breaks) and the
/// invisible characters that reorder or hide text (bidirectional controls,
/// zero-width characters, line and paragraph separators) in what the
/// primary can write into a log (object keys, user agents) shown escaped.
fn clean(text: &str) -> String {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c as u32, 0x061C | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2069 | 0xFEFF)
    };
    text.chars()
        .flat_map(|c| if hidden(c) { c.escape_unicode().collect() } else { vec![c] })
        .collect()
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

/// One timeline line: time, principal, source IP, event, resources, error.
fn line(e: &TimelineEvent) -> String {
    let ev = &e.event;
    let mark = match &e.problem {
        Some(p) => format!("UNVERIFIED({})  ", p.kind),
        None => String::new(),
    };
    clean(&format!(
        "{mark}{}  {}  {}  {}:{}  {}  {}",
        or_dash(&ev.time),
        or_dash(&ev.principal),
        or_dash(&ev.source_ip),
        ev.event_source.trim_end_matches(".amazonaws.com"),
        ev.event_name,
        or_dash(&ev.resources.join(",")),
        ev.error_code.as_deref().unwrap_or("-"),
    ))
}

/// A CSV cell that a spreadsheet will not run as a formula.
fn cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.into()
    }
}

const CSV_HEADER: [&str; 13] = [
    "time",
    "principal",
    "source_ip",
    "event_source",
    "event_name",
    "resources",
    "error_code",
    "account",
    "region",
    "verified",
    "problem",
    "event_id",
    "log_file",
];

fn csv_row(w: &mut csv::Writer<Vec<u8>>, e: &TimelineEvent) -> csv::Result<()> {
    let ev = &e.event;
    w.write_record([
        cell(&ev.time),
        cell(&ev.principal),
        cell(&ev.source_ip),
        cell(&ev.event_source),
        cell(&ev.event_name),
        cell(&ev.resources.join(" ")),
        cell(ev.error_code.as_deref().unwrap_or_default()),
        cell(&ev.account),
        cell(&ev.region),
        e.verified.to_string(),
        e.problem.as_ref().map(|p| cell(&format!("{}: {}", p.kind, p.detail))).unwrap_or_default(),
        cell(&ev.event_id),
        cell(&e.log_file),
    ])
}

/// How one event is written.
fn render(format: EventsFormat, e: &TimelineEvent, first: bool) -> String {
    match format {
        EventsFormat::Text => format!("{}\n", line(e)),
        EventsFormat::Json => format!(
            "{}\n    {}",
            if first { "" } else { "," },
            serde_json::to_string(e).unwrap_or_else(|_| "null".into())
        ),
        EventsFormat::Csv => {
            let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
            let _ = csv_row(&mut w, e);
            String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
        }
    }
}

/// Writes proven events to stdout as they come, spools the others.
struct Writer {
    format: EventsFormat,
    out: std::io::BufWriter<std::io::Stdout>,
    spool: std::fs::File,
    proven: u64,
    unproven: u64,
}

impl escrow_sync::cloudtrail::EventSink for Writer {
    fn event(&mut self, e: TimelineEvent) -> escrow_sync::core::Result<()> {
        let io = |err: std::io::Error| {
            escrow_sync::Error::new(
                escrow_sync::ErrorKind::Transient,
                "write",
                "stdout",
                err.to_string(),
            )
        };
        if e.verified {
            let text = render(self.format, &e, self.proven == 0);
            self.proven += 1;
            self.out.write_all(text.as_bytes()).map_err(io)
        } else {
            let text = render(self.format, &e, self.unproven == 0);
            self.unproven += 1;
            // One spooled event a line (JSON and text escape theirs; CSV
            // rows quote theirs and are copied back whole).
            self.spool.write_all(text.as_bytes()).map_err(io)
        }
    }
}

async fn events(args: &EventsArgs) -> u8 {
    let request = EventsRequest {
        job: args.job.clone(),
        from: args.from.clone(),
        to: args.to.clone(),
        event_name: args.event_name.clone(),
        principal: args.principal.clone(),
        source_ip: args.source_ip.clone(),
        destructive: args.destructive,
    };
    let spool = match tempfile::tempfile() {
        Ok(f) => f,
        Err(e) => {
            fatal(&escrow_sync::Error::invalid_config(format!(
                "cannot create a temporary file for unverified events ({e}): set TMPDIR to a \
                 writable folder"
            )));
            return exit::FATAL;
        }
    };
    let mut writer = Writer {
        format: args.output,
        out: std::io::BufWriter::new(std::io::stdout()),
        spool,
        proven: 0,
        unproven: 0,
    };
    let head = match args.output {
        EventsFormat::Text => String::new(),
        EventsFormat::Json => format!(
            "{{\n  \"job\": {},\n  \"events\": [",
            serde_json::to_string(&args.job).unwrap_or_default()
        ),
        EventsFormat::Csv => format!("{}\n", CSV_HEADER.join(",")),
    };
    let _ = writer.out.write_all(head.as_bytes());
    let started = escrow_sync::RunInfo::start();
    let result = async {
        let config = load(&args.config.path)?;
        Runner::new(config).trail_events(&request, &mut writer).await
    }
    .await;
    let (info, summary, error) = match result {
        Ok((info, summary)) => (info, Some(summary), None),
        Err(e) => (started.finished(), None, Some(e)),
    };
    let code = match (&summary, &error) {
        (_, Some(e)) => crate::render::error_code(e),
        (Some(s), None) if s.unverified_files > 0 || s.missing_files > 0 => exit::DIFFERENCES,
        _ => exit::OK,
    };
    let tail = escrow_sync::doc::head_fields(&info, "trail events", error.as_ref(), code);
    if let Err(e) = finish(&mut writer, summary.as_ref(), tail) {
        eprintln!("error: writing the events: {e}");
        return exit::ITEMS_FAILED;
    }
    if let Some(e) = &error {
        fatal(e);
    }
    code
}

/// Writes the spooled unverified events and the summary (none when the
/// command failed), and, in JSON, the head's fields (`tail`).
fn finish(
    w: &mut Writer,
    summary: Option<&TimelineSummary>,
    tail: serde_json::Map<String, serde_json::Value>,
) -> std::io::Result<()> {
    w.spool.rewind()?;
    let spooled = BufReader::new(w.spool.try_clone()?);
    match (w.format, summary) {
        (EventsFormat::Text | EventsFormat::Csv, None) => {}
        (EventsFormat::Text, Some(s)) => {
            if w.unproven > 0 {
                writeln!(
                    w.out,
                    "\nUNVERIFIED: {} event(s) of log files no digest signed by CloudTrail \
                     proves (planted, altered, or not yet signed); not the account's record:",
                    w.unproven
                )?;
            }
            for l in spooled.lines() {
                writeln!(w.out, "{}", l?)?;
            }
            write!(w.out, "{}", summary_text(s))?;
        }
        (EventsFormat::Json, s) => {
            write!(w.out, "\n  ],\n  \"unverified\": [")?;
            for l in spooled.lines() {
                write!(w.out, "{}", l?)?;
                writeln!(w.out)?;
            }
            write!(
                w.out,
                "  ],\n  \"summary\": {}",
                serde_json::to_string(&s).unwrap_or_else(|_| "null".into())
            )?;
            for (k, v) in tail {
                write!(w.out, ",\n  {}: {}", serde_json::Value::from(k), v)?;
            }
            writeln!(w.out, "\n}}")?;
        }
        (EventsFormat::Csv, Some(s)) => {
            for l in spooled.lines() {
                writeln!(w.out, "{}", l?)?;
            }
            // The rows are data; what was wrong goes to stderr.
            eprint!("{}", summary_text(s));
        }
    }
    w.out.flush()
}

/// The problems, warnings and counts of a timeline, as text.
fn summary_text(s: &TimelineSummary) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (file, kind, detail) in &s.problems {
        let _ = writeln!(out, "unverified file {}: {kind}: {}", clean(file), clean(detail));
    }
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {}", clean(w));
    }
    let _ = writeln!(
        out,
        "\n{} event(s) from {} verified log file(s) over {} day(s); {} event(s) in {} \
         unverified file(s); {} log file(s) a proven digest lists are missing from escrow",
        s.events,
        s.verified_files,
        s.days,
        s.unverified_events,
        s.unverified_files,
        s.missing_files
    );
    out
}

async fn athena(args: &AthenaArgs) -> u8 {
    let started = escrow_sync::RunInfo::start();
    let result = async {
        let config = load(&args.config.path)?;
        let (info, ddl) = Runner::new(config).trail_athena(&args.job).await?;
        if ddl.tables.is_empty() {
            return Err(escrow_sync::Error::invalid_config(format!(
                "job {}: escrow holds no CloudTrail log folder Athena can read: run the job first",
                args.job
            )));
        }
        Ok((info, ddl))
    }
    .await;
    let (info, result) = match result {
        Ok((info, ddl)) => (info, Ok(ddl)),
        Err(e) => (started.finished(), Err(e)),
    };
    let code = match &result {
        Ok(_) => exit::OK,
        Err(e) => crate::render::error_code(e),
    };
    let mut out = std::io::stdout().lock();
    match (args.output, &result) {
        (crate::OutputFormat::Json, _) => {
            let _ = writeln!(out, "{}", escrow_sync::doc::athena(&info, &result, code));
        }
        (crate::OutputFormat::Text, Ok(ddl)) => {
            for t in &ddl.tables {
                let _ = writeln!(out, "-- Table {} over {}\n{}\n", t.table, t.location, t.ddl);
                for (title, sql) in &t.queries {
                    let _ = writeln!(out, "-- {title}\n{sql}\n");
                }
            }
            for s in &ddl.skipped {
                let _ = writeln!(out, "-- left out (not a name AWS writes): {}", clean(s));
            }
        }
        (crate::OutputFormat::Text, Err(_)) => {}
    }
    if let Err(e) = &result {
        fatal(e);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_primary_wrote_cannot_steer_the_terminal_or_a_spreadsheet() {
        assert_eq!(clean("a\nb\x1b[31m"), "a\\u{a}b\\u{1b}[31m");
        assert_eq!(clean("key\u{202e}gpj.exe"), "key\\u{202e}gpj.exe");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("203.0.113.9"), "203.0.113.9");
    }
}
