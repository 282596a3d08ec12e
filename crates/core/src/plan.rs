//! The copy planner: a pure function of the two listings and a policy.
//!
//! [`CopyPlan::compute`] works on whole listings in memory;
//! [`plan_stream`] merges two listings that are already sorted by key and
//! holds only the two current heads, so memory does not grow with the
//! number of keys. Both run the same merge step, so they give the same plan.

use std::cmp::Ordering;
use std::pin::Pin;

use futures::StreamExt;
use futures::stream::{BoxStream, Peekable};

use crate::{Error, ErrorKind, Item, ItemStream, Result};

/// Why an item is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
// Exhaustive on purpose: every crate matches it, and a new variant must
// be handled everywhere rather than fall into a wildcard.
pub enum CopyReason {
    /// Escrow has no item with this key.
    Missing,
    /// Escrow has the key, with a different size or fingerprint.
    Changed,
}

/// What to do about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
// Exhaustive on purpose: every crate matches it, and a new variant must
// be handled everywhere rather than fall into a wildcard.
pub enum Action {
    /// Copy the source item into escrow.
    Copy {
        /// The source item.
        item: Item,
        /// Why.
        reason: CopyReason,
        /// The escrow item under the same key, for a changed item. The sink
        /// may still find it holds the same content
        /// ([`Sink::confirm_same`](crate::Sink::confirm_same)).
        escrow: Option<Item>,
    },
    /// Escrow already holds the same content.
    Skip {
        /// The source item.
        item: Item,
    },
    /// Escrow holds a key the source no longer has: kept, escrow is append-only.
    Retain {
        /// The escrow item.
        item: Item,
    },
    /// Escrow holds a key the source no longer has, and the policy allows
    /// deleting it. Never produced by the default policy.
    Delete {
        /// The escrow item.
        item: Item,
    },
}

impl Action {
    /// Whether the action is about an item escrow holds that the primary
    /// still lists (kept, or changed in the primary): what the mass-change
    /// breaker measures against. Escrow-only items do not count: the
    /// primary could otherwise inflate the count by planting keys, letting
    /// escrow copy them and deleting them, to dilute a later rewrite.
    pub fn escrow_item(&self) -> bool {
        match self {
            Action::Copy { escrow, .. } => escrow.is_some(),
            Action::Skip { .. } => true,
            Action::Retain { .. } | Action::Delete { .. } => false,
        }
    }

    /// The key this action is about.
    pub fn key(&self) -> &str {
        match self {
            Action::Copy { item, .. }
            | Action::Skip { item }
            | Action::Retain { item }
            | Action::Delete { item } => &item.key,
        }
    }

    /// Whether this action writes to escrow.
    pub fn is_copy(&self) -> bool {
        matches!(self, Action::Copy { .. })
    }
}

/// What the planner may do. The default never deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    delete_missing: bool,
}

impl Policy {
    /// The escrow policy: copy what is missing or changed, delete nothing.
    pub fn new() -> Self {
        Policy::default()
    }

    /// Allows deleting escrow items whose key the source no longer has.
    /// Escrow-sync's own jobs never set this; it exists for embedders that
    /// mirror into a non-escrow destination.
    pub fn with_delete_missing(mut self, allow: bool) -> Self {
        self.delete_missing = allow;
        self
    }

    /// Whether deleting is allowed.
    pub fn delete_missing(&self) -> bool {
        self.delete_missing
    }
}

/// Which heads the merge consumes next.
enum Step {
    Source,
    Dest,
    Both,
    Done,
}

fn step(src: Option<&Item>, dst: Option<&Item>) -> Step {
    match (src, dst) {
        (None, None) => Step::Done,
        (Some(_), None) => Step::Source,
        (None, Some(_)) => Step::Dest,
        (Some(s), Some(d)) => match s.key.as_bytes().cmp(d.key.as_bytes()) {
            Ordering::Less => Step::Source,
            Ordering::Greater => Step::Dest,
            Ordering::Equal => Step::Both,
        },
    }
}

fn source_only(item: Item) -> Action {
    Action::Copy { item, reason: CopyReason::Missing, escrow: None }
}

fn dest_only(item: Item, policy: &Policy) -> Action {
    if policy.delete_missing { Action::Delete { item } } else { Action::Retain { item } }
}

fn both(src: Item, dst: Item) -> Action {
    if src.same_content(&dst) {
        Action::Skip { item: src }
    } else {
        Action::Copy { item: src, reason: CopyReason::Changed, escrow: Some(dst) }
    }
}

fn out_of_order(side: &str, prev: &str, key: &str) -> Error {
    let what = if prev == key { "lists a key twice" } else { "is not sorted by key" };
    Error::new(
        ErrorKind::Failed,
        "plan",
        key.to_string(),
        format!(
            "the {side} listing {what} (after {prev:?}); plan it with CopyPlan::compute instead"
        ),
    )
}

/// A plan computed from two whole listings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyPlan {
    actions: Vec<Action>,
}

/// Counts of a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PlanSummary {
    /// Items to copy.
    pub copy: u64,
    /// Bytes to copy.
    pub copy_bytes: u64,
    /// Of those, items escrow lacks.
    pub missing: u64,
    /// Of those, items escrow holds in another version.
    pub changed: u64,
    /// Items already in escrow.
    pub skip: u64,
    /// Escrow-only items kept.
    pub retain: u64,
    /// Escrow-only items deleted (only when the policy allows).
    pub delete: u64,
}

impl PlanSummary {
    /// Adds one action to the counts.
    pub fn add(&mut self, action: &Action) {
        match action {
            Action::Copy { item, reason, .. } => {
                self.copy += 1;
                self.copy_bytes += item.size;
                match reason {
                    CopyReason::Missing => self.missing += 1,
                    CopyReason::Changed => self.changed += 1,
                }
            }
            Action::Skip { .. } => self.skip += 1,
            Action::Retain { .. } => self.retain += 1,
            Action::Delete { .. } => self.delete += 1,
        }
    }
}

fn sorted_unique(mut items: Vec<Item>, side: &str) -> Result<Vec<Item>> {
    items.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    if let Some(w) = items.windows(2).find(|w| w[0].key == w[1].key) {
        return Err(out_of_order(side, &w[0].key, &w[1].key));
    }
    Ok(items)
}

impl CopyPlan {
    /// Plans from two complete listings, in any order. A key listed twice on
    /// one side is an error.
    pub fn compute(
        source: impl IntoIterator<Item = Item>,
        dest: impl IntoIterator<Item = Item>,
        policy: &Policy,
    ) -> Result<CopyPlan> {
        let src = sorted_unique(source.into_iter().collect(), "source")?;
        let dst = sorted_unique(dest.into_iter().collect(), "escrow")?;
        let mut src = src.into_iter().peekable();
        let mut dst = dst.into_iter().peekable();
        let mut actions = Vec::new();
        loop {
            let action = match step(src.peek(), dst.peek()) {
                Step::Done => break,
                Step::Source => source_only(src.next().expect("peeked")),
                Step::Dest => dest_only(dst.next().expect("peeked"), policy),
                Step::Both => {
                    let d = dst.next().expect("peeked");
                    both(src.next().expect("peeked"), d)
                }
            };
            actions.push(action);
        }
        Ok(CopyPlan { actions })
    }

    /// The actions, sorted by key.
    pub fn actions(&self) -> &[Action] {
        &self.actions
    }

    /// Consumes the plan into its actions.
    pub fn into_actions(self) -> Vec<Action> {
        self.actions
    }

    /// The counts.
    pub fn summary(&self) -> PlanSummary {
        let mut s = PlanSummary::default();
        self.actions.iter().for_each(|a| s.add(a));
        s
    }
}

struct Merge<'a> {
    src: Peekable<ItemStream<'a>>,
    dst: Peekable<ItemStream<'a>>,
    last_src: Option<String>,
    last_dst: Option<String>,
    policy: Policy,
    done: bool,
}

impl Merge<'_> {
    /// Pops and returns the head of `stream` if it is an error.
    async fn raise(stream: &mut Peekable<ItemStream<'_>>) -> Result<()> {
        if matches!(Pin::new(&mut *stream).peek().await, Some(Err(_)))
            && let Some(Err(e)) = stream.next().await
        {
            return Err(e);
        }
        Ok(())
    }

    async fn pop(stream: &mut Peekable<ItemStream<'_>>) -> Result<Item> {
        match stream.next().await {
            Some(r) => r,
            None => Err(Error::new(ErrorKind::Failed, "plan", "listing", "listing ended early")),
        }
    }

    /// Checks that `key` comes strictly after the previous key of this side,
    /// then remembers it (reusing the buffer: no allocation per key).
    fn check(last: &mut Option<String>, side: &str, key: &str) -> Result<()> {
        match last {
            Some(prev) if prev.as_bytes() >= key.as_bytes() => Err(out_of_order(side, prev, key)),
            Some(prev) => {
                prev.clear();
                prev.push_str(key);
                Ok(())
            }
            None => {
                *last = Some(key.to_string());
                Ok(())
            }
        }
    }

    async fn next_action(&mut self) -> Result<Option<Action>> {
        Self::raise(&mut self.src).await?;
        Self::raise(&mut self.dst).await?;
        let which = {
            let s = Pin::new(&mut self.src).peek().await.and_then(|r| r.as_ref().ok());
            let d = Pin::new(&mut self.dst).peek().await.and_then(|r| r.as_ref().ok());
            step(s, d)
        };
        let action = match which {
            Step::Done => return Ok(None),
            Step::Source => {
                let item = Self::pop(&mut self.src).await?;
                Self::check(&mut self.last_src, "source", &item.key)?;
                source_only(item)
            }
            Step::Dest => {
                let item = Self::pop(&mut self.dst).await?;
                Self::check(&mut self.last_dst, "escrow", &item.key)?;
                dest_only(item, &self.policy)
            }
            Step::Both => {
                let si = Self::pop(&mut self.src).await?;
                let di = Self::pop(&mut self.dst).await?;
                Self::check(&mut self.last_src, "source", &si.key)?;
                Self::check(&mut self.last_dst, "escrow", &di.key)?;
                both(si, di)
            }
        };
        Ok(Some(action))
    }
}

/// Plans by merging two listings that are each sorted by key (byte order),
/// holding only their heads in memory. A listing that is out of order or
/// repeats a key ends the stream with an error.
pub fn plan_stream<'a>(
    source: ItemStream<'a>,
    dest: ItemStream<'a>,
    policy: &Policy,
) -> BoxStream<'a, Result<Action>> {
    let merge = Merge {
        src: source.peekable(),
        dst: dest.peekable(),
        last_src: None,
        last_dst: None,
        policy: policy.clone(),
        done: false,
    };
    futures::stream::unfold(merge, |mut m| async move {
        if m.done {
            return None;
        }
        match m.next_action().await {
            Ok(Some(a)) => Some((Ok(a), m)),
            Ok(None) => None,
            Err(e) => {
                m.done = true;
                Some((Err(e), m))
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ItemKind;

    fn it(k: &str, fp: &str) -> Item {
        Item::new(k, ItemKind::Object, fp.len() as u64, fp)
    }

    #[test]
    fn batch_plan_classifies_every_key() {
        let src = vec![it("b", "1"), it("a", "1"), it("c", "2")];
        let dst = vec![it("c", "3"), it("a", "1"), it("z", "9")];
        let plan = CopyPlan::compute(src, dst, &Policy::new()).unwrap();
        let keys: Vec<_> = plan.actions().iter().map(|a| a.key().to_string()).collect();
        assert_eq!(keys, ["a", "b", "c", "z"]);
        assert!(matches!(plan.actions()[0], Action::Skip { .. }));
        assert!(matches!(plan.actions()[1], Action::Copy { reason: CopyReason::Missing, .. }));
        assert!(matches!(plan.actions()[2], Action::Copy { reason: CopyReason::Changed, .. }));
        assert!(matches!(plan.actions()[3], Action::Retain { .. }));
        let s = plan.summary();
        assert_eq!((s.copy, s.skip, s.retain, s.delete), (2, 1, 1, 0));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = CopyPlan::compute(vec![it("a", "1"), it("a", "2")], vec![], &Policy::new())
            .unwrap_err();
        assert!(err.to_string().contains("lists a key twice"), "{err}");
    }

    #[tokio::test]
    async fn streaming_refuses_unsorted_input() {
        let src: ItemStream<'static> =
            futures::stream::iter(vec![Ok(it("b", "1")), Ok(it("a", "1"))]).boxed();
        let dst: ItemStream<'static> = futures::stream::empty().boxed();
        let out: Vec<_> = plan_stream(src, dst, &Policy::new()).collect().await;
        assert_eq!(out.len(), 2);
        assert!(out[0].is_ok());
        let err = out[1].as_ref().unwrap_err();
        assert!(err.to_string().contains("not sorted"), "{err}");
    }

    #[tokio::test]
    async fn streaming_passes_listing_errors_through() {
        let src: ItemStream<'static> = futures::stream::iter(vec![
            Ok(it("a", "1")),
            Err(Error::new(ErrorKind::AccessDenied, "s3:ListObjectsV2", "bucket", "")),
            Ok(it("c", "1")),
        ])
        .boxed();
        let dst: ItemStream<'static> = futures::stream::empty().boxed();
        let out: Vec<_> = plan_stream(src, dst, &Policy::new()).collect().await;
        assert_eq!(out.len(), 2, "the stream ends at the first error");
        assert_eq!(out[1].as_ref().unwrap_err().kind(), ErrorKind::AccessDenied);
    }
}
