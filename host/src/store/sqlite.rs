//! The embedded default store: SQLite in WAL mode with `synchronous=FULL`,
//! one writer thread doing group commit, and a pool of read connections.
//! A commit is acknowledged only after the fsync that made it durable.

use super::health::Health;
use super::{
    Commit, CounterError, DELIVERY_LEASE_MS, Delivery, Outbox, Retry, Scan, ScanPage, Store,
    StoreError, WriteBatch, add_to_counter, now_ms, prefix_end,
};
use anyhow::Context as _;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;
use tokio::sync::oneshot;

/// Most requests folded into one transaction and one fsync.
const MAX_GROUP: usize = 512;

/// How long a connection waits for a lock another connection holds (a
/// reader rebuilding the WAL index, a `berth dead-letters retry` beside the
/// server) before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Tables: `kv` holds every component's keys, keyed by namespace; `deliveries`
/// holds one row per event owed to a subscriber (the outbox), removed when
/// the subscriber acknowledges it or kept with `dead = 1` once dead-lettered,
/// and not due again before `leased_until` once claimed; `applied` records
/// which namespace applied which event (`WriteBatch::applies`), with when,
/// so a redelivered event is refused and old records can be pruned.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS kv (
        ns TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (ns, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS deliveries (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        topic TEXT NOT NULL,
        payload TEXT NOT NULL,
        source TEXT NOT NULL,
        recipient TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        dead INTEGER NOT NULL DEFAULT 0,
        last_error TEXT,
        leased_until INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (dead, next_at);
    CREATE TABLE IF NOT EXISTS applied (
        ns TEXT NOT NULL,
        event_id TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (ns, event_id)
    ) WITHOUT ROWID;
    CREATE INDEX IF NOT EXISTS applied_at ON applied (at);
    CREATE TABLE IF NOT EXISTS meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
";

/// A durable key-value store in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    /// Work for the writer thread. The thread exits when this is dropped.
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    /// Idle read connections; WAL lets them read while the writer commits.
    readers: Mutex<Vec<Connection>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Whether the writer can commit, for `/readyz`: shared with its thread.
    health: Arc<Health>,
}

enum WriteOp {
    Increment {
        ns: String,
        key: String,
        delta: i64,
        reply: oneshot::Sender<Result<i64, CounterError>>,
    },
    Commit {
        ns: String,
        batch: WriteBatch,
        reply: oneshot::Sender<Result<Commit, StoreError>>,
    },
    FailDelivery {
        id: i64,
        error: String,
        retry: Retry,
        reply: oneshot::Sender<Result<Commit, StoreError>>,
    },
    RetryDeadLetter {
        id: i64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    Complete {
        id: i64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    PruneApplied {
        before_ms: i64,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Claim {
        now_ms: i64,
        limit: usize,
        reply: oneshot::Sender<Result<Vec<Delivery>, StoreError>>,
    },
    /// A real write to the `meta` table, committed like any other, to
    /// prove the store can commit.
    Probe {
        reply: oneshot::Sender<Result<Commit, StoreError>>,
    },
}

/// Plan every statement without looking at the values bound to it
/// (SQLite's query planner stability guarantee). Otherwise SQLite, built
/// with STAT4, reads the values bound to a range or a `LIMIT` while
/// planning, and marks the statement to be prepared again whenever new ones
/// are bound: every cached scan was parsed and planned anew at each use,
/// a fifth of a `GET /users`'s CPU. The statements here are lookups and
/// range scans on primary keys, which plan the same whatever the values.
fn plan_without_values(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(drop)
}

/// A scan's statement: `?1` the namespace, `?2` the prefix, `?3` the key
/// to start after, `?4` the rows to fetch, and `?5` the end of the
/// prefix's range when it has one. The row that would overflow the byte
/// budget is refused on its `length` before its value is copied out;
/// keys-only scans do not select the values at all.
fn scan_sql(values: bool, bounded: bool) -> String {
    let columns = if values {
        "key, length(value), value"
    } else {
        "key, 0, NULL"
    };
    let below_end = if bounded { "AND key < ?5" } else { "" };
    format!(
        "SELECT {columns} FROM kv WHERE ns = ?1 AND key >= ?2 AND key > ?3 {below_end}
         ORDER BY key LIMIT ?4"
    )
}

impl SqliteStore {
    /// Open (or create) the store at `dir/berth.db`, refusing one whose
    /// pages fail SQLite's quick integrity check.
    pub fn open(dir: &Path) -> anyhow::Result<SqliteStore> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        super::files::warn_if_shared(dir);
        let path = dir.join("berth.db");
        super::files::owner_only(&path)?;
        let conn =
            Connection::open(&path).with_context(|| format!("opening store {}", path.display()))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .and_then(|()| plan_without_values(&conn))
            .and_then(|()| conn.pragma_update(None, "journal_mode", "WAL"))
            .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
            .map_err(anyhow::Error::from)
            .and_then(|()| quick_check(&conn))
            .and_then(|()| Ok(conn.execute_batch(SCHEMA)?))
            .and_then(|()| upgrade(&conn))
            .with_context(|| {
                format!(
                    "the store {} is damaged or unreadable: restore it from a backup, or move it aside to start with an empty store",
                    path.display()
                )
            })?;
        let health = Arc::new(Health::default());
        let writer_health = health.clone();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("berth-store-writer".into())
            .spawn(move || writer_loop(conn, rx, &writer_health))
            .context("starting the store writer thread")?;
        Ok(SqliteStore {
            path,
            writer: Mutex::new(Some(tx)),
            readers: Mutex::new(Vec::new()),
            writer_thread: Mutex::new(Some(thread)),
            health,
        })
    }

    /// Commit a small write to the `meta` table, to prove the store can
    /// commit. Its outcome also sets what [`Store::write_failure`] reports.
    pub async fn probe(&self) -> Result<Commit, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::Probe { reply })?;
        answered(answer).await
    }

    /// Hand back every delivery claimed by an earlier run of this process:
    /// a server that holds the data directory's lock is the only one that
    /// can have claimed them, and it is not delivering them any more.
    pub fn release_claims(&self) -> Result<(), StoreError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute(
            "UPDATE deliveries SET leased_until = 0 WHERE leased_until <> 0",
            [],
        )?;
        Ok(())
    }

    /// Until `stop` resolves, probe the store once a second unless a commit
    /// succeeded in that second, so `/readyz` turns 503 when the store stops
    /// taking writes (disk full, file made read-only) even with no traffic,
    /// and 200 again once it takes them.
    pub async fn probe_writes(self: Arc<Self>, stop: impl Future<Output = ()>) {
        // The outcome is recorded by the writer; a failure is logged there too.
        let probe = || async { drop(self.probe().await) };
        self.health.probe_writes(probe, stop).await;
    }

    fn send(&self, op: WriteOp) -> Result<(), StoreError> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match writer.as_ref() {
            Some(tx) => tx.send(op).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(conn) => conn,
            None => {
                let conn = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.busy_timeout(BUSY_TIMEOUT)?;
                plan_without_values(&conn)?;
                conn
            }
        };
        let result = f(&conn);
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(conn);
        Ok(result?)
    }

    /// Finish pending writes and stop the writer thread.
    pub fn close(&self) {
        drop(self.writer.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(thread) = self
            .writer_thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = thread.join();
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_reader(|conn| read(conn, ns, key))
    }

    async fn scan(&self, ns: &str, scan: &Scan<'_>) -> Result<ScanPage, StoreError> {
        // Keys compare as UTF-8 bytes (BINARY collation), the order of their
        // characters, so the prefix's keys are those from the prefix up to
        // its successor (none when it is empty or all U+10FFFF).
        let end = prefix_end(scan.prefix);
        let after = scan.after.unwrap_or("");
        // One row past the limit tells whether the range goes on.
        let limit = i64::try_from(scan.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let sql = scan_sql(scan.values, end.is_some());
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = match &end {
                Some(end) => stmt.query(params![ns, scan.prefix, after, limit, end])?,
                None => stmt.query(params![ns, scan.prefix, after, limit])?,
            };
            let mut page = ScanPage::default();
            let mut bytes = 0;
            while let Some(row) = rows.next()? {
                let key: String = row.get(0)?;
                let value_len = usize::try_from(row.get::<_, i64>(1)?).unwrap_or(usize::MAX);
                if !page.admit(scan, &mut bytes, key.len().saturating_add(value_len)) {
                    break;
                }
                let value = if scan.values { row.get(2)? } else { Vec::new() };
                page.entries.push((key, value));
            }
            Ok(page)
        })
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, CounterError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::Increment {
            ns: ns.to_string(),
            key: key.to_string(),
            delta,
            reply,
        })?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn commit(&self, ns: &str, batch: WriteBatch) -> Result<Commit, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::Commit {
            ns: ns.to_string(),
            batch,
            reply,
        })?;
        answered(answer).await
    }

    fn write_failure(&self) -> Option<String> {
        self.health.failure()
    }
}

#[async_trait::async_trait]
impl Outbox for SqliteStore {
    async fn claim_due(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        // Most polls find nothing due; only a claim that found rows writes.
        let due = self.with_reader(|conn| {
            conn.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM deliveries
                 WHERE dead = 0 AND next_at <= ?1 AND leased_until <= ?1)",
            )?
            .query_row(params![now_ms], |row| row.get::<_, bool>(0))
        })?;
        if !due {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::Claim {
            now_ms,
            limit,
            reply,
        })?;
        answered(answer).await
    }

    async fn fail_delivery(&self, id: i64, error: &str, retry: Retry) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::FailDelivery {
            id,
            error: error.to_string(),
            retry,
            reply,
        })?;
        answered(answer).await.map(drop)
    }

    async fn dead_letters(&self) -> Result<Vec<Delivery>, StoreError> {
        self.with_reader(|conn| {
            let mut stmt =
                conn.prepare_cached(&format!("{DELIVERY_COLUMNS} WHERE dead = 1 ORDER BY id"))?;
            let rows = stmt.query_map([], delivery_row)?;
            rows.collect()
        })
    }

    async fn retry_dead_letter(&self, id: i64) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::RetryDeadLetter { id, reply })?;
        answered(answer).await
    }

    async fn complete(&self, id: i64) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::Complete { id, reply })?;
        answered(answer).await
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        // Counted on the `deliveries_due` index, without reading the rows.
        self.with_reader(|conn| {
            conn.prepare_cached("SELECT count(*) FROM deliveries WHERE dead = 0")?
                .query_row([], |row| row.get::<_, i64>(0))
        })
        .map(|n| u64::try_from(n).unwrap_or(0))
    }

    async fn applied(&self, ns: &str, event_id: &str) -> Result<bool, StoreError> {
        self.with_reader(|conn| was_applied(conn, ns, event_id))
    }

    async fn prune_applied(&self, before_ms: i64) -> Result<u64, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(WriteOp::PruneApplied { before_ms, reply })?;
        answered(answer).await
    }
}

/// Bring a store made by an older Berth up to this schema.
fn upgrade(conn: &Connection) -> anyhow::Result<()> {
    let has_lease = conn
        .prepare("SELECT 1 FROM pragma_table_info('deliveries') WHERE name = 'leased_until'")?
        .exists([])?;
    if !has_lease {
        conn.execute_batch(
            "ALTER TABLE deliveries ADD COLUMN leased_until INTEGER NOT NULL DEFAULT 0",
        )?;
    }
    Ok(())
}

/// SQLite's errors, as the store's: those that waiting may cure (a lock
/// held too long, a full disk, a failing device, a file made read-only)
/// are `Unavailable`, the rest `Failed`.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match e.sqlite_error_code() {
            Some(
                DatabaseBusy | DatabaseLocked | DiskFull | SystemIoFailure | ReadOnly | CannotOpen,
            ) => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Failed(e.to_string()),
        }
    }
}

/// SQLite's quick integrity check: every page of every table and index is
/// read and its structure checked, so a damaged page stops start-up with a
/// message instead of failing requests later.
fn quick_check(conn: &Connection) -> anyhow::Result<()> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let problems = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    anyhow::bail!("integrity check failed: {}", problems.join("; "))
}

const DELIVERY_COLUMNS: &str =
    "SELECT id, event_id, topic, payload, source, recipient, attempts, last_error FROM deliveries";

fn delivery_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: row.get(0)?,
        event_id: row.get(1)?,
        topic: row.get(2)?,
        payload: row.get(3)?,
        source: row.get(4)?,
        recipient: row.get(5)?,
        attempts: row.get(6)?,
        last_error: row.get(7)?,
    })
}

/// The writer's answer to an operation it was sent.
async fn answered<T>(answer: oneshot::Receiver<Result<T, StoreError>>) -> Result<T, StoreError> {
    answer.await.map_err(|_| StoreError::Closed)?
}

/// The writer thread: take every queued operation, apply them in one
/// transaction, fsync once, then acknowledge them all (group commit).
fn writer_loop(mut conn: Connection, ops: mpsc::Receiver<WriteOp>, health: &Health) {
    while let Ok(first) = ops.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match ops.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        apply_group(&mut conn, group, health);
    }
}

fn apply_group(conn: &mut Connection, group: Vec<WriteOp>, health: &Health) {
    // IMMEDIATE takes the write lock at BEGIN, where SQLite waits on the
    // busy timeout. A deferred transaction reads first and upgrades to a
    // write later, and SQLite cannot wait there without risking deadlock:
    // it fails at once with "database is locked".
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            let e = StoreError::from(e);
            health.record(Err(&e));
            return fail_group(group, &e);
        }
    };
    let mut acks = Vec::new();
    let mut flags = Vec::new();
    let mut counts = Vec::new();
    let mut claims = Vec::new();
    for op in group {
        match op {
            WriteOp::Increment {
                ns,
                key,
                delta,
                reply,
            } => {
                // Answer before the fsync: any batch that uses this value is
                // queued behind this group, so it cannot become durable first.
                let _ = reply.send(increment(&tx, &ns, &key, delta));
            }
            WriteOp::Commit { ns, batch, reply } => {
                // A savepoint per batch: a batch that fails half-way leaves
                // nothing behind, and the rest of the group still commits.
                let outcome = tx.savepoint().map_err(StoreError::from).and_then(|sp| {
                    let outcome = apply_batch(&sp, &ns, &batch)?;
                    sp.commit()?;
                    Ok(outcome)
                });
                acks.push((reply, outcome));
            }
            WriteOp::FailDelivery {
                id,
                error,
                retry,
                reply,
            } => {
                let outcome = fail_delivery(&tx, id, &error, &retry)
                    .map(|()| Commit::Done)
                    .map_err(StoreError::from);
                acks.push((reply, outcome));
            }
            WriteOp::RetryDeadLetter { id, reply } => {
                let outcome = retry_dead_letter(&tx, id).map_err(StoreError::from);
                flags.push((reply, outcome));
            }
            WriteOp::Complete { id, reply } => {
                let outcome = complete(&tx, id).map_err(StoreError::from);
                flags.push((reply, outcome));
            }
            WriteOp::PruneApplied { before_ms, reply } => {
                let outcome = prune_applied(&tx, before_ms).map_err(StoreError::from);
                counts.push((reply, outcome));
            }
            WriteOp::Claim {
                now_ms,
                limit,
                reply,
            } => {
                let outcome = claim(&tx, now_ms, limit).map_err(StoreError::from);
                claims.push((reply, outcome));
            }
            WriteOp::Probe { reply } => {
                let outcome = tx
                    .execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES ('write-probe', ?1)",
                        params![now_ms().to_string()],
                    )
                    .map(|_| Commit::Done)
                    .map_err(StoreError::from);
                acks.push((reply, outcome));
            }
        }
    }
    match tx.commit() {
        Ok(()) => {
            health.record(Ok(()));
            for (reply, outcome) in acks {
                let _ = reply.send(outcome);
            }
            for (reply, outcome) in flags {
                let _ = reply.send(outcome);
            }
            for (reply, outcome) in counts {
                let _ = reply.send(outcome);
            }
            for (reply, outcome) in claims {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            let e = StoreError::from(e);
            health.record(Err(&e));
            log_write_failure("store commit failed", &e);
            for (reply, _) in acks {
                let _ = reply.send(Err(e.clone()));
            }
            for (reply, _) in flags {
                let _ = reply.send(Err(e.clone()));
            }
            for (reply, _) in counts {
                let _ = reply.send(Err(e.clone()));
            }
            for (reply, _) in claims {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Log a failed group commit, at most once per
/// [`Throttle::EVERY`](crate::logging::Throttle::EVERY): when
/// the disk is full every group fails, and a line for each would flood the
/// log (each failed request still has its own request line).
fn log_write_failure(what: &str, e: &StoreError) {
    static THROTTLE: crate::logging::Throttle = crate::logging::Throttle::new();
    if let Some(suppressed) = THROTTLE.allow() {
        tracing::error!(error = %e, suppressed, "{what}; check the disk holding the data directory (free space, permissions)");
    }
}

fn fail_group(group: Vec<WriteOp>, e: &StoreError) {
    log_write_failure("store transaction could not start", e);
    for op in group {
        match op {
            WriteOp::Increment { reply, .. } => {
                let _ = reply.send(Err(CounterError::Store(e.clone())));
            }
            WriteOp::Commit { reply, .. }
            | WriteOp::FailDelivery { reply, .. }
            | WriteOp::Probe { reply } => {
                let _ = reply.send(Err(e.clone()));
            }
            WriteOp::RetryDeadLetter { reply, .. } | WriteOp::Complete { reply, .. } => {
                let _ = reply.send(Err(e.clone()));
            }
            WriteOp::PruneApplied { reply, .. } => {
                let _ = reply.send(Err(e.clone()));
            }
            WriteOp::Claim { reply, .. } => {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

fn read(conn: &Connection, ns: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT value FROM kv WHERE ns = ?1 AND key = ?2")?
        .query_row(params![ns, key], |row| row.get(0))
        .optional()
}

fn write(conn: &Connection, ns: &str, key: &str, value: Option<&[u8]>) -> rusqlite::Result<()> {
    match value {
        Some(value) => conn
            .prepare_cached("INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?1, ?2, ?3)")?
            .execute(params![ns, key, value]),
        None => conn
            .prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")?
            .execute(params![ns, key]),
    }
    .map(drop)
}

fn increment(conn: &Connection, ns: &str, key: &str, delta: i64) -> Result<i64, CounterError> {
    let store_err = |e: rusqlite::Error| CounterError::Store(e.into());
    let current = read(conn, ns, key).map_err(store_err)?;
    let next = add_to_counter(current.as_deref(), delta)?;
    if current.is_none() || delta != 0 {
        write(conn, ns, key, Some(next.to_string().as_bytes())).map_err(store_err)?;
    }
    Ok(next)
}

/// Check every precondition first, so a refused batch writes nothing. The
/// writer thread applies one batch at a time, so the event a batch
/// `applies` cannot be recorded by another between the check and the
/// insert.
fn apply_batch(conn: &Connection, ns: &str, batch: &WriteBatch) -> Result<Commit, StoreError> {
    if let Some(event_id) = &batch.applies
        && was_applied(conn, ns, event_id)?
    {
        return Ok(Commit::AlreadyDelivered);
    }
    for (key, expected) in &batch.expects {
        if read(conn, ns, key)? != *expected {
            return Ok(Commit::Conflict(key.clone()));
        }
    }
    if let Some(id) = batch.completes {
        let pending = conn
            .prepare_cached("SELECT 1 FROM deliveries WHERE id = ?1 AND dead = 0")?
            .exists(params![id])?;
        if !pending {
            return Ok(Commit::AlreadyDelivered);
        }
    }
    for (key, value) in &batch.writes {
        write(conn, ns, key, value.as_deref())?;
    }
    let now = now_ms();
    for event in &batch.events {
        for recipient in &event.recipients {
            conn.prepare_cached(
                "INSERT INTO deliveries (event_id, topic, payload, source, recipient, next_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                event.id,
                event.topic,
                event.payload,
                event.source,
                recipient,
                now
            ])?;
        }
    }
    if let Some(id) = batch.completes {
        conn.prepare_cached("DELETE FROM deliveries WHERE id = ?1")?
            .execute(params![id])?;
    }
    if let Some(event_id) = &batch.applies {
        conn.prepare_cached("INSERT INTO applied (ns, event_id, at) VALUES (?1, ?2, ?3)")?
            .execute(params![ns, event_id, now])?;
    }
    Ok(Commit::Done)
}

fn was_applied(conn: &Connection, ns: &str, event_id: &str) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT 1 FROM applied WHERE ns = ?1 AND event_id = ?2")?
        .exists(params![ns, event_id])
}

fn complete(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached("DELETE FROM deliveries WHERE id = ?1 AND dead = 0")?
        .execute(params![id])
        .map(|changed| changed == 1)
}

fn prune_applied(conn: &Connection, before_ms: i64) -> rusqlite::Result<u64> {
    conn.prepare_cached("DELETE FROM applied WHERE at < ?1")?
        .execute(params![before_ms])
        .map(|deleted| u64::try_from(deleted).unwrap_or(u64::MAX))
}

fn fail_delivery(conn: &Connection, id: i64, error: &str, retry: &Retry) -> rusqlite::Result<()> {
    let (dead, next_at) = match retry {
        Retry::At(at) => (0, *at),
        Retry::DeadLetter => (1, 0),
    };
    conn.prepare_cached(
        "UPDATE deliveries SET attempts = attempts + 1, last_error = ?2, dead = ?3, next_at = ?4,
         leased_until = 0 WHERE id = ?1",
    )?
    .execute(params![id, error, dead, next_at])
    .map(drop)
}

fn retry_dead_letter(conn: &Connection, id: i64) -> rusqlite::Result<bool> {
    conn.prepare_cached(
        "UPDATE deliveries SET dead = 0, attempts = 0, next_at = ?2, leased_until = 0
         WHERE id = ?1 AND dead = 1",
    )?
    .execute(params![id, now_ms()])
    .map(|changed| changed == 1)
}

/// Lease up to `limit` due deliveries, oldest first.
fn claim(conn: &Connection, now_ms: i64, limit: usize) -> rusqlite::Result<Vec<Delivery>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let due = conn
        .prepare_cached(&format!(
            "{DELIVERY_COLUMNS} WHERE dead = 0 AND next_at <= ?1 AND leased_until <= ?1
             ORDER BY next_at, id LIMIT ?2"
        ))?
        .query_map(params![now_ms, limit], delivery_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut lease = conn.prepare_cached("UPDATE deliveries SET leased_until = ?2 WHERE id = ?1")?;
    for delivery in &due {
        lease.execute(params![delivery.id, now_ms + DELIVERY_LEASE_MS])?;
    }
    Ok(due)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::StatementStatus;

    /// How many times a cached scan was prepared again over three uses with
    /// different values bound, on `conn`.
    fn reprepares(conn: &Connection) -> i32 {
        let sql = scan_sql(true, true);
        for (prefix, limit) in [("a", 2), ("b", 3), ("c", 4)] {
            let mut stmt = conn.prepare_cached(&sql).unwrap();
            let end = prefix_end(prefix).unwrap();
            let rows = stmt
                .query_map(params!["ns", prefix, "", limit, end], |_| Ok(()))
                .unwrap();
            assert_eq!(rows.count(), 0);
        }
        conn.prepare_cached(&sql)
            .unwrap()
            .get_status(StatementStatus::RePrepare)
    }

    /// A cached scan is planned once, not again each time it is bound,
    /// on the store's reader connections; a connection without the
    /// setting shows what it prevents.
    #[test]
    fn cached_scans_are_not_prepared_again_for_new_values() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(store.with_reader(|conn| Ok(reprepares(conn))).unwrap(), 0);
        let plain = Connection::open(dir.path().join("berth.db")).unwrap();
        assert!(reprepares(&plain) > 0, "the control no longer re-prepares");
    }
}
