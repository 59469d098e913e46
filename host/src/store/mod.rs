//! The storage behind the `kv` capability and the event outbox: the
//! [`Store`] and [`Outbox`] traits, the write batch a request commits, and
//! the backends (durable SQLite, shared PostgreSQL, in-memory). Every
//! key-value method takes a namespace; the host passes the component's name,
//! so a component can only ever reach its own keys.

#[cfg(test)]
mod conformance;
mod files;
mod health;
mod lock;
mod memory;
mod postgres;
mod sqlite;
pub mod versions;

pub use lock::DataLock;
pub use memory::{MemoryStore, MemoryVersions};
pub use postgres::{
    ConnectError, DEFAULT_MAX_GROUP, DEFAULT_POOL_SIZE, PgVersions, PostgresStore, check_url,
    redact,
};
pub use sqlite::SqliteStore;
use versions::SharedVersions;

use std::collections::BTreeMap;
use std::sync::Arc;

/// An opened backend, seen through its halves (one object behind them for
/// every backend so far).
#[derive(Clone)]
pub struct Backend {
    pub kv: Arc<dyn Store>,
    pub outbox: Arc<dyn Outbox>,
    /// Component versions, for a store several replicas share.
    pub versions: Option<Arc<dyn SharedVersions>>,
}

impl Backend {
    /// A store only this process uses: versions stay in the process.
    pub fn local<B: Store + Outbox>(backend: Arc<B>) -> Backend {
        Backend {
            kv: backend.clone(),
            outbox: backend,
            versions: None,
        }
    }

    /// The same store, shared with other replicas, which keep their
    /// component versions in `versions`.
    pub fn shared_with(self, versions: Arc<dyn SharedVersions>) -> Backend {
        Backend {
            versions: Some(versions),
            ..self
        }
    }
}

/// Longest key a component may use, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Largest value a component may store, in bytes.
pub const MAX_VALUE_LEN: usize = 1024 * 1024;
/// Most keys one `list-keys` or `scan` call returns.
pub const MAX_PAGE: u32 = 1000;
/// Most bytes of keys and values one `scan` or `list-keys` page holds; a
/// first entry larger than this still comes back alone, so paging always
/// progresses. It bounds what one call makes the host hold in memory.
pub const MAX_SCAN_BYTES: usize = 1024 * 1024;

/// Why the store could not do what was asked. Backends map their own
/// errors onto these; no backend's error type appears in this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached now (a lost connection, a database that
    /// is restarting, a full disk): the same request may succeed later.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store answered, but with an error that waiting will not fix.
    #[error("the store failed: {0}")]
    Failed(String),
    /// The store was closed; this process is shutting down.
    #[error("the store is closed")]
    Closed,
}

/// Why a counter could not be incremented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    /// The key holds something other than a decimal `i64`, or the sum overflows.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The writes of one request, applied all together or not at all.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    /// Key to new value; `None` deletes the key.
    pub writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Preconditions: each key must still hold this value (`None`: absent)
    /// when the batch commits, or the whole batch is refused.
    pub expects: BTreeMap<String, Option<Vec<u8>>>,
    /// Events published by the request: the transactional outbox. Each
    /// becomes one pending delivery per recipient in the same commit.
    pub events: Vec<NewEvent>,
    /// A delivery this batch acknowledges: removed in the same commit as the
    /// subscriber's writes, so its effect is applied exactly once.
    pub completes: Option<i64>,
    /// The id of an event this batch applies for the namespace it commits
    /// in (a subscriber consuming from a broker): the commit records
    /// "namespace applied event" with the writes, and a batch that finds
    /// the record already there is refused whole, so a redelivered event
    /// changes nothing. Checked before the preconditions: an event already
    /// applied is never worth running again.
    pub applies: Option<String>,
}

impl WriteBatch {
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
            && self.events.is_empty()
            && self.completes.is_none()
            && self.applies.is_none()
    }
}

/// An event as published, before it is fanned out to its subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique and stable: every delivery of this event carries it.
    pub id: String,
    pub topic: String,
    /// JSON text.
    pub payload: String,
    /// The publishing component.
    pub source: String,
    /// The components subscribed to `topic` when it was published.
    pub recipients: Vec<String>,
}

/// One event owed to one subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The delivery's own id, for acknowledging or retrying it.
    pub id: i64,
    pub event_id: String,
    pub topic: String,
    pub payload: String,
    pub source: String,
    pub recipient: String,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// What to do with a delivery whose attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Try again at this time (milliseconds since the Unix epoch).
    At(i64),
    /// Give up: move it to the dead-letter list.
    DeadLetter,
}

/// What happened to a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Commit {
    /// Everything was written and is durable.
    Done,
    /// A precondition failed on this key; nothing was written.
    Conflict(String),
    /// The delivery it completes is no longer pending, or the event it
    /// applies was already applied: another delivery of the event was
    /// acknowledged first (by another replica, after its lease ran out, or
    /// redelivered by the broker). Nothing was written, so the event's
    /// effect is applied once.
    AlreadyDelivered,
}

/// What a range scan asks for: keys starting with `prefix` and sorting after
/// `after`, in ascending byte order.
#[derive(Debug, Clone, Copy)]
pub struct Scan<'a> {
    pub prefix: &'a str,
    pub after: Option<&'a str>,
    /// Most entries to return.
    pub limit: usize,
    /// Most bytes of keys (and values, if read) to return. The first entry
    /// comes back whatever its size; the next one that would take the page
    /// past this ends it, and its value is not copied out of the store.
    pub max_bytes: usize,
    /// Whether to read values; without, each entry's value is empty.
    pub values: bool,
}

/// One page of a range scan.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanPage {
    /// Keys in ascending order, each with its value (empty unless asked for).
    pub entries: Vec<(String, Vec<u8>)>,
    /// The page ended at its count or byte limit, so the range may go on
    /// past its last key; `false` means the range is exhausted.
    pub more: bool,
}

/// How long a claimed delivery is withheld from other claims: a process
/// that died while delivering it hands it on after this. It should exceed
/// the time a delivery takes; if one takes longer, a second process may run
/// it too, and `completes` still lets only one of them commit.
pub const DELIVERY_LEASE_MS: i64 = 30_000;

/// The key-value half of a backend: every component's namespace, and the
/// transactions requests commit into it.
///
/// Every method is asynchronous. A read from PostgreSQL is a network round
/// trip, which a request awaits (the guest runs as a future) rather than
/// block a tokio worker on; the SQLite backend answers reads inline from
/// its page cache, since handing a microsecond read to another thread
/// would cost more than the read.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The committed value of `key`.
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// One page of committed entries in `scan`'s range, bounded in count
    /// and bytes.
    async fn scan(&self, ns: &str, scan: &Scan<'_>) -> Result<ScanPage, StoreError>;

    /// Add `delta` to the decimal counter under `key`, at once and durably
    /// no later than any batch committed after this call returns: a
    /// sequence, never rolled back.
    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, CounterError>;

    /// Check the batch's preconditions (and that the delivery it
    /// `completes` is still pending, and the event it `applies` not yet
    /// applied in `ns`) and apply its writes and events atomically, with
    /// the record of the event it applies; resolves once they are durable,
    /// or refused. Of several commits applying one event in one namespace
    /// at once, even from different replicas, exactly one is `Done`.
    async fn commit(&self, ns: &str, batch: WriteBatch) -> Result<Commit, StoreError>;

    /// Why the store cannot commit writes now, if it cannot: the error of
    /// its last commit, until a later one succeeds. `/readyz` reports it.
    fn write_failure(&self) -> Option<String> {
        None
    }
}

/// The delivery half of a backend: the outbox rows that [`Store::commit`]
/// wrote for published events, handed to subscribers. Writing the rows
/// stays in the key-value transaction (an event commits with the writes that
/// caused it); taking them out is this trait's business, so a broker can
/// take it over without touching the key-value store.
#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Up to `limit` live deliveries due at or before `now_ms`, oldest
    /// first, each leased to the caller for [`DELIVERY_LEASE_MS`]: no other
    /// claim returns it until the lease ends or it is failed.
    async fn claim_due(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError>;

    /// Record a failed attempt of delivery `id`, durably, ending its lease.
    async fn fail_delivery(&self, id: i64, error: &str, retry: Retry) -> Result<(), StoreError>;

    /// The dead-lettered deliveries, oldest first.
    async fn dead_letters(&self) -> Result<Vec<Delivery>, StoreError>;

    /// Put a dead-lettered delivery back in the queue with a fresh attempt
    /// count. Returns whether there was such a dead letter.
    async fn retry_dead_letter(&self, id: i64) -> Result<bool, StoreError>;

    /// Remove pending (not dead) delivery `id`, durably, writing nothing
    /// else: the relay's mark that a broker confirmed it. Returns whether
    /// it was pending.
    async fn complete(&self, id: i64) -> Result<bool, StoreError>;

    /// How many live (not dead) deliveries wait, due or not, leased or not:
    /// the outbox's backlog, for a gauge. Cheap enough to poll.
    async fn backlog(&self) -> Result<u64, StoreError>;

    /// Whether a batch that `applies` event `event_id` in namespace `ns`
    /// has committed (and its record was not pruned since), so a consumer
    /// can acknowledge a redelivery without running the subscriber.
    async fn applied(&self, ns: &str, event_id: &str) -> Result<bool, StoreError>;

    /// Forget the records of events applied before `before_ms`
    /// (milliseconds since the Unix epoch); returns how many went. A
    /// consumer keeps them for as long as a redelivery may still come.
    async fn prune_applied(&self, before_ms: i64) -> Result<u64, StoreError>;
}

/// Milliseconds since the Unix epoch, the clock deliveries are scheduled on.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl ScanPage {
    /// Add an entry of `size` bytes unless the page is full; returns whether
    /// it was added. Both backends fill pages through this, so they agree
    /// on where a page ends.
    pub(crate) fn admit(&mut self, scan: &Scan<'_>, bytes: &mut usize, size: usize) -> bool {
        let full = self.entries.len() >= scan.limit
            || (!self.entries.is_empty() && bytes.saturating_add(size) > scan.max_bytes);
        if full {
            self.more = true;
            return false;
        }
        *bytes += size;
        true
    }
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

/// The least string above every string that starts with `prefix`, so a
/// prefix's keys are exactly those in `prefix..end` in byte (and so
/// character) order; `None` when no string is (`prefix` is empty or all
/// U+10FFFF), and the range has no upper end. Appending U+10FFFF to the
/// prefix instead would leave out the keys that continue it with U+10FFFF.
pub(crate) fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value: surrogates are not characters.
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}
