//! The embedded default store: SQLite in WAL mode with `synchronous=FULL`,
//! one writer thread doing group commit, and a pool of read connections.
//! A commit is acknowledged only after the fsync that made it durable.

use super::{Commit, CounterError, PendingCommit, Store, StoreError, WriteBatch, add_to_counter};
use anyhow::Context as _;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, mpsc};
use tokio::sync::oneshot;

/// Most requests folded into one transaction and one fsync.
const MAX_GROUP: usize = 512;

/// A durable key-value store in one SQLite file.
pub struct SqliteStore {
    path: PathBuf,
    /// Work for the writer thread. The thread exits when this is dropped.
    writer: Mutex<Option<mpsc::Sender<WriteOp>>>,
    /// Idle read connections; WAL lets them read while the writer commits.
    readers: Mutex<Vec<Connection>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

enum WriteOp {
    Increment {
        ns: String,
        key: String,
        delta: i64,
        reply: mpsc::SyncSender<Result<i64, CounterError>>,
    },
    Commit {
        ns: String,
        batch: WriteBatch,
        reply: oneshot::Sender<Result<Commit, StoreError>>,
    },
}

impl SqliteStore {
    /// Open (or create) the store at `dir/berth.db`.
    pub fn open(dir: &Path) -> anyhow::Result<SqliteStore> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let path = dir.join("berth.db");
        let conn =
            Connection::open(&path).with_context(|| format!("opening store {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|_| conn.pragma_update(None, "synchronous", "FULL"))
            .and_then(|_| {
                conn.execute_batch(
                    "CREATE TABLE IF NOT EXISTS kv (
                         ns TEXT NOT NULL,
                         key TEXT NOT NULL,
                         value BLOB NOT NULL,
                         PRIMARY KEY (ns, key)
                     ) WITHOUT ROWID;",
                )
            })
            .with_context(|| format!("initialising store {}", path.display()))?;
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("berth-store-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .context("starting the store writer thread")?;
        Ok(SqliteStore {
            path,
            writer: Mutex::new(Some(tx)),
            readers: Mutex::new(Vec::new()),
            writer_thread: Mutex::new(Some(thread)),
        })
    }

    fn send(&self, op: WriteOp) -> Result<(), StoreError> {
        let writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        match writer.as_ref() {
            Some(tx) => tx
                .send(op)
                .map_err(|_| StoreError("the store writer has stopped".into())),
            None => Err(StoreError("the store is closed".into())),
        }
    }

    fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match conn {
            Some(conn) => conn,
            None => Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?,
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

impl Store for SqliteStore {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.with_reader(|conn| {
            conn.prepare_cached("SELECT value FROM kv WHERE ns = ?1 AND key = ?2")?
                .query_row(params![ns, key], |row| row.get(0))
                .optional()
        })
    }

    fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // Keys compare as UTF-8 bytes (BINARY collation), and U+10FFFF is the
        // largest character, so the prefix's keys sort below `end`.
        let end = format!("{prefix}\u{10FFFF}");
        let after = after.unwrap_or("");
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, value FROM kv
                 WHERE ns = ?1 AND key >= ?2 AND key < ?3 AND key > ?4
                 ORDER BY key LIMIT ?5",
            )?;
            let rows = stmt.query_map(params![ns, prefix, end, after, limit], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect()
        })
    }

    fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, CounterError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.send(WriteOp::Increment {
            ns: ns.to_string(),
            key: key.to_string(),
            delta,
            reply,
        })
        .map_err(CounterError::Store)?;
        answer
            .recv()
            .map_err(|_| CounterError::Store(StoreError("the store writer has stopped".into())))?
    }

    fn commit(&self, ns: &str, batch: WriteBatch) -> PendingCommit {
        let (reply, answer) = oneshot::channel();
        let sent = self.send(WriteOp::Commit {
            ns: ns.to_string(),
            batch,
            reply,
        });
        Box::pin(async move {
            sent?;
            answer
                .await
                .map_err(|_| StoreError("the store writer stopped before committing".into()))?
        })
    }
}

/// The writer thread: take every queued operation, apply them in one
/// transaction, fsync once, then acknowledge them all (group commit).
fn writer_loop(mut conn: Connection, ops: mpsc::Receiver<WriteOp>) {
    while let Ok(first) = ops.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match ops.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        apply_group(&mut conn, group);
    }
}

fn apply_group(conn: &mut Connection, group: Vec<WriteOp>) {
    let mut tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return fail_group(group, &StoreError::from(e)),
    };
    let mut acks = Vec::new();
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
        }
    }
    match tx.commit() {
        Ok(()) => {
            for (reply, outcome) in acks {
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            let e = StoreError::from(e);
            tracing::error!(error = %e, "store commit failed");
            for (reply, _) in acks {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

fn fail_group(group: Vec<WriteOp>, e: &StoreError) {
    tracing::error!(error = %e, "store transaction could not start");
    for op in group {
        match op {
            WriteOp::Increment { reply, .. } => {
                let _ = reply.send(Err(CounterError::Store(e.clone())));
            }
            WriteOp::Commit { reply, .. } => {
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

/// Check every precondition first, so a refused batch writes nothing.
fn apply_batch(conn: &Connection, ns: &str, batch: &WriteBatch) -> Result<Commit, StoreError> {
    for (key, expected) in &batch.expects {
        if read(conn, ns, key)? != *expected {
            return Ok(Commit::Conflict(key.clone()));
        }
    }
    for (key, value) in &batch.writes {
        write(conn, ns, key, value.as_deref())?;
    }
    Ok(Commit::Done)
}
