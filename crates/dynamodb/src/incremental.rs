//! Incremental native exports (`mode = "native-incremental"`): what a run
//! asks DynamoDB for, the change lines an incremental export writes, and
//! how `restore` chains generations.
//!
//! A run exports only what changed since the previous run's export ended
//! (its **watermark**), with `ExportTableToPointInTime`, `ExportType =
//! INCREMENTAL_EXPORT` and `IncrementalExportSpecification { ExportFromTime
//! = watermark, ExportToTime = now }` ([`plan_export`]). The watermark is
//! read only from a generation that escrow-sync completed and a run
//! manifest records (its `manifest.json`, checked against the recorded
//! SHA-256), never from anything in the staging prefix the primary may
//! write. DynamoDB allows a window of 15 minutes to 24 hours: a first run,
//! a gap over 24 hours, or a watermark older than point-in-time recovery
//! reaches falls back to a full export; a run less than 15 minutes after
//! the watermark exports nothing and says so.
//!
//! An incremental export writes, under `data/`, gzip files of one JSON line
//! per changed item, its final state in the window (DynamoDB compacts the
//! changes of one item):
//!
//! ```text
//! {"Metadata":{"WriteTimestampMicros":{"N":"1732752000000000"}},"Keys":{"pk":{"S":"a"}},"NewImage":{"pk":{"S":"a"},"n":{"N":"1"}},"OldImage":{…}}
//! {"Metadata":{"WriteTimestampMicros":{"N":"1732752000000001"}},"Keys":{"pk":{"S":"b"}},"OldImage":{…}}
//! ```
//!
//! A line with `NewImage` puts that image; a line without it (keys only, or
//! keys and `OldImage`) deletes the key ([`parse_change_line`]).
//!
//! ```
//! use escrow_sync_dynamodb::incremental::{Change, parse_change_line};
//! let line = r#"{"Metadata":{"WriteTimestampMicros":{"N":"5"}},"Keys":{"pk":{"S":"a"}}}"#;
//! let c = parse_change_line(line).unwrap();
//! assert!(matches!(c.change, Change::Delete { .. }));
//! assert_eq!(c.write_micros, Some(5));
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use escrow_sync_core::{Error, ErrorKind, Result};

use crate::json::{Record, record_from_json};
use crate::keys::KeySchema;

/// The shortest window DynamoDB exports incrementally.
pub const MIN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// The longest window DynamoDB exports incrementally.
pub const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The manifest's `kind` of a generation holding the whole table.
pub const KIND_FULL: &str = "full";
/// The manifest's `kind` of a generation holding changes since its base.
pub const KIND_INCREMENTAL: &str = "incremental";

/// Which images an incremental export writes (`ExportViewType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewType {
    /// `NEW_AND_OLD_IMAGES` (DynamoDB's default).
    #[default]
    NewAndOldImages,
    /// `NEW_IMAGE`.
    NewImage,
}

impl ViewType {
    /// DynamoDB's name of the view type.
    pub fn as_str(self) -> &'static str {
        match self {
            ViewType::NewAndOldImages => "NEW_AND_OLD_IMAGES",
            ViewType::NewImage => "NEW_IMAGE",
        }
    }
}

/// The point in time the newest verified generation reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// The generation whose `manifest.json` records it.
    pub generation: String,
    /// Its export time (full) or export-to time (incremental).
    pub time: SystemTime,
}

/// What a run of a `native-incremental` job asks DynamoDB for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportPlan {
    /// A full export at `at`, for `reason`.
    Full {
        /// The export time asked for.
        at: SystemTime,
        /// Why not an incremental export, for the report.
        reason: String,
    },
    /// The changes in `[from, to)` on top of generation `base`.
    Incremental {
        /// The generation the changes apply to.
        base: String,
        /// ExportFromTime (inclusive): the watermark.
        from: SystemTime,
        /// ExportToTime (exclusive): the new watermark.
        to: SystemTime,
    },
    /// Nothing to ask for yet, for `reason`.
    Skip {
        /// The report's line.
        reason: String,
    },
}

/// `t` as RFC 3339 to the second.
pub fn time_text(t: SystemTime) -> String {
    escrow_sync_core::rfc3339(t)
}

/// `t` truncated to the whole second (DynamoDB's timestamps are seconds).
pub fn whole_second(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// Chooses the export of a run at `to` (now, or DynamoDB's latest
/// restorable time if earlier), given the newest verified `watermark` and
/// the earliest time point-in-time recovery reaches, when known.
pub fn plan_export(
    watermark: Option<&Watermark>,
    to: SystemTime,
    earliest_restorable: Option<SystemTime>,
) -> ExportPlan {
    let to = whole_second(to);
    let Some(w) = watermark else {
        return ExportPlan::Full {
            at: to,
            reason: "full export: first run of native-incremental (no verified generation \
                     records a watermark to export changes from)"
                .into(),
        };
    };
    let from = whole_second(w.time);
    let since = time_text(from);
    let Ok(gap) = to.duration_since(from) else {
        return ExportPlan::Full {
            at: to,
            reason: format!(
                "full export: the watermark {since} of generation {} is after this run's time {}",
                w.generation,
                time_text(to)
            ),
        };
    };
    if gap < MIN_WINDOW {
        return ExportPlan::Skip {
            reason: format!(
                "nothing exported: last incremental export ended at {since}, less than 15 \
                 minutes ago (DynamoDB exports a window of 15 minutes at least); the next run \
                 exports from {since}"
            ),
        };
    }
    if gap > MAX_WINDOW {
        return ExportPlan::Full {
            at: to,
            reason: format!(
                "full export: the last export (generation {}) ended at {since}, more than 24 \
                 hours ago, longer than one incremental export may span",
                w.generation
            ),
        };
    }
    if let Some(earliest) = earliest_restorable
        && from < earliest
    {
        return ExportPlan::Full {
            at: to,
            reason: format!(
                "full export: the last export ended at {since}, before the earliest time \
                 point-in-time recovery reaches ({})",
                time_text(earliest)
            ),
        };
    }
    ExportPlan::Incremental { base: w.generation.clone(), from, to }
}

/// One change of an incremental export.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// The item's state at the end of the window.
    Put {
        /// Its key attributes (`Keys`).
        keys: Record,
        /// The whole item (`NewImage`).
        item: Record,
    },
    /// The item was deleted.
    Delete {
        /// Its key attributes (`Keys`).
        keys: Record,
    },
}

impl Change {
    /// The key attributes.
    pub fn keys(&self) -> &Record {
        match self {
            Change::Put { keys, .. } | Change::Delete { keys } => keys,
        }
    }
}

/// A change line with its metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeLine {
    /// The change.
    pub change: Change,
    /// `Metadata.WriteTimestampMicros`, when given.
    pub write_micros: Option<u64>,
}

fn bad(what: String) -> Error {
    Error::new(ErrorKind::Failed, "read incremental export line", "line", what)
}

/// Reads one line of an incremental export (see the module docs).
pub fn parse_change_line(line: &str) -> Result<ChangeLine> {
    let v: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
    let keys = v.get("Keys").ok_or_else(|| bad("missing the \"Keys\" key".into()))?;
    let keys = record_from_json(keys, "Keys")?;
    if keys.is_empty() {
        return Err(bad("\"Keys\" is empty".into()));
    }
    // DynamoDB writes the timestamp as a DynamoDB JSON number ({"N": "…"}); a
    // plain JSON number is read too.
    let micros = &v["Metadata"]["WriteTimestampMicros"];
    let write_micros = match micros {
        Value::Null => None,
        Value::Number(n) => n.as_u64(),
        other => other["N"].as_str().and_then(|s| s.parse().ok()),
    };
    if !micros.is_null() && write_micros.is_none() {
        return Err(bad(format!("Metadata.WriteTimestampMicros {micros} is not a number")));
    }
    let change = match v.get("NewImage") {
        Some(Value::Null) | None => Change::Delete { keys },
        Some(image) => Change::Put { keys, item: record_from_json(image, "NewImage")? },
    };
    Ok(ChangeLine { change, write_micros })
}

/// Checks a change against the table's key schema and the export's
/// window `[from, to)` in microseconds: `Keys` holds exactly the key
/// attributes, a `NewImage` has the same key, and, with a window, the
/// write time is given and lies in it.
pub fn check_change(schema: &KeySchema, c: &ChangeLine, window: Option<(u64, u64)>) -> Result<()> {
    let keys = c.change.keys();
    let expected: Vec<&str> = schema.names().collect();
    if keys.len() != expected.len() || expected.iter().any(|n| !keys.contains_key(*n)) {
        return Err(bad(format!(
            "\"Keys\" has attributes {:?}, not the table's key {expected:?}",
            keys.keys().collect::<Vec<_>>()
        )));
    }
    if let Change::Put { item, .. } = &c.change
        && expected.iter().any(|n| item.get(*n) != keys.get(*n))
    {
        return Err(bad("\"NewImage\" has another key than \"Keys\"".into()));
    }
    if let Some((from, to)) = window {
        // DynamoDB writes the write time on every change line: one without
        // it cannot be placed in the window.
        let Some(t) = c.write_micros else {
            return Err(bad(
                "no Metadata.WriteTimestampMicros (DynamoDB writes it on every change line): \
                 it cannot be placed in the export's window"
                    .into(),
            ));
        };
        if !(from..to).contains(&t) {
            return Err(bad(format!(
                "written at {t} µs since 1970, outside the export's window [{from}, {to})"
            )));
        }
    }
    Ok(())
}

/// Microseconds since 1970 of `t`.
pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Reads the change lines of the gzip data file `name` (at most `cap`
/// bytes decompressed), each checked with [`check_change`].
pub fn read_changes_capped(
    data: &[u8],
    name: &str,
    cap: u64,
    schema: Option<&KeySchema>,
    window: Option<(u64, u64)>,
) -> Result<Vec<ChangeLine>> {
    let mut out = Vec::new();
    crate::export::for_each_text_line(data, name, cap, |text| {
        let c = parse_change_line(text).map_err(|e| named(e, name))?;
        if let Some(schema) = schema {
            check_change(schema, &c, window).map_err(|e| named(e, name))?;
        }
        out.push(c);
        Ok(())
    })?;
    Ok(out)
}

fn named(e: Error, name: &str) -> Error {
    Error::new(ErrorKind::PreconditionFailed, "read incremental export file", name, e.chain())
}

/// What a generation's `manifest.json` says of its place in a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// The generation.
    pub generation: String,
    /// [`KIND_FULL`] or [`KIND_INCREMENTAL`] (a scan generation is full).
    pub kind: String,
    /// Incremental: the generation the changes apply to.
    pub base: Option<String>,
    /// Incremental: ExportFromTime.
    pub from: Option<String>,
    /// The point in time the generation reaches (native exports only).
    pub watermark: Option<String>,
}

impl Link {
    /// The link of `generation` from its manifest.
    pub fn from_manifest(generation: &str, manifest: &Value) -> Link {
        let text = |k: &str| manifest[k].as_str().map(str::to_string);
        Link {
            generation: generation.to_string(),
            kind: text("kind").unwrap_or_else(|| KIND_FULL.to_string()),
            base: text("base_generation"),
            from: text("export_from_time"),
            watermark: text("watermark"),
        }
    }

    /// Whether it holds changes only.
    pub fn incremental(&self) -> bool {
        self.kind == KIND_INCREMENTAL
    }
}

/// Composes the chain ending at `head` from `links` (the trusted
/// generations' links by id): the full generation it builds on, then each
/// incremental one, oldest first. A base that is missing or untrusted, an
/// incremental generation whose window does not start where its base
/// ends, or a base not older than what builds on it is an error naming it.
pub fn compose_chain(
    head: &str,
    links: &BTreeMap<String, Link>,
    location: &str,
) -> Result<Vec<String>> {
    let mut chain = Vec::new();
    let mut current = head.to_string();
    loop {
        let link = links.get(&current).ok_or_else(|| gap(location, &current, chain.last()))?;
        chain.push(current.clone());
        if !link.incremental() {
            break;
        }
        let base = check_base(link, links.get(link.base.as_deref().unwrap_or_default()), location)?;
        current = base;
    }
    chain.reverse();
    Ok(chain)
}

/// Checks that incremental generation `link` builds on `base` (`None`:
/// missing or untrusted); returns the base's id.
pub fn check_base(link: &Link, base: Option<&Link>, location: &str) -> Result<String> {
    let broken = |why: String| {
        Error::new(
            ErrorKind::PreconditionFailed,
            "compose export generations",
            format!("{location}{}/", link.generation),
            format!(
                "the chain of generations is broken: {why}; restore an earlier point (--at \
                 before this generation) or run the job again to take a full export"
            ),
        )
    };
    let Some(name) = link.base.as_deref().filter(|b| !b.is_empty()) else {
        return Err(broken("incremental generation names no base_generation".into()));
    };
    let Some(base) = base else {
        return Err(gap(location, name, Some(&link.generation)));
    };
    if base.generation.as_str() >= link.generation.as_str() {
        return Err(broken(format!("its base {name} is not older than it")));
    }
    if link.from.is_none() || base.watermark != link.from {
        return Err(broken(format!(
            "its changes start at {}, but its base {name} reaches {}",
            link.from.as_deref().unwrap_or("an unknown time"),
            base.watermark.as_deref().unwrap_or("no recorded point in time")
        )));
    }
    Ok(name.to_string())
}

fn gap(location: &str, missing: &str, needed_by: Option<&String>) -> Error {
    Error::new(
        ErrorKind::PreconditionFailed,
        "compose export generations",
        format!("{location}{missing}/"),
        format!(
            "generation {missing}{} is missing or not verified (no complete manifest.json that a \
             run manifest records): the incremental chain has a gap, and a partial restore is \
             refused; restore an earlier point (--at before the gap)",
            needed_by
                .map(|g| format!(", the base of incremental generation {g},"))
                .unwrap_or_default()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn wm(secs: u64) -> Watermark {
        Watermark { generation: "g1".into(), time: at(secs) }
    }

    #[test]
    fn the_watermark_decides_full_incremental_or_skip() {
        let now = 1_000_000;
        assert!(matches!(plan_export(None, at(now), None), ExportPlan::Full { .. }));
        match plan_export(Some(&wm(now - 3600)), at(now), None) {
            ExportPlan::Incremental { base, from, to } => {
                assert_eq!((base.as_str(), from, to), ("g1", at(now - 3600), at(now)));
            }
            other => panic!("{other:?}"),
        }
        // Exactly 15 minutes and exactly 24 hours are allowed.
        assert!(matches!(
            plan_export(Some(&wm(now - 900)), at(now), None),
            ExportPlan::Incremental { .. }
        ));
        assert!(matches!(
            plan_export(Some(&wm(now - 86_400)), at(now), None),
            ExportPlan::Incremental { .. }
        ));
        match plan_export(Some(&wm(now - 899)), at(now), None) {
            ExportPlan::Skip { reason } => {
                assert!(reason.starts_with("nothing exported: last incremental export ended at"));
                assert!(reason.contains(&time_text(at(now - 899))), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        match plan_export(Some(&wm(now - 86_401)), at(now), None) {
            ExportPlan::Full { at: t, reason } => {
                assert_eq!(t, at(now));
                assert!(reason.contains("24 hours"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        // A watermark older than point-in-time recovery reaches.
        assert!(matches!(
            plan_export(Some(&wm(now - 3600)), at(now), Some(at(now - 1800))),
            ExportPlan::Full { .. }
        ));
        // A watermark in the future is not trusted to export from.
        assert!(matches!(plan_export(Some(&wm(now + 10)), at(now), None), ExportPlan::Full { .. }));
    }

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.into())
    }

    #[test]
    fn change_lines_read_as_aws_documents_them() {
        let put = r#"{"Metadata":{"WriteTimestampMicros":{"N":"1700000000000000"}},"Keys":{"pk":{"S":"a"}},"NewImage":{"pk":{"S":"a"},"n":{"N":"2"}},"OldImage":{"pk":{"S":"a"},"n":{"N":"1"}}}"#;
        let c = parse_change_line(put).unwrap();
        assert_eq!(c.write_micros, Some(1_700_000_000_000_000));
        match &c.change {
            Change::Put { keys, item } => {
                assert_eq!(keys.get("pk"), Some(&s("a")));
                assert_eq!(item.get("n"), Some(&AttributeValue::N("2".into())));
            }
            other => panic!("{other:?}"),
        }
        let del_old = r#"{"Metadata":{"WriteTimestampMicros":{"N":"1"}},"Keys":{"pk":{"S":"b"}},"OldImage":{"pk":{"S":"b"}}}"#;
        assert!(matches!(parse_change_line(del_old).unwrap().change, Change::Delete { .. }));
        let del_keys = r#"{"Metadata":{"WriteTimestampMicros":2},"Keys":{"pk":{"S":"b"}}}"#;
        let c = parse_change_line(del_keys).unwrap();
        assert_eq!(c.write_micros, Some(2));
        assert!(matches!(c.change, Change::Delete { .. }));
        assert!(parse_change_line(r#"{"Item":{"pk":{"S":"a"}}}"#).is_err(), "no Keys");
        assert!(parse_change_line(r#"{"Keys":{}}"#).is_err(), "empty Keys");
        assert!(
            parse_change_line(
                r#"{"Keys":{"pk":{"S":"a"}},"Metadata":{"WriteTimestampMicros":"x"}}"#
            )
            .is_err()
        );
    }

    #[test]
    fn a_change_with_a_foreign_key_or_outside_its_window_is_refused() {
        let schema = KeySchema::new("pk", None);
        let ok = parse_change_line(
            r#"{"Metadata":{"WriteTimestampMicros":{"N":"50"}},"Keys":{"pk":{"S":"a"}},"NewImage":{"pk":{"S":"a"}}}"#,
        )
        .unwrap();
        check_change(&schema, &ok, Some((10, 100))).unwrap();
        let e = check_change(&schema, &ok, Some((60, 100))).unwrap_err();
        assert!(e.chain().contains("outside the export's window"), "{}", e.chain());
        // No write time: it cannot be placed in the window.
        let untimed =
            parse_change_line(r#"{"Keys":{"pk":{"S":"a"}},"NewImage":{"pk":{"S":"a"}}}"#).unwrap();
        check_change(&schema, &untimed, None).unwrap();
        let e = check_change(&schema, &untimed, Some((10, 100))).unwrap_err();
        assert!(e.chain().contains("WriteTimestampMicros"), "{}", e.chain());
        let other =
            parse_change_line(r#"{"Keys":{"pk":{"S":"a"}},"NewImage":{"pk":{"S":"b"}}}"#).unwrap();
        assert!(check_change(&schema, &other, None).is_err());
        let extra = parse_change_line(r#"{"Keys":{"pk":{"S":"a"},"x":{"S":"b"}}}"#).unwrap();
        assert!(check_change(&schema, &extra, None).is_err());
    }

    fn link(g: &str, kind: &str, base: Option<&str>, from: Option<&str>, wm: &str) -> Link {
        Link {
            generation: g.into(),
            kind: kind.into(),
            base: base.map(String::from),
            from: from.map(String::from),
            watermark: Some(wm.into()),
        }
    }

    #[test]
    fn a_chain_composes_full_then_incrementals_and_a_gap_is_named() {
        let mut links = BTreeMap::new();
        for l in [
            link("g1", KIND_FULL, None, None, "t1"),
            link("g2", KIND_INCREMENTAL, Some("g1"), Some("t1"), "t2"),
            link("g3", KIND_INCREMENTAL, Some("g2"), Some("t2"), "t3"),
        ] {
            links.insert(l.generation.clone(), l);
        }
        assert_eq!(compose_chain("g3", &links, "s3://e/p/").unwrap(), ["g1", "g2", "g3"]);
        assert_eq!(compose_chain("g1", &links, "s3://e/p/").unwrap(), ["g1"]);
        // g2 missing or unverified: restoring g3 names it.
        let mut holed = links.clone();
        holed.remove("g2");
        let e = compose_chain("g3", &holed, "s3://e/p/").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
        assert!(e.chain().contains("g2") && e.chain().contains("gap"), "{}", e.chain());
        // A window that does not start where its base ends.
        let mut skewed = links.clone();
        skewed.insert("g3".into(), link("g3", KIND_INCREMENTAL, Some("g2"), Some("t1"), "t3"));
        assert!(compose_chain("g3", &skewed, "s3://e/p/").unwrap_err().chain().contains("t1"));
        // A base not older than what builds on it (a loop).
        let mut looped = links;
        looped.insert("g1".into(), link("g1", KIND_INCREMENTAL, Some("g3"), Some("t3"), "t1"));
        assert!(compose_chain("g3", &looped, "s3://e/p/").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_gap_between_15_minutes_and_24_hours_is_incremental(gap in 900u64..=86_400) {
            let now = 2_000_000_000;
            let plan = plan_export(Some(&wm(now - gap)), at(now), None);
            let incremental = matches!(plan, ExportPlan::Incremental { .. });
            proptest::prop_assert!(incremental);
        }

        #[test]
        fn any_gap_under_15_minutes_skips_and_over_24_hours_is_full(gap in 0u64..900, over in 86_401u64..10_000_000) {
            let now = 2_000_000_000;
            let skip = matches!(plan_export(Some(&wm(now - gap)), at(now), None), ExportPlan::Skip { .. });
            let full = matches!(plan_export(Some(&wm(now - over)), at(now), None), ExportPlan::Full { .. });
            proptest::prop_assert!(skip && full);
        }
    }
}
