//! Progress bars on a terminal; nothing otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use escrow_sync::Observer;
use escrow_sync_core::{Mode, ProgressEvent, ProgressFn};

/// A spinner per running job on a terminal's stderr.
pub(crate) struct Progress {
    enabled: bool,
    bars: Mutex<HashMap<String, JobBar>>,
}

impl Progress {
    pub(crate) fn new() -> Self {
        Progress { enabled: std::io::stderr().is_terminal(), bars: Mutex::default() }
    }

    fn job(&self, name: &str, mode: Mode) -> Option<JobBar> {
        if !self.enabled || mode != Mode::Run {
            return None;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(JobBar { bar, counts: Arc::new(Counts::default()) })
    }
}

impl Observer for Progress {
    fn job_started(&self, name: &str, mode: Mode) -> Option<ProgressFn> {
        let bar = self.job(name, mode)?;
        let callback: ProgressFn = Arc::new(bar.callback());
        self.bars.lock().ok()?.insert(name.to_string(), bar);
        Some(callback)
    }

    fn job_finished(&self, name: &str) {
        if let Some(bar) = self.bars.lock().ok().and_then(|mut b| b.remove(name)) {
            bar.finish();
        }
    }
}

#[derive(Default)]
struct Counts {
    copied: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
    retries: AtomicU64,
}

struct JobBar {
    bar: ProgressBar,
    counts: Arc<Counts>,
}

impl JobBar {
    fn callback(&self) -> impl Fn(&ProgressEvent) + Send + Sync + 'static {
        let bar = self.bar.clone();
        let c = self.counts.clone();
        move |e| {
            match e {
                ProgressEvent::Copied { bytes, .. } => {
                    c.copied.fetch_add(1, Ordering::Relaxed);
                    c.bytes.fetch_add(*bytes, Ordering::Relaxed);
                }
                ProgressEvent::Skipped { .. } => {
                    c.skipped.fetch_add(1, Ordering::Relaxed);
                }
                ProgressEvent::Failed { .. } => {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                }
                ProgressEvent::Retrying { .. } => {
                    c.retries.fetch_add(1, Ordering::Relaxed);
                }
                ProgressEvent::Cancelling => {
                    bar.println("cancelling: waiting for copies in flight")
                }
                _ => return,
            }
            bar.set_message(format!(
                "copied {} ({}), up to date {}, failed {}, retries {}",
                c.copied.load(Ordering::Relaxed),
                crate::output::bytes(c.bytes.load(Ordering::Relaxed)),
                c.skipped.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
                c.retries.load(Ordering::Relaxed),
            ));
        }
    }

    fn finish(self) {
        self.bar.finish_and_clear();
    }
}
