//! The names of every job, followed from etcd, so a page of the job list
//! does not make etcd walk the whole `jobs/` prefix.
//!
//! etcd 3.4 walks every key of a range it reads, however small the limit,
//! and the same to count it: with 100,000 jobs each page of
//! `/api/v1/jobs` cost two walks, and a deep `page=` a keys-only read of
//! every job before it. The index answers the count and finds where a page
//! starts and ends in memory; the page's jobs are then read from etcd over
//! just that key range, so what a page shows is what etcd holds now. Only
//! the total and a deep page's boundaries can trail a change made on
//! another manager, by the time its watch event takes (milliseconds); this
//! manager's own saves and deletes are in the index before they are
//! answered (a watch event of an earlier change, or a full read begun
//! before the write, can undo that for the moment until the watch brings
//! the write itself). Until the first full read arrives (or without a
//! watch at all, or once it ends), pages are read from etcd as before.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use gdts_common::keys::Keys;
use gdts_runtime::etcd_watch::{follow_prefix, PrefixEvent};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Job names, shared by the handlers; empty and not ready until followed.
#[derive(Clone, Default)]
pub struct JobIndex {
    names: Arc<RwLock<Option<BTreeSet<String>>>>,
}

/// Where a page of the list lies, as the index sees it.
#[derive(Debug, PartialEq, Eq)]
pub struct PageBounds {
    /// Every name with the prefix (after the cursor or not).
    pub total: u64,
    /// The page's first name; `None` if the page is past the end.
    pub first: Option<String>,
    /// The page's last name when the page is full; `None` when the page
    /// runs to the end of the prefix (a job created past the index's last
    /// name still shows).
    pub last: Option<String>,
}

impl JobIndex {
    /// Follows `jobs/` until `shutdown`, from a full read, and again from a
    /// full read whenever the watch breaks.
    pub fn follow(etcd: etcd_client::Client, keys: &Keys, shutdown: CancellationToken) -> Self {
        let index = JobIndex::default();
        let prefix = keys.jobs_prefix();
        let (tx, mut rx) = mpsc::channel(1024);
        tokio::spawn(follow_prefix(etcd, prefix.clone(), tx, shutdown));
        let names = index.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                names.apply(&prefix, event);
            }
            // No longer followed (shut down): pages go to etcd again.
            *names.lock_write() = None;
        });
        index
    }

    fn lock_write(&self) -> std::sync::RwLockWriteGuard<'_, Option<BTreeSet<String>>> {
        // Every change under the lock is one insert, removal or swap: a
        // panic elsewhere cannot leave the set half-changed.
        self.names
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn apply(&self, prefix: &str, event: PrefixEvent) {
        let name = |key: &[u8]| {
            std::str::from_utf8(key)
                .ok()?
                .strip_prefix(prefix)
                .map(str::to_string)
        };
        if let PrefixEvent::Reset(entries) = &event {
            // Built before taking the lock: pages are not held up meanwhile.
            let all: BTreeSet<String> = entries.iter().filter_map(|e| name(&e.key)).collect();
            *self.lock_write() = Some(all);
            return;
        }
        let mut names = self.lock_write();
        match event {
            PrefixEvent::Reset(_) => {}
            PrefixEvent::Put(entry) => {
                if let (Some(names), Some(n)) = (names.as_mut(), name(&entry.key)) {
                    names.insert(n);
                }
            }
            PrefixEvent::Delete(entry) => {
                if let (Some(names), Some(n)) = (names.as_mut(), name(&entry.key)) {
                    names.remove(&n);
                }
            }
        }
    }

    /// This manager stored a job under `name`.
    pub fn saved(&self, name: &str) {
        if let Some(names) = self.lock_write().as_mut() {
            names.insert(name.to_string());
        }
    }

    /// This manager deleted the job `name`.
    pub fn deleted(&self, name: &str) {
        if let Some(names) = self.lock_write().as_mut() {
            names.remove(name);
        }
    }

    /// Where the page of `take` names after the first `skip` of those
    /// starting with `prefix` (and after `after`) lies; `None` while the
    /// index is not ready.
    pub fn page(
        &self,
        prefix: &str,
        after: Option<&str>,
        skip: u64,
        take: u64,
    ) -> Option<PageBounds> {
        let names = self
            .names
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Some(page_bounds(names.as_ref()?, prefix, after, skip, take))
    }
}

fn page_bounds(
    names: &BTreeSet<String>,
    prefix: &str,
    after: Option<&str>,
    skip: u64,
    take: u64,
) -> PageBounds {
    let with_prefix = || {
        names
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |n| n.starts_with(prefix))
    };
    let total = with_prefix().count() as u64;
    let from = match after {
        Some(a) if a >= prefix => Bound::Excluded(a),
        _ => Bound::Included(prefix),
    };
    let mut page = names
        .range::<str, _>((from, Bound::Unbounded))
        .take_while(|n| n.starts_with(prefix))
        .skip(usize::try_from(skip).unwrap_or(usize::MAX));
    let first = page.next().cloned();
    let last = match (&first, take) {
        (None, _) | (_, 0) => None,
        (Some(first), 1) => Some(first.clone()),
        (Some(_), take) => page
            .nth(usize::try_from(take - 2).unwrap_or(usize::MAX))
            .cloned(),
    };
    PageBounds { total, first, last }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gdts_runtime::etcd_watch::Entry;

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn bounds(total: u64, first: Option<&str>, last: Option<&str>) -> PageBounds {
        PageBounds {
            total,
            first: first.map(str::to_string),
            last: last.map(str::to_string),
        }
    }

    #[test]
    fn pages_by_skip_prefix_and_cursor() {
        let all = names(&["a", "a.b", "a-c", "b", "ba", "bb", "c"]);
        // Sorted: a, a-c, a.b, b, ba, bb, c.
        assert_eq!(
            page_bounds(&all, "", None, 0, 3),
            bounds(7, Some("a"), Some("a.b"))
        );
        assert_eq!(
            page_bounds(&all, "", None, 3, 3),
            bounds(7, Some("b"), Some("bb"))
        );
        // The last page is short: it runs to the end.
        assert_eq!(
            page_bounds(&all, "", None, 6, 3),
            bounds(7, Some("c"), None)
        );
        assert_eq!(page_bounds(&all, "", None, 7, 3), bounds(7, None, None));
        assert_eq!(
            page_bounds(&all, "b", None, 0, 2),
            bounds(3, Some("b"), Some("ba"))
        );
        assert_eq!(
            page_bounds(&all, "b", None, 1, 2),
            bounds(3, Some("ba"), Some("bb"))
        );
        assert_eq!(
            page_bounds(&all, "b", None, 2, 2),
            bounds(3, Some("bb"), None)
        );
        // A cursor: the page starts after it; the total is the prefix's.
        assert_eq!(
            page_bounds(&all, "", Some("a.b"), 0, 2),
            bounds(7, Some("b"), Some("ba"))
        );
        assert_eq!(
            page_bounds(&all, "b", Some("a"), 0, 1),
            bounds(3, Some("b"), Some("b"))
        );
        assert_eq!(
            page_bounds(&all, "b", Some("bb"), 0, 5),
            bounds(3, None, None)
        );
        assert_eq!(page_bounds(&all, "x", None, 0, 5), bounds(0, None, None));
        assert_eq!(
            page_bounds(&all, "", None, u64::MAX, 5),
            bounds(7, None, None)
        );
    }

    #[test]
    fn follows_resets_puts_and_deletes_and_this_managers_own_writes() {
        let index = JobIndex::default();
        let entry = |name: &str| Entry {
            key: format!("/p/jobs/{name}").into_bytes(),
            value: Vec::new(),
            mod_revision: 1,
        };
        // Not ready: no answer, and own writes wait for the first read.
        index.saved("early");
        assert_eq!(index.page("", None, 0, 10), None);
        index.apply("/p/jobs/", PrefixEvent::Reset(vec![entry("a"), entry("b")]));
        assert_eq!(
            index.page("", None, 0, 10),
            Some(bounds(2, Some("a"), None))
        );
        index.apply("/p/jobs/", PrefixEvent::Put(entry("c")));
        index.apply("/p/jobs/", PrefixEvent::Delete(entry("a")));
        index.saved("d");
        index.deleted("b");
        assert_eq!(
            index.page("", None, 0, 2),
            Some(bounds(2, Some("c"), Some("d")))
        );
        // A watch event of the same change afterwards changes nothing.
        index.apply("/p/jobs/", PrefixEvent::Put(entry("d")));
        assert_eq!(index.page("", None, 0, 5), Some(bounds(2, Some("c"), None)));
    }
}
