//! Lists cost a page, not the store: `GET /users` and `GET /orders` page
//! with `limit` and a cursor, a page and a request are capped in the bytes
//! they pull from the store, and a client pays memory per page.

use crate::support::{Berth, data_dir, manifest_beside_users, next_link};
use berth::store::{SqliteStore, Store, WriteBatch};
use std::time::Duration;

/// Follow `Link: <...>; rel="next"` from `first` to the last page, checking
/// each page, and return every record's id in the order seen.
fn walk(berth: &Berth, first: &str) -> (Vec<u64>, usize) {
    let (mut ids, mut pages) = (Vec::new(), 0);
    let mut next = Some(first.to_string());
    while let Some(path) = next {
        let reply = berth.get(&path);
        assert_eq!(
            reply.status,
            200,
            "{path}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        pages += 1;
        assert!(pages < 10_000, "paging does not end");
        let page = reply.json();
        ids.extend(
            page.as_array()
                .unwrap()
                .iter()
                .map(|r| r["id"].as_u64().unwrap()),
        );
        next = next_link(&reply);
    }
    (ids, pages)
}

/// The server's peak resident memory since the last [`reset_peak`], in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib / 1024
}

/// Start measuring the peak from the current resident size.
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("resetting VmHWM");
}

#[test]
fn big_users_are_listed_a_page_at_a_time_in_bounded_memory() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    // Twenty users whose names are about 1 MB each: 20 MB in the store.
    let name = "n".repeat(1_000_000);
    for _ in 0..20 {
        let reply = berth.post("/users", &format!(r#"{{"name":"{name}"}}"#));
        assert_eq!(reply.status, 201, "{}", reply.error());
    }
    let pid = berth.child.id();
    reset_peak(pid);
    let before = peak_rss_mib(pid);
    // Sixteen clients list at once, three times over.
    let started = std::time::Instant::now();
    let answers: Vec<_> = std::thread::scope(|s| {
        let clients: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    (0..3)
                        .map(|_| {
                            let reply = berth.get("/users");
                            (reply.status, reply.body.len(), next_link(&reply))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert!(started.elapsed() < Duration::from_secs(60));
    let peak = peak_rss_mib(pid);
    let failed = answers
        .iter()
        .filter(|(status, _, _)| *status != 200)
        .count();
    eprintln!(
        "peak RSS while listing: {peak} MiB (from {before} MiB); {failed} of {} lists failed",
        answers.len()
    );
    for (status, len, next) in answers {
        assert_eq!(status, 200, "a GET /users failed");
        // John and Jane, then one 1 MB user: the page stopped at 1 MiB.
        assert!(len < 2_100_000, "a page of {len} bytes");
        assert!(next.is_some(), "the first page links to the next");
    }
    assert!(
        peak < before + 160,
        "16 concurrent lists took the server from {before} to {peak} MiB"
    );
    // Paging through gives every user exactly once.
    let (ids, pages) = walk(&berth, "/users");
    assert_eq!(ids, (1..=22).collect::<Vec<_>>());
    assert!(pages >= 11, "{pages} pages for 20 MB of users");
}

#[test]
fn paging_visits_every_user_exactly_once() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    for i in 0..40 {
        assert_eq!(
            berth
                .post("/users", &format!(r#"{{"name":"u{i}"}}"#))
                .status,
            201
        );
    }
    for gone in [1, 5, 17, 42] {
        assert_eq!(berth.delete(&format!("/users/{gone}")).status, 204);
    }
    let expected: Vec<u64> = (1..=42).filter(|i| ![1, 5, 17, 42].contains(i)).collect();
    let (ids, pages) = walk(&berth, "/users?limit=7");
    assert_eq!(ids, expected);
    assert_eq!(pages, expected.len().div_ceil(7));
    // The default page holds them all; a cursor starts past its id.
    let all = berth.get("/users");
    assert_eq!(all.json().as_array().unwrap().len(), expected.len());
    assert_eq!(all.header("link"), None);
    let tail = berth.get("/users?after=40&limit=1");
    assert_eq!(tail.json(), serde_json::json!([{"id": 41, "name": "u38"}]));
    assert_eq!(tail.header("link"), None);
    for bad in [
        "limit=0",
        "limit=1001",
        "limit=",
        "limit=x",
        "limit=-1",
        "after=-1",
        "after=1.5",
        "after=9223372036854775808",
    ] {
        berth
            .get(&format!("/users?{bad}"))
            .assert_error(400, "invalid query parameter");
    }
}

/// 20,000 orders written straight into the store, as a long-lived service
/// would have them.
fn seed_orders(dir: &std::path::Path, count: u64) {
    let store = SqliteStore::open(dir).unwrap();
    let mut batch = WriteBatch::default();
    for id in 1..=count {
        let order = format!(
            r#"{{"id":{id},"user_id":{},"status":"pending"}}"#,
            1 + id % 1000
        );
        batch
            .writes
            .insert(format!("order/{id:020}"), Some(order.into_bytes()));
    }
    batch
        .writes
        .insert("meta/order/seeded".into(), Some(b"1".to_vec()));
    batch.writes.insert(
        "meta/order/next-id".into(),
        Some(count.to_string().into_bytes()),
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(store.commit("orders", batch)).unwrap();
    store.close();
}

/// How many `scan` calls the components have made, from `/metrics`.
fn scans(berth: &Berth) -> u64 {
    let text = String::from_utf8(berth.get("/metrics").body).unwrap();
    text.lines()
        .filter(|l| l.starts_with("berth_kv_operations_total{") && l.contains(r#"op="scan""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[test]
fn a_page_of_orders_costs_a_page_not_the_store() {
    let dir = data_dir();
    seed_orders(dir.path(), 20_000);
    let berth = Berth::start(dir.path());
    let before = scans(&berth);
    for _ in 0..10 {
        let reply = berth.get("/orders");
        assert_eq!(reply.status, 200);
        let page = reply.json();
        let ids: Vec<u64> = page
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids.len(), 100, "a page of {} orders", ids.len());
        assert_eq!(ids, (1..=100).collect::<Vec<_>>());
        assert_eq!(
            next_link(&reply).as_deref(),
            Some("/orders?limit=100&after=100")
        );
    }
    // Reading everything takes 40 scans of 500; a page takes one.
    let per_request = (scans(&berth) - before) as f64 / 10.0;
    assert!(per_request <= 2.0, "{per_request} scans per GET /orders");
    let last = berth.get("/orders?after=19990&limit=1000");
    assert_eq!(last.json().as_array().unwrap().len(), 10);
    assert_eq!(last.header("link"), None);
    // A filter looks at a bounded stretch per page and links on; following
    // the links finds every order of the user, once.
    let (ids, pages) = walk(&berth, "/orders?user_id=8&limit=1000");
    assert_eq!(ids, (7..=20_000).step_by(1000).collect::<Vec<_>>());
    assert!(pages >= 4, "{pages} pages");
    berth
        .get("/orders?user_id=9223372036854775808")
        .assert_error(400, "invalid query parameter `user_id");
}

#[test]
fn one_request_reads_at_most_32_mib_in_pages_of_1_mib() {
    let dir = data_dir();
    manifest_beside_users(dir.path(), "misbehave", "max_memory_mb = 64\n");
    let berth = Berth::start_with(
        dir.path(),
        &[
            "--manifest",
            dir.path().join("berth.toml").to_str().unwrap(),
        ],
    );
    assert_eq!(berth.get("/misbehave/fill").status, 200);
    let reply = berth.get("/misbehave/read-everything");
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let report = reply.json();
    let largest = report["largest_page"].as_u64().unwrap();
    assert!(largest <= 1024 * 1024, "a scan page of {largest} bytes");
    let read = report["read"].as_u64().unwrap();
    assert!(read <= 33 * 1024 * 1024, "one request read {read} bytes");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("a request may read at most 33554432 bytes"),
        "{report}"
    );
}
