//! The storage behind the `kv` capability: the [`Store`] trait, the write
//! batch a request commits, and two backends (durable SQLite, in-memory).
//! Every method takes a namespace; the host passes the component's name, so a
//! component can only ever reach its own keys.

mod memory;
mod sqlite;

pub use memory::MemoryStore;
pub use sqlite::SqliteStore;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

/// Longest key a component may use, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Largest value a component may store, in bytes.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;
/// Most keys one `list-keys` or `scan` call returns.
pub const MAX_PAGE: u32 = 1000;

/// A store failure, reported to the component as `unavailable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError(e.to_string())
    }
}

/// Why a counter could not be incremented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterError {
    /// The key holds something other than a decimal `i64`, or the sum overflows.
    Invalid(String),
    Store(StoreError),
}

/// The writes of one request, applied all together or not at all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    /// Key to new value; `None` deletes the key.
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Preconditions: each key must still hold this value (`None`: absent)
    /// when the batch commits, or the whole batch is refused.
    pub expects: BTreeMap<String, Option<Vec<u8>>>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// What happened to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Everything was written and is durable.
    Done,
    /// A precondition failed on this key; nothing was written.
    Conflict(String),
}

/// A commit in progress; it resolves once the batch is durable or refused.
pub type PendingCommit = Pin<Box<dyn Future<Output = Result<Commit, StoreError>> + Send>>;

/// A key-value store with per-namespace isolation.
///
/// Reads and `increment` are synchronous because a component calls them in
/// the middle of its execution; `commit` is asynchronous because it waits for
/// the disk, which the request should not block a thread on.
pub trait Store: Send + Sync + 'static {
    /// The committed value of `key`.
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Up to `limit` committed entries with keys starting with `prefix` and
    /// sorting after `after`, in ascending key order.
    fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Add `delta` to the decimal counter under `key`, at once and durably
    /// no later than any batch committed after this call returns.
    fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, CounterError>;

    /// Check the batch's preconditions and apply its writes atomically.
    fn commit(&self, ns: &str, batch: WriteBatch) -> PendingCommit;
}

/// Apply `delta` to the counter text `current`, as `increment` defines it.
pub(crate) fn add_to_counter(current: Option<&[u8]>, delta: i64) -> Result<i64, CounterError> {
    let value = match current {
        None => 0,
        Some(raw) => std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| {
                CounterError::Invalid("the key holds a value that is not a counter".into())
            })?,
    };
    value
        .checked_add(delta)
        .ok_or_else(|| CounterError::Invalid(format!("counter overflow: {value} + {delta}")))
}
