//! Progress of `run`, `verify` and `restore`: a bar per job on a terminal
//! (with rate, and ETA once the plan's totals are known); otherwise one
//! stats line per `--stats-interval` on stderr, and a last one when the job
//! ends (text, or one JSON object with `--log-format json`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use indicatif::{ProgressBar, ProgressStyle};

use escrow_sync::Observer;
use escrow_sync::stats::{JobStats, StatsSnapshot};
use escrow_sync_core::{Mode, ProgressEvent, ProgressFn};

use crate::LogFormat;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Display {
    /// Bars on a terminal.
    Bars,
    /// Stats lines every interval (`None`: never; the last line only).
    Lines(Option<Duration>),
}

/// Watches the jobs of one command (`run`, `verify`, `restore`).
pub(crate) struct Progress {
    command: &'static str,
    display: Display,
    format: LogFormat,
    jobs: Mutex<HashMap<String, Watch>>,
}

/// One running job: its counts, and its bar or stats-line ticker.
struct Watch {
    stats: Arc<Stats>,
    bar: Option<ProgressBar>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Progress of `command`: bars when stderr is a terminal, else stats
    /// lines every `interval` (zero: only the last line of each job).
    pub(crate) fn new(command: &'static str, interval: Duration, format: LogFormat) -> Self {
        let display = if std::io::stderr().is_terminal() {
            Display::Bars
        } else {
            Display::Lines(Some(interval).filter(|i| !i.is_zero()))
        };
        Progress { command, display, format, jobs: Mutex::default() }
    }

    fn watch(&self, name: &str, mode: Mode) -> Option<Watch> {
        // A plan copies nothing: there is nothing to watch.
        if mode == Mode::Plan {
            return None;
        }
        let stats = Arc::new(Stats::new(self.command, name, mode));
        match self.display {
            Display::Bars => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(style(None));
                bar.set_prefix(format!("{} {name}", self.command));
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(Watch { stats, bar: Some(bar), ticker: None })
            }
            Display::Lines(interval) => {
                let ticker = interval.and_then(|every| {
                    let runtime = tokio::runtime::Handle::try_current().ok()?;
                    let (stats, format) = (stats.clone(), self.format);
                    Some(runtime.spawn(async move {
                        let mut ticks = tokio::time::interval(every);
                        ticks.tick().await; // the first tick is at once
                        loop {
                            ticks.tick().await;
                            print_line(&stats.line(format, false));
                        }
                    }))
                });
                Some(Watch { stats, bar: None, ticker })
            }
        }
    }
}

impl Observer for Progress {
    fn job_started(&self, name: &str, mode: Mode) -> Option<ProgressFn> {
        let watch = self.watch(name, mode)?;
        let (stats, bar) = (watch.stats.clone(), watch.bar.clone());
        self.jobs.lock().ok()?.insert(name.to_string(), watch);
        Some(Arc::new(move |e: &ProgressEvent| {
            if stats.count(e)
                && let Some(bar) = &bar
            {
                stats.draw(bar, e);
            }
        }))
    }

    fn job_finished(&self, name: &str) {
        let Some(watch) = self.jobs.lock().ok().and_then(|mut j| j.remove(name)) else {
            return;
        };
        if let Some(ticker) = watch.ticker {
            ticker.abort();
        }
        match watch.bar {
            Some(bar) => bar.finish_and_clear(),
            None => print_line(&watch.stats.line(self.format, true)),
        }
    }
}

/// Writes one line on stderr, secrets masked.
fn print_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{}", crate::redact::redact(line));
}

/// The bar's style: a spinner until the totals are known, then a bar of
/// `total` bytes (or items) with rate and ETA.
fn style(total: Option<Unit>) -> ProgressStyle {
    let template = match total {
        None => "{spinner} {prefix} {msg} [{elapsed}]",
        Some(Unit::Bytes) => {
            "{prefix} [{bar:24}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec}, \
             ETA {eta} {msg} [{elapsed}]"
        }
        Some(Unit::Items) => {
            "{prefix} [{bar:24}] {pos}/{len} items, {per_sec}, ETA {eta} {msg} \
                              [{elapsed}]"
        }
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .progress_chars("=> ")
}

/// What a bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Bytes,
    Items,
}

/// A job's counts (the facade's [`JobStats`]) and how this binary shows
/// them.
struct Stats {
    command: &'static str,
    name: String,
    counts: JobStats,
    /// What the bar counts, once the totals are known.
    unit: Mutex<Option<Unit>>,
}

impl Stats {
    fn new(command: &'static str, name: &str, mode: Mode) -> Self {
        Stats {
            command,
            name: name.to_string(),
            counts: JobStats::new(mode),
            unit: Mutex::new(None),
        }
    }

    /// Counts `e`; whether it changed anything shown.
    fn count(&self, e: &ProgressEvent) -> bool {
        self.counts.count(e)
    }

    /// The items part: `1200 items (1180 copied, 20 up to date, 0 failed)`,
    /// with `of N` once the plan's totals are known.
    fn items_text(s: &StatsSnapshot) -> String {
        let of = match s.planned {
            Some(p) => format!(" of {}", p.items),
            None => String::new(),
        };
        let detail = match s.mode {
            Mode::Verify => {
                format!("{} same, {} differ, {} failed", s.up_to_date, s.differ, s.failed)
            }
            _ => format!("{} copied, {} up to date, {} failed", s.copied, s.up_to_date, s.failed),
        };
        format!("{}{of} items ({detail})", s.items())
    }

    /// One stats line (`finished`: the job's last).
    fn line(&self, format: LogFormat, finished: bool) -> String {
        let s = self.counts.snapshot();
        let rate = s.bytes_per_second();
        match format {
            LogFormat::Text => format!(
                "stats: {} job {}{}: {}, {}, {}/s, {} retries, {} throttled, {}s",
                self.command,
                self.name,
                if finished { " finished" } else { "" },
                Self::items_text(&s),
                crate::output::bytes(s.bytes),
                crate::output::bytes(rate as u64),
                s.retries,
                s.throttled,
                s.elapsed.as_secs(),
            ),
            LogFormat::Json => serde_json::json!({
                "timestamp": humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
                "level": "INFO",
                "target": "escrow_sync::stats",
                "fields": {
                    "message": if finished { "job finished" } else { "stats" },
                    "command": self.command,
                    "job": self.name,
                    "finished": finished,
                    "items": s.items(),
                    "copied": s.copied,
                    "up_to_date": s.up_to_date,
                    "differ": s.differ,
                    "failed": s.failed,
                    "bytes": s.bytes,
                    "bytes_per_second": rate.round() as u64,
                    "retries": s.retries,
                    "throttled": s.throttled,
                    "elapsed_seconds": s.elapsed.as_secs_f64(),
                    "planned_items": s.planned.map(|p| p.items),
                    "planned_bytes": s.planned.map(|p| p.bytes),
                }
            })
            .to_string(),
        }
    }

    /// Updates the bar after `e`.
    fn draw(&self, bar: &ProgressBar, e: &ProgressEvent) {
        match e {
            ProgressEvent::Cancelling => {
                bar.println("cancelling: waiting for the work in flight");
                return;
            }
            ProgressEvent::Stopping => {
                bar.println("stopping the work in flight");
                return;
            }
            _ => {}
        }
        let Ok(mut unit) = self.unit.lock() else { return };
        let s = self.counts.snapshot();
        if unit.is_none()
            && let Some(p) = s.planned
        {
            // A run's bar counts the bytes to copy; verify's, or a run
            // with nothing to copy, the items.
            let chosen = if s.mode == Mode::Run && p.bytes > 0 { Unit::Bytes } else { Unit::Items };
            bar.set_length(if chosen == Unit::Bytes { p.bytes } else { p.items });
            bar.set_style(style(Some(chosen)));
            *unit = Some(chosen);
        }
        match *unit {
            Some(Unit::Bytes) | None => bar.set_position(s.bytes),
            Some(Unit::Items) => bar.set_position(s.items()),
        }
        let mut msg = match (*unit, s.mode) {
            (None, _) => format!(
                "{}, {}, {}/s",
                Self::items_text(&s),
                crate::output::bytes(s.bytes),
                crate::output::bytes(s.bytes_per_second() as u64),
            ),
            (Some(_), Mode::Verify) => format!("({} differ, {} failed)", s.differ, s.failed),
            (Some(_), _) => {
                format!("({} copied, {} up to date, {} failed)", s.copied, s.up_to_date, s.failed)
            }
        };
        if s.retries > 0 {
            msg.push_str(&format!(", {} retries", s.retries));
        }
        if s.throttled > 0 {
            msg.push_str(&format!(", {} throttled", s.throttled));
        }
        bar.set_message(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_stats() -> Stats {
        let s = Stats::new("run", "assets", Mode::Run);
        let events = [
            ProgressEvent::Copied { key: "a".into(), bytes: 3 * 1024 * 1024 },
            ProgressEvent::Copied { key: "b".into(), bytes: 1024 * 1024 },
            ProgressEvent::Skipped { key: "c".into(), size: 10 },
            ProgressEvent::Failed { key: "d".into(), error: "x".into() },
            ProgressEvent::Throttled { key: "d".into() },
            ProgressEvent::Retrying {
                key: "d".into(),
                attempt: 1,
                error: "slow down".into(),
                delay: Duration::ZERO,
            },
        ];
        for e in &events {
            assert!(s.count(e), "{e:?}");
        }
        s
    }

    #[test]
    fn a_text_line_carries_items_bytes_rate_retries_and_throttles() {
        let line = run_stats().line(LogFormat::Text, false);
        assert!(
            line.starts_with(
                "stats: run job assets: 4 items (2 copied, 1 up to date, 1 failed), 4.0 MiB, "
            ),
            "{line}"
        );
        assert!(line.contains("/s, 1 retries, 1 throttled, 0s"), "{line}");
        let last = run_stats().line(LogFormat::Text, true);
        assert!(last.starts_with("stats: run job assets finished: "), "{last}");
    }

    #[test]
    fn a_json_line_is_one_object_with_the_counts() {
        let s = run_stats();
        s.count(&ProgressEvent::Planned { items: 10, copies: 6, bytes: 6 * 1024 * 1024 });
        let v: serde_json::Value = serde_json::from_str(&s.line(LogFormat::Json, true)).unwrap();
        let f = &v["fields"];
        assert_eq!(v["level"], "INFO");
        assert_eq!((f["job"].as_str(), f["command"].as_str()), (Some("assets"), Some("run")));
        assert_eq!(f["items"], 4);
        assert_eq!((f["copied"].as_u64(), f["failed"].as_u64()), (Some(2), Some(1)));
        assert_eq!(f["bytes"], 4 * 1024 * 1024);
        assert_eq!((f["retries"].as_u64(), f["throttled"].as_u64()), (Some(1), Some(1)));
        assert_eq!((f["planned_items"].as_u64(), f["finished"].as_bool()), (Some(10), Some(true)));
    }

    #[test]
    fn verify_counts_same_and_differing_items_and_the_bytes_it_compared() {
        let s = Stats::new("verify", "assets", Mode::Verify);
        s.count(&ProgressEvent::Skipped { key: "a".into(), size: 100 });
        s.count(&ProgressEvent::Differs { key: "b".into(), size: 24 });
        s.count(&ProgressEvent::Planned { items: 2, copies: 1, bytes: 24 });
        let line = s.line(LogFormat::Text, false);
        assert!(
            line.starts_with(
                "stats: verify job assets: 2 of 2 items (1 same, 1 differ, 0 failed), 124 B, "
            ),
            "{line}"
        );
        // Events the stats do not show change nothing.
        assert!(!s.count(&ProgressEvent::Concurrency { limit: 3 }));
    }
}
