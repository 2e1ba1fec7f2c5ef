//! Paged etcd range reads. A single range over a big prefix (100,000 jobs)
//! is a response above gRPC's 4 MiB message limit, which the client refuses
//! ("decoded message length too large"). Every read of a prefix that can
//! grow goes through here instead: pages of a bounded size, all at the
//! revision of the first page, so together they are one consistent snapshot.

use etcd_client::{Client, GetOptions, KeyValue};

/// Aim for responses of about this size; far below the 4 MiB limit, so a
/// page of unusually large values still fits.
const TARGET_PAGE_BYTES: usize = 512 * 1024;
const MIN_PAGE_KEYS: i64 = 1;
const MAX_PAGE_KEYS: i64 = 2000;
const FIRST_PAGE_KEYS: i64 = 200;

/// A range `[start, end)` read page by page at one revision.
pub struct RangePages {
    client: Client,
    next_key: Option<Vec<u8>>,
    end: Vec<u8>,
    keys_only: bool,
    revision: i64,
    limit: i64,
    /// Stop after this many keys in all (None: the whole range).
    remaining: Option<usize>,
}

impl RangePages {
    /// Every key under `prefix`.
    pub fn prefix(client: Client, prefix: &str) -> Self {
        let end = gdts_common::keys::prefix_range_end(prefix);
        Self::range(client, prefix.as_bytes().to_vec(), end)
    }

    /// Every key in `[start, end)`.
    pub fn range(client: Client, start: Vec<u8>, end: Vec<u8>) -> Self {
        RangePages {
            client,
            next_key: Some(start),
            end,
            keys_only: false,
            revision: 0,
            limit: FIRST_PAGE_KEYS,
            remaining: None,
        }
    }

    /// Keys without values (cheaper, for counting and skipping).
    pub fn keys_only(mut self) -> Self {
        self.keys_only = true;
        self.limit = MAX_PAGE_KEYS;
        self
    }

    /// At most `n` keys in all.
    pub fn take(mut self, n: usize) -> Self {
        self.remaining = Some(n);
        self
    }

    /// Read at this revision instead of the first page's.
    pub fn at_revision(mut self, revision: i64) -> Self {
        self.revision = revision;
        self
    }

    /// The revision all pages are read at (0 before the first page).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The next page, or `None` when the range is exhausted.
    pub async fn next_page(&mut self) -> Result<Option<Vec<KeyValue>>, etcd_client::Error> {
        let Some(start) = self.next_key.clone() else {
            return Ok(None);
        };
        let mut limit = self.limit;
        if let Some(rest) = self.remaining {
            if rest == 0 {
                return Ok(None);
            }
            limit = limit.min(rest as i64);
        }
        let mut options = GetOptions::new()
            .with_range(self.end.clone())
            .with_limit(limit);
        if self.keys_only {
            options = options.with_keys_only();
        }
        if self.revision > 0 {
            options = options.with_revision(self.revision);
        }
        let resp = crate::metrics::etcd(
            "range_page",
            self.client.kv_client().get(start, Some(options)),
        )
        .await?;
        if self.revision == 0 {
            self.revision = resp.header().map(|h| h.revision()).unwrap_or_default();
        }
        let kvs = resp.kvs().to_vec();
        self.next_key = match (resp.more(), kvs.last()) {
            // The next page starts just after the last key read.
            (true, Some(last)) => {
                let mut next = last.key().to_vec();
                next.push(0);
                Some(next)
            }
            _ => None,
        };
        if let Some(rest) = self.remaining.as_mut() {
            *rest = rest.saturating_sub(kvs.len());
        }
        if !self.keys_only && !kvs.is_empty() {
            // Size the next page from this one's average entry.
            let bytes: usize = kvs.iter().map(|kv| kv.key().len() + kv.value().len()).sum();
            let per_key = (bytes / kvs.len()).max(1);
            self.limit = ((TARGET_PAGE_BYTES / per_key) as i64).clamp(MIN_PAGE_KEYS, MAX_PAGE_KEYS);
        }
        Ok(Some(kvs))
    }

    /// Every remaining page, concatenated.
    pub async fn collect(mut self) -> Result<(Vec<KeyValue>, i64), etcd_client::Error> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok((all, self.revision))
    }
}

/// How many keys `[start, end)` holds (etcd counts them; no keys travel).
pub async fn count_range(
    client: &Client,
    start: Vec<u8>,
    end: Vec<u8>,
) -> Result<i64, etcd_client::Error> {
    let resp = crate::metrics::etcd(
        "count",
        client.kv_client().get(
            start,
            Some(GetOptions::new().with_range(end).with_count_only()),
        ),
    )
    .await?;
    Ok(resp.count())
}
