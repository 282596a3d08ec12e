//! Comparing a page of the primary's items with what escrow holds, the
//! same way for an escrow table and an export generation.

use escrow_sync_core::{CopyReason, Difference, Mode, Report, Result};

use crate::json::{Record, to_line};
use crate::keys::{KeySchema, KeySetDigest, content_digest};

/// One page compared.
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    /// Items escrow lacks or holds with other content.
    pub to_write: Vec<Record>,
    /// The same, as differences (key text, reason, size).
    pub differences: Vec<Difference>,
    /// Keys escrow holds unchanged.
    pub unchanged: Vec<String>,
    /// Digest of the page's keys.
    pub primary: KeySetDigest,
    /// Digest of those of the page's keys escrow holds.
    pub escrow: KeySetDigest,
}

/// Compares `items` with `held` (a key text's content digest in escrow).
pub(crate) fn compare(
    keys: &KeySchema,
    items: Vec<Record>,
    held: impl Fn(&str) -> Option<[u8; 32]>,
) -> Result<Comparison> {
    let mut c = Comparison::default();
    for item in items {
        let text = keys.key_text(&item)?;
        c.primary.add(&text);
        let reason = match held(&text) {
            Some(d) => {
                c.escrow.add(&text);
                if d == content_digest(&item) {
                    c.unchanged.push(text);
                    continue;
                }
                CopyReason::Changed
            }
            None => CopyReason::Missing,
        };
        c.differences.push(Difference {
            key: text,
            reason,
            size: to_line(&item).len() as u64,
            status: None,
        });
        c.to_write.push(item);
    }
    Ok(c)
}

/// Counts differences into a plan or verify report: every one listed for
/// verify, up to `limit` for plan; a plan counts them as copies.
pub(crate) fn tally(report: &mut Report, differences: Vec<Difference>, mode: Mode, limit: usize) {
    for d in differences {
        match d.reason {
            CopyReason::Missing => report.missing += 1,
            _ => report.different += 1,
        }
        if mode == Mode::Plan {
            report.copied += 1;
            report.bytes_copied += d.size;
        }
        if mode == Mode::Verify || report.differences.len() < limit {
            report.differences.push(d);
        } else {
            report.differences_truncated += 1;
        }
    }
}
