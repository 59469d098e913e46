//! One conformance suite for every backend: each property is one generic
//! function over `Store + Outbox`, run by `backends!` against memory, SQLite
//! (in a temporary directory) and PostgreSQL (a fresh database on the server
//! `BERTH_TEST_POSTGRES` names), so the backends cannot drift apart.

use super::postgres::testdb;
use super::{
    Commit, CounterError, DELIVERY_LEASE_MS, Delivery, MemoryStore, NewEvent, Outbox,
    PostgresStore, Retry, Scan, ScanPage, SqliteStore, Store, WriteBatch, now_ms,
};
use std::collections::BTreeMap;
use std::sync::Arc;

mod agree;
mod applies;
mod kv;
mod outbox;

use applies::*;
use kv::*;
use outbox::*;

/// Instantiate every property once per backend, as
/// `store::conformance::{memory,sqlite,postgres}::PROPERTY`.
macro_rules! backends {
    ($($property:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $property() {
                    super::$property(std::sync::Arc::new(crate::store::MemoryStore::new())).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $property() {
                    super::on_sqlite(super::$property).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $property() {
                    super::on_postgres(super::$property).await;
                }
            )*
        }
    };
}

backends!(
    get_set_delete,
    namespaces_are_isolated,
    scan_pages_by_limit_and_after,
    scan_keeps_to_the_prefix,
    scan_pages_by_bytes,
    unusual_keys_sort_as_bytes,
    preconditions_guard_the_batch,
    a_refused_batch_writes_nothing,
    concurrent_increments_are_distinct,
    counters_refuse_what_is_not_a_counter,
    events_fan_out_to_recipients,
    claims_lease_deliveries,
    failed_deliveries_retry_then_dead_letter,
    a_delivery_is_acknowledged_once,
    a_delivery_is_completed_once,
    backlog_counts_live_deliveries,
    an_event_is_applied_once_per_namespace,
    racing_appliers_let_one_win,
    pruning_forgets_only_old_records,
    racing_preconditions_let_one_win,
    read_modify_write_loses_no_update,
);

async fn on_sqlite<F, Fut>(property: F)
where
    F: FnOnce(Arc<SqliteStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    property(Arc::new(SqliteStore::open(dir.path()).unwrap())).await;
}

async fn on_postgres<F, Fut>(property: F)
where
    F: FnOnce(Arc<PostgresStore>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    testdb::with_database(|url| async move {
        let store = PostgresStore::connect(&url, super::DEFAULT_POOL_SIZE)
            .await
            .unwrap();
        property(Arc::new(store)).await;
    })
    .await;
}

const NS: &str = "svc";

/// Commit `writes` (`None` deletes) with no preconditions.
async fn put<B: Store>(store: &B, ns: &str, writes: &[(&str, Option<&[u8]>)]) {
    let batch = WriteBatch {
        writes: writes
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
            .collect(),
        ..WriteBatch::default()
    };
    assert_eq!(store.commit(ns, batch).await.unwrap(), Commit::Done);
}

/// Commit a batch elsewhere, so every increment that returned before is
/// committed too: an increment is only promised to be durable no later than
/// the next batch (SQLite answers it before its group commit).
async fn settle<B: Store>(store: &B) {
    put(store, "settle", &[("k", Some(b""))]).await;
}

/// Run `task(i)` for `i` in `0..n` as concurrent tokio tasks; their
/// results, in `i` order.
async fn concurrently<T, Fut>(n: usize, task: impl Fn(usize) -> Fut) -> Vec<T>
where
    T: Send + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(task(i))).collect();
    let mut results = Vec::with_capacity(n);
    for handle in handles {
        results.push(handle.await.unwrap());
    }
    results
}

async fn get<B: Store>(store: &B, key: &str) -> Option<Vec<u8>> {
    store.get(NS, key).await.unwrap()
}

/// Every key of the range, in one page.
async fn keys<B: Store>(store: &B, ns: &str, prefix: &str, after: Option<&str>) -> Vec<String> {
    let page = scan_page(store, ns, prefix, after, 1000, usize::MAX, false).await;
    assert!(!page.more);
    page.entries.into_iter().map(|(k, _)| k).collect()
}

/// One page of `ns`'s keys: those starting with `prefix`, after `after`.
async fn scan_page<B: Store>(
    store: &B,
    ns: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    max_bytes: usize,
    values: bool,
) -> ScanPage {
    let scan = Scan {
        prefix,
        after,
        limit,
        max_bytes,
        values,
    };
    store.scan(ns, &scan).await.unwrap()
}

fn event(id: &str, recipients: &[&str]) -> NewEvent {
    NewEvent {
        id: id.into(),
        topic: "user.created".into(),
        payload: format!(r#"{{"id":"{id}"}}"#),
        source: "users".into(),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
    }
}

/// Publish one event to one recipient and return its delivery.
async fn one_delivery<B: Store + Outbox>(store: &B, id: &str) -> Delivery {
    let batch = WriteBatch {
        events: vec![event(id, &["orders"])],
        ..WriteBatch::default()
    };
    assert_eq!(store.commit("users", batch).await.unwrap(), Commit::Done);
    let mut claimed = store.claim_due(now_ms() + 1000, 10).await.unwrap();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    claimed.remove(0)
}
