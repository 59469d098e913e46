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

async fn get_set_delete<B: Store + Outbox>(store: Arc<B>) {
    assert_eq!(get(&*store, "a").await, None);
    put(&*store, NS, &[("a", Some(b"1")), ("empty", Some(b""))]).await;
    assert_eq!(get(&*store, "a").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(get(&*store, "empty").await.as_deref(), Some(&b""[..]));
    put(&*store, NS, &[("a", Some(&[0, 255, 10]))]).await;
    assert_eq!(get(&*store, "a").await.as_deref(), Some(&[0, 255, 10][..]));
    // Deleting a key that is not there is no error.
    put(&*store, NS, &[("a", None), ("never", None)]).await;
    assert_eq!(get(&*store, "a").await, None);
    assert_eq!(keys(&*store, NS, "", None).await, ["empty"]);
    // A batch with nothing in it commits.
    assert_eq!(
        store.commit(NS, WriteBatch::default()).await.unwrap(),
        Commit::Done
    );
}

async fn namespaces_are_isolated<B: Store + Outbox>(store: Arc<B>) {
    put(&*store, "a", &[("k", Some(b"in a")), ("x", Some(b"1"))]).await;
    put(&*store, "ab", &[("k", Some(b"in ab"))]).await;
    assert_eq!(store.get("b", "k").await.unwrap(), None);
    assert_eq!(store.get("ab", "k").await.unwrap().unwrap(), b"in ab");
    assert_eq!(keys(&*store, "a", "", None).await, ["k", "x"]);
    assert_eq!(keys(&*store, "ab", "", None).await, ["k"]);
    assert!(keys(&*store, "b", "", None).await.is_empty());
    put(&*store, "ab", &[("k", None)]).await;
    assert_eq!(store.get("a", "k").await.unwrap().unwrap(), b"in a");
    assert_eq!(store.increment("b", "x", 5).await.unwrap(), 5);
    settle(&*store).await;
    assert_eq!(store.get("a", "x").await.unwrap().unwrap(), b"1");
    assert_eq!(store.get("b", "x").await.unwrap().unwrap(), b"5");
}

async fn scan_pages_by_limit_and_after<B: Store + Outbox>(store: Arc<B>) {
    let names: Vec<String> = (0..10).map(|i| format!("k{i:02}")).collect();
    let writes: Vec<_> = names
        .iter()
        .map(|k| (k.as_str(), Some(&b"v"[..])))
        .collect();
    put(&*store, NS, &writes).await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = scan_page(&*store, NS, "", after.as_deref(), 3, usize::MAX, true).await;
        pages += 1;
        assert!(page.entries.iter().all(|(_, v)| v == b"v"));
        seen.extend(page.entries.iter().map(|(k, _)| k.clone()));
        // Only the last page (one key) says the range is exhausted.
        assert_eq!(page.more, pages < 4, "page {pages}: {page:?}");
        if !page.more {
            break;
        }
        after = seen.last().cloned();
    }
    assert_eq!(seen, names);
    // A page that holds exactly the rest of the range is the last.
    let page = scan_page(&*store, NS, "", Some("k06"), 3, usize::MAX, true).await;
    assert_eq!(page.entries.len(), 3);
    assert!(!page.more);
    let page = scan_page(&*store, NS, "", None, 10, usize::MAX, false).await;
    assert_eq!(page.entries.len(), 10);
    assert!(!page.more);
    // No room at all: an empty page that says there is more.
    let page = scan_page(&*store, NS, "", None, 0, usize::MAX, true).await;
    assert_eq!(
        page,
        ScanPage {
            entries: vec![],
            more: true
        }
    );
    let page = scan_page(&*store, NS, "", Some("k09"), 3, usize::MAX, true).await;
    assert_eq!(page, ScanPage::default());
}

async fn scan_keeps_to_the_prefix<B: Store + Outbox>(store: Arc<B>) {
    let all = [
        "a",
        "aa",
        "ab",
        "abc",
        "ab\u{10FFFF}",
        "ab\u{10FFFF}z",
        "ac",
        "b",
        "\u{D7FF}x",
        "\u{E000}",
        "\u{10FFFF}",
        "\u{10FFFF}\u{10FFFF}",
    ];
    let writes: Vec<_> = all.iter().map(|k| (*k, Some(&b"v"[..]))).collect();
    put(&*store, NS, &writes).await;
    let check = async |prefix: &str, after: Option<&str>| {
        let mut expected: Vec<&str> = all
            .iter()
            .copied()
            .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| *k > a))
            .collect();
        expected.sort_unstable();
        assert_eq!(
            keys(&*store, NS, prefix, after).await,
            expected,
            "prefix {prefix:?} after {after:?}"
        );
    };
    check("ab", None).await;
    check("ab", Some("a")).await;
    check("ab", Some("abc")).await;
    check("ab", Some("b")).await;
    check("ab\u{10FFFF}", None).await;
    check("a", None).await;
    check("", None).await;
    check("", Some("ac")).await;
    check("\u{D7FF}", None).await;
    check("\u{10FFFF}", None).await;
    check("zz", None).await;
}

async fn scan_pages_by_bytes<B: Store + Outbox>(store: Arc<B>) {
    // Every entry is 2 bytes of key and 10 of value.
    let writes: Vec<_> = ["k1", "k2", "k3", "k4", "k5"]
        .iter()
        .map(|k| (*k, Some(&b"0123456789"[..])))
        .collect();
    put(&*store, NS, &writes).await;
    let page_keys = async |after: Option<&str>, max_bytes: usize, values: bool| {
        let page = scan_page(&*store, NS, "", after, 100, max_bytes, values).await;
        for (_, value) in &page.entries {
            assert_eq!(value, if values { &b"0123456789"[..] } else { b"" });
        }
        let keys: Vec<String> = page.entries.into_iter().map(|(k, _)| k).collect();
        (keys, page.more)
    };
    assert_eq!(
        page_keys(None, 36, true).await,
        (vec!["k1".into(), "k2".into(), "k3".into()], true)
    );
    assert_eq!(
        page_keys(None, 35, true).await,
        (vec!["k1".into(), "k2".into()], true)
    );
    assert_eq!(
        page_keys(Some("k3"), 24, true).await,
        (vec!["k4".into(), "k5".into()], false)
    );
    // A first entry over the budget still comes back, alone.
    assert_eq!(page_keys(None, 5, true).await, (vec!["k1".into()], true));
    assert_eq!(page_keys(None, 0, true).await, (vec!["k1".into()], true));
    // Without values only the keys count.
    assert_eq!(
        page_keys(None, 5, false).await,
        (vec!["k1".into(), "k2".into()], true)
    );
    assert_eq!(
        page_keys(None, 10, false).await,
        (
            vec![
                "k1".into(),
                "k2".into(),
                "k3".into(),
                "k4".into(),
                "k5".into()
            ],
            false
        )
    );
    // The count limit and the byte budget together: whichever ends first.
    let page = scan_page(&*store, NS, "", None, 2, 1000, true).await;
    assert_eq!(page.entries.len(), 2);
    assert!(page.more);
}

/// Keys that SQL (LIKE patterns, escapes, collations) might treat
/// specially, each stored with its own bytes as its value.
fn unusual_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "%",
        "_",
        "\\",
        "a%",
        "a_b",
        "ab",
        "a\\b",
        "a%b",
        "A",
        "Z",
        "a",
        "z",
        "~",
        "\u{7f}",
        "\u{80}",
        "é",
        "e\u{301}",
        "E",
        "ß",
        "ss",
        "日本",
        "😀",
        "😀x",
        "\u{FFFF}",
        "\u{E000}",
        "\u{D7FF}",
        "\u{10000}",
        "\u{10FFFF}",
        "\u{10FFFF}a",
        " lead",
        "tab\t",
        "new\nline",
        "'quote",
        "\"double",
        "*",
        "?",
        "[a]",
        "$1",
        "\u{1}",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    keys.push("k".repeat(512));
    keys.push("é".repeat(256));
    keys.push(format!("{}\u{10FFFF}", "x".repeat(508)));
    keys
}

async fn unusual_keys_sort_as_bytes<B: Store + Outbox>(store: Arc<B>) {
    let all = unusual_keys();
    let writes: Vec<_> = all
        .iter()
        .map(|k| (k.as_str(), Some(k.as_bytes())))
        .collect();
    put(&*store, NS, &writes).await;
    let mut sorted = all.clone();
    // `str`'s order is its UTF-8 bytes' order.
    sorted.sort();
    assert_eq!(keys(&*store, NS, "", None).await, sorted);
    // One key a page: `after` continues exactly where the last page ended.
    let mut after: Option<String> = None;
    let mut paged = Vec::new();
    loop {
        let page = scan_page(&*store, NS, "", after.as_deref(), 1, usize::MAX, true).await;
        for (key, value) in &page.entries {
            assert_eq!(value, key.as_bytes());
            paged.push(key.clone());
        }
        match (page.more, page.entries.last()) {
            (true, Some((key, _))) => after = Some(key.clone()),
            _ => break,
        }
    }
    assert_eq!(paged, sorted);
    for key in &all {
        assert_eq!(
            get(&*store, key).await.as_deref(),
            Some(key.as_bytes()),
            "{key:?}"
        );
    }
    for prefix in [
        "%",
        "_",
        "\\",
        "a",
        "a%",
        "é",
        "e",
        "😀",
        "\u{10FFFF}",
        "k",
        "[",
        "$",
    ] {
        let expected: Vec<&String> = sorted.iter().filter(|k| k.starts_with(prefix)).collect();
        assert_eq!(
            keys(&*store, NS, prefix, None)
                .await
                .iter()
                .collect::<Vec<_>>(),
            expected,
            "prefix {prefix:?}"
        );
    }
}

async fn preconditions_guard_the_batch<B: Store + Outbox>(store: Arc<B>) {
    let batch = |expects: &[(&str, Option<&[u8]>)], write: &str| WriteBatch {
        expects: expects
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec)))
            .collect(),
        writes: BTreeMap::from([(write.to_string(), Some(b"w".to_vec()))]),
        ..WriteBatch::default()
    };
    // Absent, as expected.
    let outcome = store.commit(NS, batch(&[("a", None)], "a")).await.unwrap();
    assert_eq!(outcome, Commit::Done);
    // Expected absent, but present.
    let outcome = store.commit(NS, batch(&[("a", None)], "x")).await.unwrap();
    assert_eq!(outcome, Commit::Conflict("a".into()));
    assert_eq!(get(&*store, "x").await, None);
    // Equal.
    let outcome = store
        .commit(NS, batch(&[("a", Some(b"w"))], "y"))
        .await
        .unwrap();
    assert_eq!(outcome, Commit::Done);
    // Changed.
    let outcome = store
        .commit(NS, batch(&[("a", Some(b"old"))], "z"))
        .await
        .unwrap();
    assert_eq!(outcome, Commit::Conflict("a".into()));
    // Expected present, but absent.
    let outcome = store
        .commit(NS, batch(&[("gone", Some(b""))], "z"))
        .await
        .unwrap();
    assert_eq!(outcome, Commit::Conflict("gone".into()));
    assert_eq!(get(&*store, "z").await, None);
    // Several fail: the first in key order is named.
    let expects = [
        ("a", Some(&b"w"[..])),
        ("d", None),
        ("b", Some(b"?")),
        ("y", Some(b"w")),
    ];
    let outcome = store.commit(NS, batch(&expects, "z")).await.unwrap();
    assert_eq!(outcome, Commit::Conflict("b".into()));
    let expects = [("a", Some(&b"w"[..])), ("y", Some(b"w")), ("nope", None)];
    let outcome = store.commit(NS, batch(&expects, "z")).await.unwrap();
    assert_eq!(outcome, Commit::Done);
    assert_eq!(get(&*store, "z").await.as_deref(), Some(&b"w"[..]));
    // A precondition in another namespace does not see this one's keys.
    let outcome = store
        .commit("other", batch(&[("a", None)], "a"))
        .await
        .unwrap();
    assert_eq!(outcome, Commit::Done);
}

async fn a_refused_batch_writes_nothing<B: Store + Outbox>(store: Arc<B>) {
    put(
        &*store,
        NS,
        &[("keep", Some(b"1")), ("guard", Some(b"now"))],
    )
    .await;
    let batch = WriteBatch {
        writes: BTreeMap::from([
            ("keep".to_string(), None),
            ("new".to_string(), Some(b"x".to_vec())),
        ]),
        expects: BTreeMap::from([("guard".to_string(), Some(b"then".to_vec()))]),
        events: vec![event("e1", &["orders", "audit"])],
        completes: None,
    };
    let outcome = store.commit(NS, batch).await.unwrap();
    assert_eq!(outcome, Commit::Conflict("guard".into()));
    assert_eq!(get(&*store, "keep").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(get(&*store, "new").await, None);
    assert!(store.claim_due(i64::MAX, 10).await.unwrap().is_empty());
}

async fn concurrent_increments_are_distinct<B: Store + Outbox>(store: Arc<B>) {
    const TASKS: usize = 8;
    const EACH: i64 = 25;
    let seen = concurrently(TASKS, |_| {
        let store = store.clone();
        async move {
            let mut seen = Vec::new();
            for _ in 0..EACH {
                seen.push(store.increment(NS, "n", 1).await.unwrap());
            }
            seen
        }
    })
    .await;
    let mut all: Vec<i64> = seen.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
    settle(&*store).await;
    assert_eq!(get(&*store, "n").await.unwrap(), b"200");
}

async fn counters_refuse_what_is_not_a_counter<B: Store + Outbox>(store: Arc<B>) {
    assert_eq!(store.increment(NS, "zero", 0).await.unwrap(), 0);
    assert_eq!(store.increment(NS, "c", -7).await.unwrap(), -7);
    assert_eq!(store.increment(NS, "c", 10).await.unwrap(), 3);
    settle(&*store).await;
    assert_eq!(get(&*store, "zero").await.unwrap(), b"0");
    assert_eq!(get(&*store, "c").await.unwrap(), b"3");
    put(
        &*store,
        NS,
        &[
            ("text", Some(b"twelve")),
            ("big", Some(b"9223372036854775807")),
        ],
    )
    .await;
    let invalid = |outcome: Result<i64, CounterError>| {
        assert!(
            matches!(outcome, Err(CounterError::Invalid(_))),
            "{outcome:?}"
        );
    };
    invalid(store.increment(NS, "text", 1).await);
    assert_eq!(get(&*store, "text").await.unwrap(), b"twelve");
    invalid(store.increment(NS, "big", 1).await);
    assert_eq!(get(&*store, "big").await.unwrap(), b"9223372036854775807");
    assert_eq!(store.increment(NS, "big", -1).await.unwrap(), i64::MAX - 1);
    assert_eq!(
        store.increment(NS, "low", i64::MIN).await.unwrap(),
        i64::MIN
    );
    invalid(store.increment(NS, "low", -1).await);
}

async fn events_fan_out_to_recipients<B: Store + Outbox>(store: Arc<B>) {
    let before = now_ms();
    let batch = WriteBatch {
        writes: BTreeMap::from([("u1".to_string(), Some(b"{}".to_vec()))]),
        events: vec![
            event("e1", &["orders", "audit"]),
            event("e2", &[]),
            event("e3", &["orders"]),
        ],
        ..WriteBatch::default()
    };
    assert_eq!(store.commit("users", batch).await.unwrap(), Commit::Done);
    // Due at once: claimable a second from now, not a second before.
    assert!(store.claim_due(before - 1000, 10).await.unwrap().is_empty());
    let claimed = store.claim_due(now_ms() + 1000, 10).await.unwrap();
    let got: Vec<_> = claimed
        .iter()
        .map(|d| (d.event_id.as_str(), d.recipient.as_str()))
        .collect();
    assert_eq!(got, [("e1", "orders"), ("e1", "audit"), ("e3", "orders")]);
    let first = &claimed[0];
    assert_eq!(first.topic, "user.created");
    assert_eq!(first.payload, r#"{"id":"e1"}"#);
    assert_eq!(first.source, "users");
    assert_eq!(first.attempts, 0);
    assert_eq!(first.last_error, None);
    let mut ids: Vec<i64> = claimed.iter().map(|d| d.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert!(store.dead_letters().await.unwrap().is_empty());
}

async fn claims_lease_deliveries<B: Store + Outbox>(store: Arc<B>) {
    let batch = WriteBatch {
        events: vec![event("e1", &["a", "b", "c"])],
        ..WriteBatch::default()
    };
    assert_eq!(store.commit("users", batch).await.unwrap(), Commit::Done);
    let now = now_ms() + 1000;
    let recipients = |claimed: &[Delivery]| -> Vec<String> {
        claimed.iter().map(|d| d.recipient.clone()).collect()
    };
    let first = store.claim_due(now, 2).await.unwrap();
    assert_eq!(recipients(&first), ["a", "b"]);
    // Leased deliveries are not claimed again; the third still is.
    let second = store.claim_due(now, 10).await.unwrap();
    assert_eq!(recipients(&second), ["c"]);
    assert!(store.claim_due(now, 10).await.unwrap().is_empty());
    assert!(
        store
            .claim_due(now + DELIVERY_LEASE_MS - 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Once the lease runs out they are due again, to whoever claims first.
    let again = store.claim_due(now + DELIVERY_LEASE_MS, 10).await.unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(again[0], first[0]);
}

async fn failed_deliveries_retry_then_dead_letter<B: Store + Outbox>(store: Arc<B>) {
    let delivery = one_delivery(&*store, "e1").await;
    let at = now_ms() + 60_000;
    store
        .fail_delivery(delivery.id, "503 from orders", Retry::At(at))
        .await
        .unwrap();
    // Failing ends the lease: due again at the retry time, not before.
    assert!(store.claim_due(at - 1, 10).await.unwrap().is_empty());
    let retried = store.claim_due(at, 10).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, delivery.id);
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(retried[0].last_error.as_deref(), Some("503 from orders"));
    store
        .fail_delivery(delivery.id, "trap", Retry::DeadLetter)
        .await
        .unwrap();
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, delivery.id);
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].last_error.as_deref(), Some("trap"));
    assert!(store.claim_due(i64::MAX / 2, 10).await.unwrap().is_empty());
    // Only a dead letter can be retried.
    assert!(!store.retry_dead_letter(delivery.id + 1000).await.unwrap());
    assert!(store.retry_dead_letter(delivery.id).await.unwrap());
    assert!(!store.retry_dead_letter(delivery.id).await.unwrap());
    assert!(store.dead_letters().await.unwrap().is_empty());
    let back = store.claim_due(now_ms() + 1000, 10).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].attempts, 0);
    assert_eq!(back[0].event_id, "e1");
}

async fn a_delivery_is_acknowledged_once<B: Store + Outbox>(store: Arc<B>) {
    let delivery = one_delivery(&*store, "e1").await;
    let ack = |key: &str| WriteBatch {
        writes: BTreeMap::from([(key.to_string(), Some(b"applied".to_vec()))]),
        events: vec![event(&format!("caused-by-{key}"), &["audit"])],
        completes: Some(delivery.id),
        ..WriteBatch::default()
    };
    assert_eq!(
        store.commit("orders", ack("first")).await.unwrap(),
        Commit::Done
    );
    assert_eq!(
        store.commit("orders", ack("second")).await.unwrap(),
        Commit::AlreadyDelivered
    );
    assert!(store.get("orders", "second").await.unwrap().is_none());
    assert!(store.get("orders", "first").await.unwrap().is_some());
    // The acknowledged delivery is gone (past any lease), and only the
    // first acknowledgement's event was published.
    let due: Vec<String> = store
        .claim_due(now_ms() + 2 * DELIVERY_LEASE_MS, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    assert_eq!(due, ["caused-by-first"]);
    // A dead-lettered delivery is not acknowledged either.
    let dead = one_delivery(&*store, "e2").await;
    store
        .fail_delivery(dead.id, "gave up", Retry::DeadLetter)
        .await
        .unwrap();
    let batch = WriteBatch {
        writes: BTreeMap::from([("late".to_string(), Some(b"x".to_vec()))]),
        completes: Some(dead.id),
        ..WriteBatch::default()
    };
    assert_eq!(
        store.commit("orders", batch).await.unwrap(),
        Commit::AlreadyDelivered
    );
    assert!(store.get("orders", "late").await.unwrap().is_none());
    assert_eq!(store.dead_letters().await.unwrap().len(), 1);
}

async fn racing_preconditions_let_one_win<B: Store + Outbox>(store: Arc<B>) {
    const RACERS: usize = 8;
    let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
    let outcomes = concurrently(RACERS, |i| {
        let (store, barrier) = (store.clone(), barrier.clone());
        let batch = WriteBatch {
            expects: BTreeMap::from([("slot".to_string(), None)]),
            writes: BTreeMap::from([
                ("slot".to_string(), Some(i.to_string().into_bytes())),
                (format!("by-{i}"), Some(b"1".to_vec())),
            ]),
            ..WriteBatch::default()
        };
        async move {
            barrier.wait().await;
            store.commit(NS, batch).await.unwrap()
        }
    })
    .await;
    let mut winners = Vec::new();
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Commit::Done => winners.push(i),
            outcome => assert_eq!(outcome, Commit::Conflict("slot".into())),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let winner = winners[0];
    assert_eq!(
        get(&*store, "slot").await.unwrap(),
        winner.to_string().as_bytes()
    );
    let by: Vec<String> = keys(&*store, NS, "by-", None).await;
    assert_eq!(by, [format!("by-{winner}")]);
}

async fn read_modify_write_loses_no_update<B: Store + Outbox>(store: Arc<B>) {
    const TASKS: usize = 4;
    const EACH: usize = 10;
    concurrently(TASKS, |_| {
        let store = store.clone();
        async move {
            for _ in 0..EACH {
                // What a request does: read, compute, commit on the condition
                // that what it read is still there; again on a conflict.
                loop {
                    let current = store.get(NS, "total").await.unwrap();
                    let n: u64 = current
                        .as_deref()
                        .map_or(0, |v| std::str::from_utf8(v).unwrap().parse().unwrap());
                    let batch = WriteBatch {
                        expects: BTreeMap::from([("total".to_string(), current)]),
                        writes: BTreeMap::from([(
                            "total".to_string(),
                            Some((n + 1).to_string().into_bytes()),
                        )]),
                        ..WriteBatch::default()
                    };
                    if store.commit(NS, batch).await.unwrap() == Commit::Done {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert_eq!(
        get(&*store, "total").await.unwrap(),
        (TASKS * EACH).to_string().as_bytes()
    );
}

/// The same sequence of operations on every backend gives the same
/// answers, operation by operation.
#[tokio::test]
async fn backends_agree_on_a_mixed_workload() {
    let memory = transcript(Arc::new(MemoryStore::new())).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = transcript(Arc::new(SqliteStore::open(dir.path()).unwrap())).await;
    assert_eq!(memory, sqlite, "memory and SQLite differ");
    testdb::with_database(|url| async move {
        let store = PostgresStore::connect(&url, 4).await.unwrap();
        let postgres = transcript(Arc::new(store)).await;
        assert_eq!(memory, postgres, "memory and PostgreSQL differ");
    })
    .await;
}

/// A seeded pseudo-random workload over a few keys, each answer written down.
async fn transcript<B: Store + Outbox>(store: Arc<B>) -> Vec<String> {
    let mut seed: u64 = 0x5eed;
    let mut next = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let names = ["a", "ab", "abc", "b", "é", "%", "_", "\u{10FFFF}"];
    let mut lines = Vec::new();
    for step in 0..300 {
        let key = names[usize::try_from(next(names.len() as u64)).unwrap()];
        let line = match next(6) {
            0 | 1 => {
                let mut batch = WriteBatch::default();
                for _ in 0..=next(3) {
                    let k = names[usize::try_from(next(names.len() as u64)).unwrap()];
                    let value = (next(4) > 0).then(|| format!("{step}").into_bytes());
                    batch.writes.insert(k.to_string(), value);
                }
                if next(2) == 0 {
                    let seen = store.get(NS, key).await.unwrap();
                    let expected = if next(4) == 0 {
                        Some(b"stale".to_vec())
                    } else {
                        seen
                    };
                    batch.expects.insert(key.to_string(), expected);
                }
                if next(3) == 0 {
                    batch.events.push(event(&format!("e{step}"), &["x", "y"]));
                }
                format!("commit {:?}", store.commit(NS, batch).await.unwrap())
            }
            2 => format!("get {key} {:?}", store.get(NS, key).await.unwrap()),
            3 => {
                let chars = usize::try_from(next(2)).unwrap();
                let prefix: String = key.chars().take(chars).collect();
                let prefix = prefix.as_str();
                let after = (next(2) == 0).then_some(key);
                let limit = usize::try_from(next(5)).unwrap();
                let max_bytes = usize::try_from(next(12)).unwrap();
                let page =
                    scan_page(&*store, NS, prefix, after, limit, max_bytes, next(2) == 0).await;
                format!("scan {prefix:?} {after:?} {limit} {max_bytes} {page:?}")
            }
            4 => {
                let delta = i64::try_from(next(5)).unwrap() - 2;
                let outcome = store.increment(NS, key, delta).await;
                settle(&*store).await;
                format!("increment {key} {delta} {outcome:?}")
            }
            _ => {
                let claimed = store.claim_due(now_ms() + 1000, 3).await.unwrap();
                let mut line = String::from("claim");
                for delivery in claimed {
                    line.push_str(&format!(" {}>{}", delivery.event_id, delivery.recipient));
                    let retry = if next(2) == 0 {
                        Retry::DeadLetter
                    } else {
                        Retry::At(0)
                    };
                    store.fail_delivery(delivery.id, "no", retry).await.unwrap();
                }
                line
            }
        };
        lines.push(line);
    }
    let dead: Vec<String> = store
        .dead_letters()
        .await
        .unwrap()
        .into_iter()
        .map(|d| format!("{}>{} {}", d.event_id, d.recipient, d.attempts))
        .collect();
    lines.push(format!("dead {dead:?}"));
    lines
}
