//! The key-value properties: reads, writes, scans, preconditions and
//! counters, alone and under concurrency.

use super::*;

pub(super) async fn get_set_delete<B: Store + Outbox>(store: Arc<B>) {
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

pub(super) async fn namespaces_are_isolated<B: Store + Outbox>(store: Arc<B>) {
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

pub(super) async fn scan_pages_by_limit_and_after<B: Store + Outbox>(store: Arc<B>) {
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

pub(super) async fn scan_keeps_to_the_prefix<B: Store + Outbox>(store: Arc<B>) {
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

pub(super) async fn scan_pages_by_bytes<B: Store + Outbox>(store: Arc<B>) {
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

pub(super) async fn unusual_keys_sort_as_bytes<B: Store + Outbox>(store: Arc<B>) {
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

pub(super) async fn preconditions_guard_the_batch<B: Store + Outbox>(store: Arc<B>) {
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

pub(super) async fn a_refused_batch_writes_nothing<B: Store + Outbox>(store: Arc<B>) {
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
        applies: Some("e0".into()),
    };
    let outcome = store.commit(NS, batch).await.unwrap();
    assert_eq!(outcome, Commit::Conflict("guard".into()));
    assert_eq!(get(&*store, "keep").await.as_deref(), Some(&b"1"[..]));
    assert_eq!(get(&*store, "new").await, None);
    assert!(store.claim_due(i64::MAX, 10).await.unwrap().is_empty());
    assert!(!store.applied(NS, "e0").await.unwrap());
}

pub(super) async fn concurrent_increments_are_distinct<B: Store + Outbox>(store: Arc<B>) {
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

pub(super) async fn counters_refuse_what_is_not_a_counter<B: Store + Outbox>(store: Arc<B>) {
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

pub(super) async fn racing_preconditions_let_one_win<B: Store + Outbox>(store: Arc<B>) {
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

pub(super) async fn read_modify_write_loses_no_update<B: Store + Outbox>(store: Arc<B>) {
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
