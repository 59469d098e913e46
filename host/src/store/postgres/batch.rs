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

/// One batch, in one transaction: lock its keys, check its preconditions
/// and the delivery it completes, then write. A refused batch is rolled
/// back having written nothing.
pub(super) async fn apply(
    conn: &mut deadpool_postgres::Client,
    ns: &str,
    batch: &WriteBatch,
) -> Result<Commit, tokio_postgres::Error> {
    let tx = conn.transaction().await?;
    let locks: BTreeSet<i64> = (batch.expects.keys().chain(batch.writes.keys()))
        .map(|key| lock_id(ns, key))
        .collect();
    lock_keys(&tx, &locks.into_iter().collect::<Vec<_>>()).await?;
    if let Some(key) = first_changed(&tx, ns, batch).await? {
        tx.rollback().await?;
        return Ok(Commit::Conflict(key));
    }
    if let Some(id) = batch.completes {
        // The row lock makes a second replica acknowledging the same
        // delivery wait here, then find it gone.
        let stmt = tx
            .prepare_cached("SELECT 1 FROM deliveries WHERE id = $1 AND NOT dead FOR UPDATE")
            .await?;
        if tx.query_opt(&stmt, &[&id]).await?.is_none() {
            tx.rollback().await?;
            return Ok(Commit::AlreadyDelivered);
        }
    }
    let (mut keys, mut values, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
    let mut chunk_bytes = 0;
    for (key, value) in &batch.writes {
        let Some(value) = value else {
            deleted.push(key.as_str());
            continue;
        };
        if chunk_bytes + value.len() > UPSERT_CHUNK_BYTES && !keys.is_empty() {
            upsert(&tx, ns, &keys, &values).await?;
            (keys, values, chunk_bytes) = (Vec::new(), Vec::new(), 0);
        }
        keys.push(key.as_str());
        values.push(value.as_slice());
        chunk_bytes += value.len();
    }
    if !keys.is_empty() {
        upsert(&tx, ns, &keys, &values).await?;
    }
    if !deleted.is_empty() {
        let stmt = tx
            .prepare_cached("DELETE FROM kv WHERE ns = $1 AND key = ANY($2::text[])")
            .await?;
        tx.execute(&stmt, &[&ns, &deleted]).await?;
    }
    insert_deliveries(&tx, batch).await?;
    if let Some(id) = batch.completes {
        let stmt = tx
            .prepare_cached("DELETE FROM deliveries WHERE id = $1")
            .await?;
        tx.execute(&stmt, &[&id]).await?;
    }
    tx.commit().await?;
    Ok(Commit::Done)
}

/// The first key (in key order) whose committed value is not the one the
/// batch expects, compared on the server so no value is sent back.
async fn first_changed(
    tx: &deadpool_postgres::Transaction<'_>,
    ns: &str,
    batch: &WriteBatch,
) -> Result<Option<String>, tokio_postgres::Error> {
    if batch.expects.is_empty() {
        return Ok(None);
    }
    let keys: Vec<&str> = batch.expects.keys().map(String::as_str).collect();
    let values: Vec<Option<&[u8]>> = batch.expects.values().map(Option::as_deref).collect();
    let stmt = tx
        .prepare_cached(
            "SELECT u.key FROM unnest($2::text[], $3::bytea[]) WITH ORDINALITY AS u(key, value, n)
             LEFT JOIN kv ON kv.ns = $1 AND kv.key = u.key
             WHERE kv.value IS DISTINCT FROM u.value
             ORDER BY u.n LIMIT 1",
        )
        .await?;
    tx.query_opt(&stmt, &[&ns, &keys, &values])
        .await?
        .map(|row| row.try_get(0))
        .transpose()
}

/// One pending delivery per recipient of each event, due now.
async fn insert_deliveries(
    tx: &deadpool_postgres::Transaction<'_>,
    batch: &WriteBatch,
) -> Result<(), tokio_postgres::Error> {
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
    if columns[0].is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO deliveries (event_id, topic, payload, source, recipient, next_at)
             SELECT e.event_id, e.topic, e.payload, e.source, e.recipient, $6
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                  WITH ORDINALITY AS e(event_id, topic, payload, source, recipient, n)
             ORDER BY e.n",
        )
        .await?;
    let [ids, topics, payloads, sources, recipients] = &columns;
    tx.execute(
        &stmt,
        &[&ids, &topics, &payloads, &sources, &recipients, &now_ms()],
    )
    .await?;
    Ok(())
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

/// Take the advisory locks `ids` (distinct, ascending) until the end of the
/// transaction, in one statement. Every transaction takes its locks in the
/// same ascending order, so two batches sharing keys wait for each other
/// but never deadlock.
pub(super) async fn lock_keys(
    client: &impl GenericClient,
    ids: &[i64],
) -> Result<(), tokio_postgres::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    let stmt = client
        .prepare_cached("SELECT pg_advisory_xact_lock(l) FROM unnest($1::bigint[]) AS l")
        .await?;
    client.execute(&stmt, &[&ids]).await.map(drop)
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

/// Insert or replace `keys[i]` with `values[i]`, in one statement.
pub(super) async fn upsert(
    client: &impl GenericClient,
    ns: &str,
    keys: &[&str],
    values: &[&[u8]],
) -> Result<(), tokio_postgres::Error> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO kv (ns, key, value)
             SELECT $1, u.key, u.value FROM unnest($2::text[], $3::bytea[]) AS u(key, value)
             ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value",
        )
        .await?;
    client
        .execute(&stmt, &[&ns, &keys, &values])
        .await
        .map(drop)
}
