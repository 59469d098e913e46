//! What only the PostgreSQL store has: connecting (errors, redaction,
//! migrations), session settings, several replicas on one database, and
//! the extra connection for LISTEN. Behaviour every backend shares is in
//! `store/conformance.rs`.

use super::testdb::{self, with_database};
use super::*;
use crate::store::NewEvent;
use std::collections::BTreeMap;
use std::time::Instant;

fn check_redact(url: &str, expected: &str) {
    assert_eq!(redact(url), expected, "redact({url:?})");
}

#[test]
fn redact_hides_the_password_wherever_the_parser_finds_it() {
    check_redact(
        "postgres://berth:s3cret@db:5432/berth",
        "postgres://berth:***@db:5432/berth",
    );
    check_redact(
        "postgresql://berth:a:b%40c@db/berth?sslmode=disable",
        "postgresql://berth:***@db/berth?sslmode=disable",
    );
    check_redact(
        "postgres://berth:p@ss/w@rd@db/berth?x=1",
        "postgres://berth:***@db/berth?x=1",
    );
    check_redact(
        "postgres://berth:a?b@db/berth",
        "postgres://berth:***@db/berth",
    );
    check_redact("postgres://berth@db/berth", "postgres://berth@db/berth");
    check_redact("postgres://db/berth", "postgres://db/berth");
    check_redact(
        "postgres://db/berth?user=u&password=s3cret&application_name=x",
        "postgres://db/berth?user=u&password=***&application_name=x",
    );
    check_redact(
        "postgres://u:one@db/berth?password=two",
        "postgres://u:***@db/berth?password=***",
    );
    check_redact(
        "host=db password = 'a \\' b' user=u",
        "host=db password=*** user=u",
    );
    check_redact("host=db password=s3cret", "host=db password=***");
    // Not URLs the parser reads, but a password may still sit before `@`.
    check_redact("postgres//berth:s3cret@db/berth", "***@db/berth");
    check_redact("postgres:/berth:s3cret@db/berth", "***@db/berth");
    check_redact("berth:s3cret@db/berth", "***@db/berth");
    // Only a parameter named `password` is hidden.
    check_redact(
        "postgres://db/x?old_password=1",
        "postgres://db/x?old_password=1",
    );
}

async fn connect_error(url: &str) -> ConnectError {
    match PostgresStore::connect(url, 2).await {
        Ok(_) => panic!("connected to {url}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn a_url_that_is_not_postgres_is_malformed() {
    for url in [
        "mysql://berth:s3cret@db/berth",
        "postgres://berth:s3cret@db:notaport/berth",
        "host=db password=s3cret",
        "",
    ] {
        let e = connect_error(url).await;
        assert!(matches!(e, ConnectError::Malformed { .. }), "{url}: {e:?}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(!e.is_transient());
    }
    let e = connect_error("mysql://berth:s3cret@db/berth").await;
    assert_eq!(
        e.to_string(),
        "`mysql://berth:***@db/berth` is not a PostgreSQL URL (it must start with postgres:// or postgresql://): write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    );
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let e = connect_error(&format!("postgres://berth:s3cret@127.0.0.1:{port}/berth")).await;
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e:?}");
    assert!(e.is_transient());
    let message = e.to_string();
    assert!(!message.contains("s3cret"), "{message}");
    assert!(
        message.starts_with(&format!(
            "cannot reach PostgreSQL at postgres://berth:***@127.0.0.1:{port}/berth: "
        )),
        "{message}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_is_unreachable_after_the_timeout() {
    // Accepts connections and never says a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let e = connect_error(&format!("postgres://berth:s3cret@127.0.0.1:{port}/berth")).await;
    let waited = started.elapsed();
    silent.abort();
    assert!(matches!(e, ConnectError::Unreachable { .. }), "{e:?}");
    assert!(
        waited >= CONNECT_TIMEOUT && waited < CONNECT_TIMEOUT * 3,
        "{waited:?}"
    );
}

#[tokio::test]
async fn bad_credentials_and_missing_databases_are_refused() {
    let Some(server) = testdb::server() else {
        return;
    };
    let config: tokio_postgres::Config = server.parse().unwrap();
    let password = std::str::from_utf8(config.get_password().unwrap()).unwrap();
    let wrong = server.replacen(password, "not-the-password", 1);
    let e = connect_error(&wrong).await;
    assert!(matches!(e, ConnectError::Refused { .. }), "{e:?}");
    assert!(!e.to_string().contains("not-the-password"), "{e}");
    assert!(e.to_string().contains("28P01"), "{e}");
    assert!(!e.is_transient());

    let missing = testdb::with_dbname(&server, "berth_no_such_database");
    let e = connect_error(&missing).await;
    assert!(matches!(e, ConnectError::Refused { .. }), "{e:?}");
    assert!(!e.to_string().contains(password), "{e}");
    assert!(e.to_string().contains("3D000"), "{e}");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    with_database(|url| async move {
        let store = PostgresStore::connect(&url, 2).await.unwrap();
        let conn = store.pool().get().await.unwrap();
        let newer = schema::known_version() + 5;
        conn.execute("INSERT INTO berth_schema (version) VALUES ($1)", &[&newer])
            .await
            .unwrap();
        let e = connect_error(&url).await;
        let known = schema::known_version();
        assert_eq!(e, ConnectError::NewerSchema { found: newer, known });
        assert_eq!(
            e.to_string(),
            format!(
                "the database holds schema version {newer}, this berth knows up to {known}: upgrade berth"
            )
        );
    })
    .await;
}

#[tokio::test]
async fn replicas_starting_together_migrate_once() {
    with_database(|url| async move {
        let connects = (0..6).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url, 2).await })
        });
        let mut stores = Vec::new();
        for connect in connects.collect::<Vec<_>>() {
            stores.push(connect.await.unwrap().unwrap());
        }
        let conn = stores[0].pool().get().await.unwrap();
        let versions: Vec<i32> = conn
            .query("SELECT version FROM berth_schema ORDER BY version", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert_eq!(versions, (1..=schema::known_version()).collect::<Vec<_>>());
        // And again later: nothing to do.
        PostgresStore::connect(&url, 1).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn sessions_commit_synchronously_whatever_the_url_says() {
    with_database(|url| async move {
        let url = format!("{url}?options=-c%20synchronous_commit%3Doff%20-c%20work_mem%3D8MB");
        let store = PostgresStore::connect(&url, 2).await.unwrap();
        let conn = store.pool().get().await.unwrap();
        let setting = |name: &'static str| {
            let conn = &conn;
            async move {
                let row = conn
                    .query_one("SELECT current_setting($1)", &[&name])
                    .await
                    .unwrap();
                row.get::<_, String>(0)
            }
        };
        assert_eq!(setting("synchronous_commit").await, "on");
        // The URL's other options still apply.
        assert_eq!(setting("work_mem").await, "8MB");
        assert_eq!(setting("application_name").await, "berth");
        let (client, connection) = store.dedicated().await.unwrap();
        tokio::spawn(connection);
        let row = client
            .query_one("SHOW synchronous_commit", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), "on");
    })
    .await;
}

#[tokio::test]
async fn sessions_are_bounded_in_time_unless_the_url_says_otherwise() {
    with_database(|url| async move {
        let setting = async |url: &str, name: &str| {
            let store = PostgresStore::connect(url, 1).await.unwrap();
            let conn = store.pool().get().await.unwrap();
            let row = conn
                .query_one("SELECT current_setting($1)", &[&name])
                .await
                .unwrap();
            row.get::<_, String>(0)
        };
        assert_eq!(setting(&url, "statement_timeout").await, "30s");
        assert_eq!(setting(&url, "lock_timeout").await, "10s");
        assert_eq!(
            setting(&url, "idle_in_transaction_session_timeout").await,
            "1min"
        );
        assert_eq!(setting(&url, "plan_cache_mode").await, "force_generic_plan");
        let shorter = format!("{url}?options=-c%20lock_timeout%3D250ms");
        assert_eq!(setting(&shorter, "lock_timeout").await, "250ms");
        assert_eq!(setting(&shorter, "statement_timeout").await, "30s");
        let planned = format!("{url}?options=-c%20plan_cache_mode%3Dauto");
        assert_eq!(setting(&planned, "plan_cache_mode").await, "auto");
    })
    .await;
}

#[tokio::test]
async fn a_key_locked_past_lock_timeout_is_unavailable_not_stuck() {
    with_database(|url| async move {
        let url = format!("{url}?options=-c%20lock_timeout%3D300ms");
        // Grouped commits and commits alone (`--store-group 1`) alike.
        for max_group in [DEFAULT_MAX_GROUP, 1] {
            let store = PostgresStore::connect(&url, 2)
                .await
                .unwrap()
                .with_max_group(max_group);
            // Another session takes the key's lock and sits on it, as a
            // stuck replica would.
            let (holder, connection) = store.dedicated().await.unwrap();
            tokio::spawn(connection);
            holder.batch_execute("BEGIN").await.unwrap();
            let key = format!("k{max_group}");
            holder
                .execute("SELECT pg_advisory_xact_lock($1)", &[&lock_id("ns", &key)])
                .await
                .unwrap();
            // An insert: its precondition (no such key) is pipelined after
            // the lock, and fails as "transaction aborted" behind it.
            let batch = insert(key.clone(), "v");
            let started = Instant::now();
            match store.commit("ns", batch.clone()).await {
                Err(StoreError::Unavailable(why)) => assert!(why.contains("55P03"), "{why}"),
                other => panic!("group of {max_group}: {other:?}"),
            }
            assert!(started.elapsed() < Duration::from_secs(5));
            // Another key is not held up, and the key is free once the
            // holder lets go.
            let other = format!("other{max_group}");
            store.commit("ns", insert(other, "v")).await.unwrap();
            holder.batch_execute("ROLLBACK").await.unwrap();
            assert_eq!(store.commit("ns", batch).await.unwrap(), Commit::Done);
            assert_eq!(store.get("ns", &key).await.unwrap(), Some(b"v".to_vec()));
        }
    })
    .await;
}

#[tokio::test]
async fn a_closed_store_says_so() {
    with_database(|url| async move {
        let store = PostgresStore::connect(&url, 2).await.unwrap();
        assert_eq!(store.get("ns", "k").await.unwrap(), None);
        store.close();
        assert_eq!(store.get("ns", "k").await, Err(StoreError::Closed));
        let batch = WriteBatch {
            writes: BTreeMap::from([("k".to_string(), Some(b"v".to_vec()))]),
            ..WriteBatch::default()
        };
        assert_eq!(store.commit("ns", batch).await, Err(StoreError::Closed));
    })
    .await;
}

#[tokio::test]
async fn keys_with_nul_are_refused_and_never_found() {
    with_database(|url| async move {
        let store = PostgresStore::connect(&url, 2).await.unwrap();
        let batch = WriteBatch {
            writes: BTreeMap::from([
                ("a".to_string(), Some(b"1".to_vec())),
                ("a\0b".to_string(), Some(b"2".to_vec())),
            ]),
            ..WriteBatch::default()
        };
        match store.commit("ns", batch).await {
            Err(StoreError::Failed(why)) => assert!(why.contains("U+0000"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            store.increment("ns", "\0", 1).await,
            Err(CounterError::Store(StoreError::Failed(_)))
        ));
        // A refused key is no sign that the database stopped taking writes.
        assert_eq!(store.write_failure(), None);
        let batch = WriteBatch {
            writes: BTreeMap::from([
                ("a".to_string(), Some(b"1".to_vec())),
                ("a\u{1}".to_string(), Some(b"2".to_vec())),
            ]),
            ..WriteBatch::default()
        };
        assert_eq!(store.commit("ns", batch).await.unwrap(), Commit::Done);
        assert_eq!(store.get("ns", "a\0").await.unwrap(), None);
        let scan = |prefix, after| Scan {
            prefix,
            after,
            limit: 10,
            max_bytes: 1000,
            values: false,
        };
        let keys = |page: ScanPage| page.entries.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert!(keys(store.scan("ns", &scan("a\0", None)).await.unwrap()).is_empty());
        // Above "a\0x" is above "a" (and "a\0x" itself cannot exist).
        assert_eq!(
            keys(store.scan("ns", &scan("", Some("a\0x"))).await.unwrap()),
            ["a\u{1}"]
        );
    })
    .await;
}

#[test]
fn lock_ids_depend_on_the_namespace_and_the_key() {
    let id = lock_id("users", "u1");
    assert_eq!(id, lock_id("users", "u1"));
    assert_ne!(id, lock_id("orders", "u1"));
    assert_ne!(id, lock_id("users", "u2"));
    // The separator keeps ("ab", "c") and ("a", "bc") apart.
    assert_ne!(lock_id("ab", "c"), lock_id("a", "bc"));
}

#[tokio::test]
async fn write_failure_reports_a_database_that_stopped_taking_writes() {
    with_database(|url| async move {
        // One connection, so the setting below holds for every operation.
        let store = PostgresStore::connect(&url, 1).await.unwrap();
        let read_only = async |on: bool| {
            let conn = store.pool().get().await.unwrap();
            conn.batch_execute(&format!("SET default_transaction_read_only = {on}"))
                .await
                .unwrap();
        };
        store.probe().await.unwrap();
        assert_eq!(store.write_failure(), None);
        read_only(true).await;
        let batch = WriteBatch {
            writes: BTreeMap::from([("k".to_string(), Some(b"v".to_vec()))]),
            ..WriteBatch::default()
        };
        match store.commit("ns", batch.clone()).await {
            Err(StoreError::Unavailable(why)) => assert!(why.contains("25006"), "{why}"),
            other => panic!("{other:?}"),
        }
        let failure = store.write_failure().expect("a failure is reported");
        assert!(failure.contains("read-only"), "{failure}");
        assert!(store.probe().await.is_err());
        // Reads still work.
        assert_eq!(store.get("ns", "k").await.unwrap(), None);
        read_only(false).await;
        store.probe().await.unwrap();
        assert_eq!(store.write_failure(), None);
        assert_eq!(store.commit("ns", batch).await.unwrap(), Commit::Done);
    })
    .await;
}

/// Two stores on one database, as two replicas hold it, and one event
/// published through the first to `recipients` subscribers.
async fn replicas_with_an_event(
    url: &str,
    recipients: usize,
) -> (Arc<PostgresStore>, Arc<PostgresStore>) {
    let first = Arc::new(PostgresStore::connect(url, 4).await.unwrap());
    let second = Arc::new(PostgresStore::connect(url, 4).await.unwrap());
    let batch = WriteBatch {
        events: vec![NewEvent {
            id: "e".into(),
            topic: "t".into(),
            payload: "{}".into(),
            source: "s".into(),
            recipients: (0..recipients).map(|i| format!("r{i}")).collect(),
        }],
        ..WriteBatch::default()
    };
    assert_eq!(first.commit("s", batch).await.unwrap(), Commit::Done);
    (first, second)
}

#[tokio::test]
async fn replicas_share_the_outbox_without_claiming_twice() {
    with_database(|url| async move {
        let (first, second) = replicas_with_an_event(&url, 40).await;
        let now = now_ms() + 1000;
        let drain = |store: Arc<PostgresStore>| {
            tokio::spawn(async move {
                let mut claimed = Vec::new();
                loop {
                    let page = store.claim_due(now, 3).await.unwrap();
                    if page.is_empty() {
                        return claimed;
                    }
                    claimed.extend(page.into_iter().map(|d| d.id));
                }
            })
        };
        let (a, b) = (drain(first.clone()), drain(second.clone()));
        let (a, b) = (a.await.unwrap(), b.await.unwrap());
        let mut all: Vec<i64> = a.iter().chain(&b).copied().collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 40);
        assert_eq!(a.len() + b.len(), 40, "a delivery was claimed twice");
    })
    .await;
}

#[tokio::test]
async fn replicas_acknowledge_a_delivery_once() {
    with_database(|url| async move {
        let (first, second) = replicas_with_an_event(&url, 1).await;
        let delivery = first.claim_due(now_ms() + 1000, 1).await.unwrap().remove(0);
        let ack = |store: Arc<PostgresStore>, key: &'static str| {
            let batch = WriteBatch {
                writes: BTreeMap::from([(key.to_string(), Some(b"applied".to_vec()))]),
                completes: Some(delivery.id),
                ..WriteBatch::default()
            };
            tokio::spawn(async move { store.commit("r", batch).await.unwrap() })
        };
        let (a, b) = (ack(first.clone(), "a"), ack(second.clone(), "b"));
        let mut outcomes = vec![a.await.unwrap(), b.await.unwrap()];
        outcomes.sort_by_key(|o| format!("{o:?}"));
        assert_eq!(outcomes, [Commit::AlreadyDelivered, Commit::Done]);
        let applied = [
            first.get("r", "a").await.unwrap(),
            first.get("r", "b").await.unwrap(),
        ];
        assert_eq!(applied.iter().flatten().count(), 1);
    })
    .await;
}

#[tokio::test]
async fn concurrent_batches_over_shared_keys_never_deadlock() {
    with_database(|url| async move {
        let store = Arc::new(PostgresStore::connect(&url, 8).await.unwrap());
        let tasks: Vec<_> = (0..8u64)
            .map(|task| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut seed = task;
                    for _ in 0..20 {
                        let mut batch = WriteBatch::default();
                        for _ in 0..4 {
                            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                            let key = format!("k{}", (seed >> 33) % 6);
                            batch
                                .writes
                                .insert(key, Some(task.to_string().into_bytes()));
                        }
                        assert_eq!(store.commit("ns", batch).await.unwrap(), Commit::Done);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
    })
    .await;
}

/// A batch that inserts `key` (it must be absent) with `value`.
fn insert(key: String, value: &str) -> WriteBatch {
    let mut batch = WriteBatch::default();
    batch.expects.insert(key.clone(), None);
    batch.writes.insert(key, Some(value.as_bytes().to_vec()));
    batch
}

/// Batches committed at the same moment share transactions, and each is
/// still judged on its own: of two racing inserts of one key exactly one
/// wins, a batch the database refuses fails alone, and every batch answered
/// `Done` is there afterwards.
#[tokio::test]
async fn concurrent_batches_commit_in_groups_each_judged_alone() {
    with_database(|url| async move {
        // Two connections give one group in flight, so batches that arrive
        // while it commits queue and form the next group.
        let store = Arc::new(PostgresStore::connect(&url, 2).await.unwrap());
        let mut batches = Vec::new();
        for i in 0..40 {
            batches.push(insert(format!("own{i}"), "v"));
        }
        for i in 0..10 {
            batches.push(insert(format!("race{i}"), "a"));
            batches.push(insert(format!("race{i}"), "b"));
        }
        // Longer than a PostgreSQL index entry may be, and random enough
        // not to compress below it: the database refuses this batch.
        let mut seed = 7u64;
        let long: String = (0..8000)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                char::from(b'a' + u8::try_from((seed >> 33) % 26).unwrap())
            })
            .collect();
        batches.push(insert(long.clone(), "x"));
        let total = batches.len();
        let tasks: Vec<_> = batches
            .into_iter()
            .map(|batch| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = batch.writes.keys().next().unwrap().clone();
                    let value = batch.writes.values().next().unwrap().clone();
                    (key, value, store.commit("g", batch).await)
                })
            })
            .collect();
        let mut winners = BTreeMap::new();
        for task in tasks {
            let (key, value, outcome) = task.await.unwrap();
            match outcome {
                Ok(Commit::Done) => {
                    assert!(
                        winners.insert(key.clone(), value).is_none(),
                        "{key} won twice"
                    );
                }
                Ok(Commit::Conflict(on)) => {
                    assert!(key.starts_with("race"), "{key} lost a race it was not in");
                    assert_eq!(on, key);
                }
                Ok(other) => panic!("{key}: {other:?}"),
                Err(e) => {
                    assert_eq!(key, long, "only the long key fails, not {key}: {e}");
                    assert!(matches!(e, StoreError::Failed(_)), "{e}");
                }
            }
        }
        assert_eq!(winners.len(), 40 + 10, "{:?}", winners.keys());
        for (key, value) in &winners {
            assert_eq!(store.get("g", key).await.unwrap().as_ref(), value.as_ref());
        }
        assert_eq!(store.get("g", &long).await.unwrap(), None);
        let groups = store.committer.as_ref().unwrap().groups();
        assert!(
            groups * 2 < u64::try_from(total).unwrap(),
            "{total} batches took {groups} transactions: they were not grouped"
        );
    })
    .await;
}

/// A group's writes and deletes go out one statement per kind, whatever
/// the namespace of each batch: keys of one name in two namespaces stay
/// apart, deletes remove only their own namespace's key, and a batch whose
/// precondition fails writes nothing while the rest of its group commits.
#[tokio::test]
async fn a_group_writes_and_deletes_each_batch_in_its_own_namespace() {
    with_database(|url| async move {
        let store = Arc::new(PostgresStore::connect(&url, 2).await.unwrap());
        for ns in ["a", "b"] {
            for key in ["k0", "k1", "k2", "k3"] {
                let mut batch = WriteBatch::default();
                batch
                    .writes
                    .insert(key.into(), Some(format!("{ns}-old").into_bytes()));
                assert_eq!(store.commit(ns, batch).await.unwrap(), Commit::Done);
            }
        }
        let mut batches = Vec::new();
        for round in 0..20 {
            for key in ["k0", "k1", "k2", "k3"] {
                let mut batch = WriteBatch::default();
                let value = match (round, key) {
                    (0, "k1") | (0, "k3") => None,
                    _ => Some(format!("r{round}").into_bytes()),
                };
                batch.writes.insert(format!("{key}-{round}"), value.clone());
                if round == 0 {
                    batch.writes.insert(key.into(), value);
                }
                // k2's batches expect a value it never held: refused.
                if key == "k2" {
                    batch.expects.insert(key.into(), Some(b"never".to_vec()));
                }
                batches.push(("a", batch));
            }
            let mut other = WriteBatch::default();
            other
                .writes
                .insert(format!("k0-{round}"), Some(b"b-side".to_vec()));
            batches.push(("b", other));
        }
        let tasks: Vec<_> = batches
            .into_iter()
            .map(|(ns, batch)| {
                let store = store.clone();
                tokio::spawn(async move { store.commit(ns, batch).await.unwrap() })
            })
            .collect();
        let mut refused = 0;
        for task in tasks {
            match task.await.unwrap() {
                Commit::Done => {}
                Commit::Conflict(key) => {
                    assert_eq!(key, "k2");
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(refused, 20);
        let get = |ns: &'static str, key: String| {
            let store = store.clone();
            async move { store.get(ns, &key).await.unwrap() }
        };
        assert_eq!(get("a", "k0".into()).await, Some(b"r0".to_vec()));
        assert_eq!(get("a", "k1".into()).await, None, "deleted in a");
        assert_eq!(
            get("b", "k1".into()).await,
            Some(b"b-old".to_vec()),
            "kept in b"
        );
        assert_eq!(get("a", "k2".into()).await, Some(b"a-old".to_vec()));
        assert_eq!(get("a", "k3".into()).await, None);
        assert_eq!(get("b", "k3".into()).await, Some(b"b-old".to_vec()));
        for round in 0..20 {
            assert_eq!(
                get("b", format!("k0-{round}")).await,
                Some(b"b-side".to_vec())
            );
            let mine = (round != 0).then(|| format!("r{round}").into_bytes());
            assert_eq!(
                get("a", format!("k0-{round}")).await,
                Some(format!("r{round}").into_bytes())
            );
            assert_eq!(get("a", format!("k1-{round}")).await, mine);
            assert_eq!(
                get("a", format!("k2-{round}")).await,
                None,
                "refused batch wrote"
            );
        }
        let groups = store.committer.as_ref().unwrap().groups();
        assert!(
            groups < 80,
            "100 batches took {groups} transactions: not grouped"
        );
    })
    .await;
}

/// A connection keeps the generic plan of a statement it prepared, so every
/// statement on `kv` must plan as an index lookup even when prepared while
/// the table is empty: a sequential scan chosen then would read the whole
/// table at every use as it grows (see `batch::CHANGED`). Sessions run
/// generic plans only (`SESSION_PLANS`), so these are the plans used.
#[tokio::test]
async fn statements_plan_index_lookups_even_on_an_empty_table() {
    with_database(|url| async move {
        let store = PostgresStore::connect(&url, 1).await.unwrap();
        let conn = store.conn().await.unwrap();
        // The session's default (SESSION_PLANS); set again so that this
        // test holds whatever the URL's options say.
        conn.batch_execute("SET plan_cache_mode = force_generic_plan")
            .await
            .unwrap();
        let mut statements = vec![
            ("changed".to_string(), batch::CHANGED.to_string(), 4),
            ("upsert".into(), batch::UPSERT.into(), 3),
            ("delete".into(), batch::DELETE.into(), 2),
            ("read".into(), batch::READ.into(), 2),
            ("read_many".into(), reads::READ_MANY.into(), 2),
            ("add".into(), ADD.into(), 4),
            ("claim".into(), claim_sql(), 3),
            ("applied".into(), APPLIED.into(), 2),
            ("prune_applied".into(), PRUNE_APPLIED.into(), 1),
        ];
        for after in [false, true] {
            for end in [false, true] {
                for values in [false, true] {
                    let params =
                        3 + usize::from(after) + usize::from(end) + 2 * usize::from(values);
                    let name = format!("scan_{after}_{end}_{values}");
                    statements.push((name, scan_sql(after, end, values), params));
                }
            }
        }
        for (name, sql, params) in &statements {
            let plan = generic_plan(&conn, name, sql, *params).await;
            for table in ["kv", "deliveries", "applied"] {
                let scan = format!("Seq Scan on {table}");
                assert!(!plan.contains(&scan), "{name} scans {table}:\n{plan}");
            }
        }
        // The check that this test can fail: a join, as CHANGED once was.
        let join = "SELECT u.key, kv.value FROM unnest($1::text[], $2::text[]) AS u(ns, key)
                    LEFT JOIN kv ON kv.ns = u.ns AND kv.key = u.key";
        let plan = generic_plan(&conn, "joined", join, 2).await;
        assert!(plan.contains("Seq Scan on kv"), "{plan}");
    })
    .await;
}

/// The plan `conn` gives `sql` (with `params` parameters) once prepared as
/// `name`, as `EXPLAIN` prints it.
async fn generic_plan(
    conn: &deadpool_postgres::Client,
    name: &str,
    sql: &str,
    params: usize,
) -> String {
    conn.batch_execute(&format!("PREPARE {name} AS {sql}"))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let nulls = vec!["NULL"; params].join(", ");
    let rows = conn
        .query(&format!("EXPLAIN EXECUTE {name}({nulls})"), &[])
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let lines: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
    lines.join("\n")
}

/// Concurrent reads share statements, and each caller gets its own key's
/// value from its own namespace: absent keys, empty values, keys asked for
/// many times at once and keys with unusual characters included.
#[tokio::test]
async fn concurrent_reads_share_statements_and_each_gets_its_own_value() {
    with_database(|url| async move {
        let store = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
        let keys: Vec<String> = (0..40)
            .map(|i| match i % 4 {
                0 => format!("k{i}"),
                1 => format!("ключ {i} ✓"),
                2 => format!("k{i}/%_'\\"),
                _ => format!("missing {i}"),
            })
            .collect();
        let value = |ns: &str, key: &str| -> Option<Vec<u8>> {
            match key {
                k if k.starts_with("missing") => None,
                "k0" => Some(Vec::new()),
                k => Some(format!("{ns}={k}").into_bytes()),
            }
        };
        for ns in ["a", "b"] {
            let mut batch = WriteBatch::default();
            for key in &keys {
                if let Some(v) = value(ns, key) {
                    batch.writes.insert(key.clone(), Some(v));
                }
            }
            assert_eq!(store.commit(ns, batch).await, Ok(Commit::Done));
        }
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let store = store.clone();
                // Every fifth read asks for the same key.
                let key = if i % 5 == 0 {
                    keys[1].clone()
                } else {
                    keys[i % keys.len()].clone()
                };
                let ns = if i % 2 == 0 { "a" } else { "b" };
                tokio::spawn(async move { (ns, key.clone(), store.get(ns, &key).await.unwrap()) })
            })
            .collect();
        for task in tasks {
            let (ns, key, got) = task.await.unwrap();
            assert_eq!(got, value(ns, &key), "{ns}/{key}");
        }
        let statements = store.reads.as_ref().unwrap().statements();
        assert!(statements < 200, "400 reads took {statements} statements");
        // Ungrouped (one round trip per operation), the answers are the same.
        let store = PostgresStore::connect(&url, 1)
            .await
            .unwrap()
            .with_max_group(1);
        assert!(store.reads.is_none());
        for key in &keys {
            assert_eq!(store.get("b", key).await.unwrap(), value("b", key), "{key}");
        }
    })
    .await;
}

/// Concurrent increments of one counter share statements, and each caller
/// still gets a value of its own: those of some serial order of the same
/// increments.
#[tokio::test]
async fn concurrent_increments_share_statements_and_get_distinct_values() {
    with_database(|url| async move {
        let store = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let store = store.clone();
                let delta = if i % 3 == 0 { 2 } else { 1 };
                tokio::spawn(
                    async move { (delta, store.increment("c", "n", delta).await.unwrap()) },
                )
            })
            .collect();
        let mut seen = Vec::new();
        for task in tasks {
            seen.push(task.await.unwrap());
        }
        // Sorted by value, each value is the previous one plus its own
        // delta: no two callers were handed overlapping ranges.
        seen.sort_by_key(|&(_, value)| value);
        let mut at = 0;
        for (delta, value) in &seen {
            at += delta;
            assert_eq!(*value, at, "{seen:?}");
        }
        assert_eq!(at, 400);
        assert_eq!(store.increment("c", "n", 0).await.unwrap(), 400);
        let statements = store.counters.as_ref().unwrap().statements();
        assert!(
            statements < 150,
            "300 increments took {statements} statements"
        );
        // Unordered signs still add up.
        let tasks: Vec<_> = (0..100)
            .map(|i| {
                let store = store.clone();
                let delta = if i % 2 == 0 { 5 } else { -3 };
                tokio::spawn(async move { store.increment("c", "m", delta).await.unwrap() })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(store.increment("c", "m", 0).await.unwrap(), 100);
    })
    .await;
}

/// A grouped increment the database refuses is sent again one delta at a
/// time, so each caller gets the answer its own increment would: near the
/// top of the range, those that fit succeed and only the rest overflow;
/// on a key that is not a counter, every one fails and nothing changes.
#[tokio::test]
async fn a_refused_group_of_increments_is_judged_one_at_a_time() {
    with_database(|url| async move {
        let store = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
        store.increment("c", "top", i64::MAX - 10).await.unwrap();
        let mut batch = WriteBatch::default();
        batch.writes.insert("text".into(), Some(b"hello".to_vec()));
        assert_eq!(store.commit("c", batch).await.unwrap(), Commit::Done);
        let spawn = |key: &'static str| {
            let store = store.clone();
            tokio::spawn(async move { store.increment("c", key, 1).await })
        };
        let tops: Vec<_> = (0..30).map(|_| spawn("top")).collect();
        let texts: Vec<_> = (0..30).map(|_| spawn("text")).collect();
        let mut values = Vec::new();
        let mut overflows = 0;
        for task in tops {
            match task.await.unwrap() {
                Ok(value) => values.push(value),
                Err(CounterError::Invalid(why)) => {
                    assert!(why.contains("overflow"), "{why}");
                    overflows += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        values.sort_unstable();
        assert_eq!(values, ((i64::MAX - 9)..=i64::MAX).collect::<Vec<_>>());
        assert_eq!(overflows, 20);
        for task in texts {
            let outcome = task.await.unwrap();
            assert!(
                matches!(&outcome, Err(CounterError::Invalid(why)) if why.contains("not a counter")),
                "{outcome:?}"
            );
        }
        assert_eq!(store.get("c", "text").await.unwrap(), Some(b"hello".to_vec()));
    })
    .await;
}

#[tokio::test]
async fn a_large_batch_commits_whole() {
    with_database(|url| async move {
        let store = PostgresStore::connect(&url, 2).await.unwrap();
        let many: BTreeMap<String, Option<Vec<u8>>> = (0..10_000)
            .map(|i| (format!("k{i:05}"), Some(i.to_string().into_bytes())))
            .collect();
        let batch = WriteBatch {
            writes: many.clone(),
            ..WriteBatch::default()
        };
        assert_eq!(store.commit("ns", batch).await.unwrap(), Commit::Done);
        // Larger than one upsert statement carries.
        let big: BTreeMap<String, Option<Vec<u8>>> = (0..20)
            .map(|i| {
                (
                    format!("big{i:02}"),
                    Some(vec![u8::try_from(i).unwrap(); 1024 * 1024]),
                )
            })
            .collect();
        let batch = WriteBatch {
            writes: big,
            ..WriteBatch::default()
        };
        assert_eq!(store.commit("ns", batch).await.unwrap(), Commit::Done);
        assert_eq!(
            store.get("ns", "big19").await.unwrap().unwrap(),
            vec![19; 1024 * 1024]
        );
        let conn = store.pool().get().await.unwrap();
        let count: i64 = conn
            .query_one("SELECT count(*) FROM kv WHERE ns = 'ns'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(count, 10_020);
        let batch = WriteBatch {
            writes: many.into_keys().map(|k| (k, None)).collect(),
            ..WriteBatch::default()
        };
        assert_eq!(store.commit("ns", batch).await.unwrap(), Commit::Done);
        assert_eq!(store.get("ns", "k09999").await.unwrap(), None);
        assert_eq!(
            store.get("ns", "big00").await.unwrap().unwrap().len(),
            1024 * 1024
        );
    })
    .await;
}

#[tokio::test]
async fn a_dedicated_connection_receives_notifications() {
    with_database(|url| async move {
        let store = PostgresStore::connect(&url, 2).await.unwrap();
        let (client, mut connection) = store.dedicated().await.unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                if let Ok(tokio_postgres::AsyncMessage::Notification(n)) = message {
                    let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
                }
            }
        });
        client.batch_execute("LISTEN berth_swap").await.unwrap();
        let conn = store.pool().get().await.unwrap();
        conn.batch_execute("NOTIFY berth_swap, 'users'")
            .await
            .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap();
        assert_eq!(got, Some(("berth_swap".into(), "users".into())));
    })
    .await;
}

/// A batch for namespace `r` applying `event` and writing `key`.
fn applying(event: &str, key: &str) -> WriteBatch {
    WriteBatch {
        writes: BTreeMap::from([(key.to_string(), Some(b"applied".to_vec()))]),
        applies: Some(event.to_string()),
        ..WriteBatch::default()
    }
}

#[tokio::test]
async fn replicas_apply_an_event_once() {
    with_database(|url| async move {
        let first = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
        let second = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
        let apply = |store: &Arc<PostgresStore>, event: String, key: String| {
            let store = store.clone();
            tokio::spawn(async move { store.commit("r", applying(&event, &key)).await.unwrap() })
        };
        for round in 0..20 {
            let event = format!("e{round}");
            let (a, b) = (
                apply(&first, event.clone(), format!("{round}a")),
                apply(&second, event.clone(), format!("{round}b")),
            );
            let mut outcomes = vec![a.await.unwrap(), b.await.unwrap()];
            outcomes.sort_by_key(|o| format!("{o:?}"));
            assert_eq!(outcomes, [Commit::AlreadyDelivered, Commit::Done]);
            let written = [
                first.get("r", &format!("{round}a")).await.unwrap(),
                second.get("r", &format!("{round}b")).await.unwrap(),
            ];
            assert_eq!(written.iter().flatten().count(), 1, "round {round}");
            assert!(second.applied("r", &event).await.unwrap());
        }
    })
    .await;
}

/// While another transaction has recorded the event and not yet ended, a
/// commit applying it waits; then it is refused if that transaction
/// committed, and done if it rolled back. A check that read the table
/// without waiting would pass both and apply the event twice.
#[tokio::test]
async fn a_commit_waits_for_another_recording_the_same_event() {
    with_database(|url| async move {
        let store = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
        let holder = store.pool().get().await.unwrap();
        let watcher = store.pool().get().await.unwrap();
        for (end, expected) in [
            ("COMMIT", Commit::AlreadyDelivered),
            ("ROLLBACK", Commit::Done),
        ] {
            let event = format!("held-{end}");
            holder.batch_execute("BEGIN").await.unwrap();
            holder
                .execute(
                    "INSERT INTO applied (ns, event_id, at) VALUES ('r', $1, 0)",
                    &[&event],
                )
                .await
                .unwrap();
            let committing = {
                let (store, event) = (store.clone(), event.clone());
                tokio::spawn(async move { store.commit("r", applying(&event, end)).await })
            };
            // Wait until the commit is seen waiting on the holder's
            // transaction, so the test proves it waited.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let waiting: i64 = watcher
                    .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted", &[])
                    .await
                    .unwrap()
                    .get(0);
                if waiting > 0 {
                    break;
                }
                assert!(
                    !committing.is_finished(),
                    "the commit finished without waiting for the other transaction"
                );
                assert!(Instant::now() < deadline, "the commit never waited");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            holder.batch_execute(end).await.unwrap();
            assert_eq!(committing.await.unwrap().unwrap(), expected, "{end}");
            let written = store.get("r", end).await.unwrap().is_some();
            assert_eq!(written, expected == Commit::Done, "{end}");
            assert!(store.applied("r", &event).await.unwrap(), "{end}");
        }
    })
    .await;
}

#[tokio::test]
async fn a_database_at_version_2_gains_the_applied_records() {
    with_database(|url| async move {
        let store = PostgresStore::connect(&url, 1).await.unwrap();
        store
            .pool()
            .get()
            .await
            .unwrap()
            .batch_execute("DROP TABLE applied; DELETE FROM berth_schema WHERE version = 3")
            .await
            .unwrap();
        store.close();
        let store = PostgresStore::connect(&url, 1).await.unwrap();
        assert_eq!(
            store.commit("r", applying("e", "k")).await.unwrap(),
            Commit::Done
        );
        assert!(store.applied("r", "e").await.unwrap());
        assert_eq!(
            store.commit("r", applying("e", "k2")).await.unwrap(),
            Commit::AlreadyDelivered
        );
    })
    .await;
}

#[tokio::test]
async fn an_event_id_with_nul_is_refused_and_never_applied() {
    with_database(|url| async move {
        let store = PostgresStore::connect(&url, 1).await.unwrap();
        let e = store.commit("r", applying("a\0b", "k")).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the store failed: the event id \"a\\0b\" contains U+0000, which PostgreSQL cannot store"
        );
        assert!(!store.applied("r", "a\0b").await.unwrap());
        assert_eq!(store.get("r", "k").await.unwrap(), None);
    })
    .await;
}
