//! The write path: one batch in one transaction, serialised against every
//! other batch and increment that touches the same keys by per-key
//! advisory locks, taken in ascending order so that none deadlock.

use super::error::store_error;
use super::prepared;
use crate::store::{Commit, StoreError, WriteBatch, now_ms};
use deadpool_postgres::GenericClient;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// Most bytes of values sent in one upsert statement; a batch larger than
/// this (up to 10,000 keys of 1 MiB) goes in several, in one transaction.
const UPSERT_CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// Take the batch's key locks, in ascending order.
const LOCK: &str = "SELECT pg_advisory_xact_lock(l) FROM unnest($1::bigint[]) AS l";

/// For each batch (numbered by `$1`) with a precondition that fails, the
/// first key (in key order) whose committed value is not the one the batch
/// expects, compared on the server so no value is sent back. One statement
/// checks a whole group's batches.
///
/// Each key is looked up by a subquery of its own, not by a join: a
/// connection keeps the generic plan of a statement it prepared, and the
/// plan of a join prepared while `kv` was empty is a hash join over a
/// sequential scan of `kv`. Kept as the table grew, it read every row at
/// every commit (on this project's machine it halved a replica's writes
/// once the table held ten thousand users). The subquery is planned as an
/// index lookup whatever the table's size (`statements_plan_index_lookups_even_on_an_empty_table`
/// checks every statement on `kv`).
pub(super) const CHANGED: &str = "SELECT DISTINCT ON (u.b) u.b, u.key
     FROM unnest($1::int4[], $2::text[], $3::text[], $4::bytea[])
          WITH ORDINALITY AS u(b, ns, key, value, n)
     WHERE (SELECT kv.value FROM kv WHERE kv.ns = u.ns AND kv.key = u.key)
           IS DISTINCT FROM u.value
     ORDER BY u.b, u.n";

/// Every value a group writes, whatever the batch and namespace: the keys
/// of a group's batches are disjoint, so no row is written twice.
pub(super) const UPSERT: &str = "INSERT INTO kv (ns, key, value)
     SELECT u.ns, u.key, u.value FROM unnest($1::text[], $2::text[], $3::bytea[]) AS u(ns, key, value)
     ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value";

/// One namespace's deleted keys (a join with the keys would not keep an
/// index plan; see [`CHANGED`]).
pub(super) const DELETE: &str = "DELETE FROM kv WHERE ns = $1 AND key = ANY($2::text[])";

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
    let expected = Expected::of(&[(ns, batch)]);
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
        async { expected.check(conn, &st).await },
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
    if let Some(Some(key)) = first_changed.into_iter().next() {
        return Ok(Commit::Conflict(key));
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
    let mut steps = write_steps(conn, &st, &[(ns, batch)], now);
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

/// The preconditions of several batches, as the columns [`CHANGED`]
/// reads.
pub(super) struct Expected<'a> {
    batch: Vec<i32>,
    ns: Vec<&'a str>,
    key: Vec<&'a str>,
    value: Vec<Option<&'a [u8]>>,
    batches: usize,
}

impl<'a> Expected<'a> {
    pub(super) fn of(batches: &[(&'a str, &'a WriteBatch)]) -> Expected<'a> {
        let mut expected = Expected {
            batch: Vec::new(),
            ns: Vec::new(),
            key: Vec::new(),
            value: Vec::new(),
            batches: batches.len(),
        };
        for (n, (ns, batch)) in batches.iter().enumerate() {
            for (key, value) in &batch.expects {
                expected.batch.push(i32::try_from(n).unwrap_or(i32::MAX));
                expected.ns.push(ns);
                expected.key.push(key);
                expected.value.push(value.as_deref());
            }
        }
        expected
    }

    /// For each batch, in order, the first key whose committed value is
    /// not the one it expects, if any: one statement, or none when no
    /// batch expects anything.
    pub(super) async fn check(
        &self,
        conn: &deadpool_postgres::Client,
        st: &Statements,
    ) -> Result<Vec<Option<String>>, tokio_postgres::Error> {
        let mut changed = vec![None; self.batches];
        if self.key.is_empty() {
            return Ok(changed);
        }
        let rows = conn
            .query(
                &st.changed,
                &[&self.batch, &self.ns, &self.key, &self.value],
            )
            .await?;
        for row in rows {
            let n: i32 = row.try_get(0)?;
            if let Some(slot) = usize::try_from(n).ok().and_then(|n| changed.get_mut(n)) {
                *slot = Some(row.try_get(1)?);
            }
        }
        Ok(changed)
    }
}

/// The statements that write `batches` (each into its namespace), once
/// their locks are held and their preconditions checked: their values (in
/// chunks of at most `UPSERT_CHUNK_BYTES`), their deletes, their outbox
/// rows and the deliveries they complete, each kind in one statement
/// whatever the number of batches (deletes: one per namespace). Polled in order, they go out in one
/// round trip.
pub(super) fn write_steps<'a>(
    conn: &'a deadpool_postgres::Client,
    st: &'a Statements,
    batches: &[(&'a str, &'a WriteBatch)],
    now: i64,
) -> Vec<Step<'a>> {
    type Chunk<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<&'a [u8]>);
    let mut chunks: Vec<Chunk<'a>> = Vec::new();
    let mut deleted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut chunk_bytes = 0;
    let mut columns: [Vec<&str>; 5] = Default::default();
    let mut completed = Vec::new();
    for &(ns, batch) in batches {
        for (key, value) in &batch.writes {
            let Some(value) = value else {
                deleted.entry(ns).or_default().push(key.as_str());
                continue;
            };
            if chunks.is_empty() || chunk_bytes + value.len() > UPSERT_CHUNK_BYTES {
                chunks.push(Default::default());
                chunk_bytes = 0;
            }
            let (namespaces, keys, values) = chunks.last_mut().expect("a chunk was just pushed");
            namespaces.push(ns);
            keys.push(key.as_str());
            values.push(value.as_slice());
            chunk_bytes += value.len();
        }
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
        completed.extend(batch.completes);
    }

    let mut steps: Vec<Step<'a>> = Vec::new();
    for (namespaces, keys, values) in chunks {
        steps.push(Box::pin(async move {
            conn.execute(&st.upsert, &[&namespaces, &keys, &values])
                .await
        }));
    }
    for (ns, keys) in deleted {
        steps.push(Box::pin(async move {
            conn.execute(&st.delete, &[&ns, &keys]).await
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
    for id in completed {
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

/// Read one key.
pub(super) const READ: &str = "SELECT value FROM kv WHERE ns = $1 AND key = $2";

pub(super) async fn read(
    client: &impl GenericClient,
    ns: &str,
    key: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let stmt = prepared(client, READ).await?;
    client
        .query_opt(&stmt, &[&ns, &key])
        .await
        .and_then(|row| row.map(|row| row.try_get(0)).transpose())
        .map_err(store_error)
}
