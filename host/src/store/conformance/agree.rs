//! One mixed workload on every backend, whose answers must agree line by
//! line.

use super::*;

/// The same sequence of operations on every backend gives the same
/// answers, operation by operation.
#[tokio::test]
async fn backends_agree_on_a_mixed_workload() {
    let memory = transcript(Arc::new(MemoryStore::new())).await;
    // The workload reaches the outcomes it is there to compare.
    for outcome in [
        "Conflict",
        "AlreadyDelivered",
        "completed true",
        "backlog 1",
    ] {
        assert!(
            memory.iter().any(|line| line.contains(outcome)),
            "no {outcome:?} in {memory:#?}"
        );
    }
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
                if next(4) == 0 {
                    batch.applies = Some(format!("a{}", next(6)));
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
                    match next(3) {
                        0 => {
                            let completed = store.complete(delivery.id).await.unwrap();
                            line.push_str(&format!(" completed {completed}"));
                        }
                        failed => {
                            let retry = if failed == 1 {
                                Retry::DeadLetter
                            } else {
                                Retry::At(0)
                            };
                            store.fail_delivery(delivery.id, "no", retry).await.unwrap();
                        }
                    }
                }
                line.push_str(&format!(" backlog {}", store.backlog().await.unwrap()));
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
    let mut applied = Vec::new();
    for n in 0..6 {
        let event_id = format!("a{n}");
        applied.push(store.applied(NS, &event_id).await.unwrap());
    }
    lines.push(format!("applied {applied:?}"));
    lines
}
