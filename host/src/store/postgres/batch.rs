//! The write path: one batch in one transaction, serialised against every
//! other batch and increment that touches the same keys by per-key
//! advisory locks, taken in ascending order so that none deadlock.

use super::error::store_error;
use super::prepared;
use crate::store::{Commit, StoreError, WriteBatch, now_ms};
use deadpool_postgres::GenericClient;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;

/// Most bytes of values sent in one upsert statement; a batch larger than
/// this (up to 10,000 keys of 1 MiB) goes in several, in one transaction.
const UPSERT_CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// Take the batch's key locks, in ascending order.
const LOCK: &str = "SELECT pg_advisory_xact_lock(l) FROM unnest($1::bigint[]) AS l";

/// The first key (in key order) whose committed value is not the one the
/// batch expects, compared on the server so no value is sent back.
const CHANGED: &str =
    "SELECT u.key FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY AS u(key, value, n)
     LEFT JOIN kv ON kv.ns = $1 AND kv.key = u.key
     WHERE kv.value IS DISTINCT FROM u.value
     ORDER BY u.n LIMIT 1";

const UPSERT: &str = "INSERT INTO kv (ns, key, value)
     SELECT $1, u.key, u.value FROM unnest($2::text[], $3::bytea[]) AS u(key, value)
     ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value";

const DELETE: &str = "DELETE FROM kv WHERE ns = $1 AND key = ANY($2::text[])";

const DELIVERIES: &str =
    "INSERT INTO deliveries (event_id, topic, payload, source, recipient, next_at)
     SELECT e.event_id, e.topic, e.payload, e.source, e.recipient, $6
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
          WITH ORDINALITY AS e(event_id, topic, payload, source, recipient, n)
     ORDER BY e.n";

const COMPLETED: &str = "DELETE FROM deliveries WHERE id = $1";

/// Record that the namespace applied the event, unless it already had:
/// no row inserted means it had. A second transaction inserting the same
/// pair waits here for the first to end, then inserts nothing if the first
/// committed, so replicas racing on one event cannot both apply it.
const RECORD_APPLIED: &str = "INSERT INTO applied (ns, event_id, at) VALUES ($1, $2, $3)
     ON CONFLICT (ns, event_id) DO NOTHING";

/// One batch, in one transaction: lock its keys, record the event it
/// applies, check its preconditions and the delivery it completes, then
/// write. A refused batch is rolled back having written nothing.
///
/// Two round trips in the common case, not one per statement: the
/// statements are prepared first (cached per connection, so after the first
/// batch this waits for nothing), then `BEGIN`, the locks and the
/// precondition check (and the record of the event the batch applies) go
/// out together, and so do the writes and `COMMIT`.
/// A connection runs what it is sent in order, so the check still reads
/// only once every lock is held, and `COMMIT` comes after every write. If a
/// statement fails, the server ends the transaction at `COMMIT` with a
/// rollback, and the connection is rolled back here whatever happened.
pub(super) async fn apply(
    conn: &mut deadpool_postgres::Client,
    ns: &str,
    batch: &WriteBatch,
) -> Result<Commit, tokio_postgres::Error> {
    let outcome = apply_pipelined(conn, ns, batch).await;
    if !matches!(outcome, Ok(Commit::Done)) {
        let _ = conn.batch_execute("ROLLBACK").await;
    }
    outcome
}

async fn apply_pipelined(
    conn: &deadpool_postgres::Client,
    ns: &str,
    batch: &WriteBatch,
) -> Result<Commit, tokio_postgres::Error> {
    let st = Statements::prepare(conn).await?;
    let record_applied = conn.prepare_cached(RECORD_APPLIED).await?;
    let now = now_ms();

    let locks = locks(ns, batch);
    let expected_keys: Vec<&str> = batch.expects.keys().map(String::as_str).collect();
    let expected: Vec<Option<&[u8]>> = batch.expects.values().map(Option::as_deref).collect();
    // The record comes after the key locks in every transaction, and
    // before the delivery's row lock below, so no two commits wait for each
    // other in opposite orders.
    let (_, _, first_changed, recorded) = tokio::try_join!(
        // In order, every poll: the statements go out in this order on
        // the first, and the error reported is the first statement's
        // (a lock timeout or deadlock), not the "transaction is
        // aborted" of those pipelined after it.
        biased;
        conn.batch_execute("BEGIN"),
        async { conn.execute(&st.lock, &[&locks]).await },
        async {
            conn.query_opt(&st.changed, &[&ns, &expected_keys, &expected])
                .await
        },
        async {
            match &batch.applies {
                Some(event_id) => conn
                    .execute(&record_applied, &[&ns, event_id, &now])
                    .await
                    .map(Some),
                None => Ok(None),
            }
        },
    )?;
    // An event applied already is refused whatever the preconditions say:
    // running its subscriber again could only be refused again.
    if recorded == Some(0) {
        return Ok(Commit::AlreadyDelivered);
    }
    if let Some(row) = first_changed {
        return Ok(Commit::Conflict(row.try_get(0)?));
    }
    if let Some(id) = batch.completes {
        // The row lock makes a second replica acknowledging the same
        // delivery wait here, then find it gone.
        let stmt = conn
            .prepare_cached("SELECT 1 FROM deliveries WHERE id = $1 AND NOT dead FOR UPDATE")
            .await?;
        if conn.query_opt(&stmt, &[&id]).await?.is_none() {
            return Ok(Commit::AlreadyDelivered);
        }
    }
    let mut steps = write_steps(conn, &st, ns, batch, now);
    steps.push(Box::pin(async {
        conn.batch_execute("COMMIT").await.map(|()| 0)
    }));
    // Polled in order, each step sends its statement on its first poll.
    futures_util::future::try_join_all(steps).await?;
    Ok(Commit::Done)
}

/// The statements every commit uses, prepared once per connection.
pub(super) struct Statements {
    pub(super) lock: tokio_postgres::Statement,
    pub(super) changed: tokio_postgres::Statement,
    upsert: tokio_postgres::Statement,
    delete: tokio_postgres::Statement,
    deliveries: tokio_postgres::Statement,
    completed: tokio_postgres::Statement,
}

impl Statements {
    /// Prepared on the first commit of a connection, then from its cache.
    pub(super) async fn prepare(
        conn: &deadpool_postgres::Client,
    ) -> Result<Statements, tokio_postgres::Error> {
        Ok(Statements {
            lock: conn.prepare_cached(LOCK).await?,
            changed: conn.prepare_cached(CHANGED).await?,
            upsert: conn.prepare_cached(UPSERT).await?,
            delete: conn.prepare_cached(DELETE).await?,
            deliveries: conn.prepare_cached(DELIVERIES).await?,
            completed: conn.prepare_cached(COMPLETED).await?,
        })
    }
}

/// The advisory locks of every key a batch reads or writes, ascending and
/// without repeats.
pub(super) fn locks(ns: &str, batch: &WriteBatch) -> Vec<i64> {
    (batch.expects.keys().chain(batch.writes.keys()))
        .map(|key| lock_id(ns, key))
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .collect()
}

/// One statement of a pipelined commit, sent when first polled.
pub(super) type Step<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<u64, tokio_postgres::Error>> + Send + 'a>,
>;

/// The statements that write `batch` into `ns`, once its locks are held
/// and its preconditions checked: its values (in chunks of at most
/// `UPSERT_CHUNK_BYTES`), its deletes, its outbox rows and the delivery it
/// completes. Polled in order, they go out in one round trip.
pub(super) fn write_steps<'a>(
    conn: &'a deadpool_postgres::Client,
    st: &'a Statements,
    ns: &'a str,
    batch: &'a WriteBatch,
    now: i64,
) -> Vec<Step<'a>> {
    let mut chunks: Vec<(Vec<&str>, Vec<&[u8]>)> = Vec::new();
    let mut deleted = Vec::new();
    let mut chunk_bytes = 0;
    for (key, value) in &batch.writes {
        let Some(value) = value else {
            deleted.push(key.as_str());
            continue;
        };
        if chunks.is_empty() || chunk_bytes + value.len() > UPSERT_CHUNK_BYTES {
            chunks.push((Vec::new(), Vec::new()));
            chunk_bytes = 0;
        }
        let (keys, values) = chunks.last_mut().expect("a chunk was just pushed");
        keys.push(key.as_str());
        values.push(value.as_slice());
        chunk_bytes += value.len();
    }
    let mut columns: [Vec<&str>; 5] = Default::default();
    for event in &batch.events {
        for recipient in &event.recipients {
            for (column, value) in columns.iter_mut().zip([
                &event.id,
                &event.topic,
                &event.payload,
                &event.source,
                recipient,
            ]) {
                column.push(value);
            }
        }
    }

    let mut steps: Vec<Step<'a>> = Vec::new();
    for (keys, values) in chunks {
        steps.push(Box::pin(async move {
            conn.execute(&st.upsert, &[&ns, &keys, &values]).await
        }));
    }
    if !deleted.is_empty() {
        steps.push(Box::pin(async move {
            conn.execute(&st.delete, &[&ns, &deleted]).await
        }));
    }
    if !columns[0].is_empty() {
        steps.push(Box::pin(async move {
            let [ids, topics, payloads, sources, recipients] = &columns;
            conn.execute(
                &st.deliveries,
                &[ids, topics, payloads, sources, recipients, &now],
            )
            .await
        }));
    }
    if let Some(id) = batch.completes {
        steps.push(Box::pin(async move {
            conn.execute(&st.completed, &[&id]).await
        }));
    }
    steps
}

/// The advisory lock of one key: the first 8 bytes of SHA-256 of
/// `ns \0 key`. Two keys may share a lock (one chance in 2^64 per pair);
/// they then only wait for each other.
pub(super) fn lock_id(ns: &str, key: &str) -> i64 {
    let digest = Sha256::new()
        .chain_update(ns)
        .chain_update([0])
        .chain_update(key)
        .finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

pub(super) async fn read(
    client: &impl GenericClient,
    ns: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let stmt = prepared(client, "SELECT value FROM kv WHERE ns = $1 AND key = $2").await?;
    client
        .query_opt(&stmt, &[&ns, &key])
        .await
        .and_then(|row| row.map(|row| row.try_get(0)).transpose())
        .map_err(store_error)
}
