//! Instance reuse (`reuse = N`): the `counter` test guest counts requests in
//! a global, so its answer tells a reused instance (the count goes on) from
//! a fresh one (it starts at 1). Reuse keeps state only when asked, and
//! never weakens the deadline, the memory cap, the instance pool or hot swap.

use crate::support::{Berth, Reply, data_dir, eventually, request_at, test_wasm, write_file};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "reuse-test-token";

/// Serve `manifest` (TOML) from a fresh data directory, with `args` added.
fn serve(dir: &Path, manifest: &str, args: &[&str]) -> Berth {
    let path = write_file(dir, "berth.toml", manifest);
    let mut all = vec!["--manifest", path.to_str().unwrap()];
    all.extend_from_slice(args);
    Berth::start_with(&dir.join("data"), &all)
}

/// A `[components.NAME]` table of the counter guest on `/NAME`, with `extra`.
fn counter(name: &str, extra: &str) -> String {
    format!(
        "[components.{name}]\nwasm = {:?}\nroutes = [\"/{name}\"]\n{extra}\n",
        test_wasm("counter")
    )
}

/// The request count the instance that answered `path` had reached.
#[track_caller]
fn count(berth: &Berth, path: &str) -> u64 {
    let reply = berth.get(path);
    assert_eq!(reply.status, 200, "{path}: {}", body(&reply));
    reply.json()["count"].as_u64().expect("a count")
}

fn body(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// The value of the `/metrics` sample `family{component="NAME"}`, or `None`
/// if there is no such series.
fn sample(addr: SocketAddr, family: &str, component: &str) -> Option<u64> {
    let text = String::from_utf8(request_at(addr, "GET", "/metrics", &[], b"").body).unwrap();
    let prefix = format!("{family}{{component=\"{component}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.parse::<f64>().expect("a number") as u64)
}

#[test]
fn state_survives_between_requests_only_with_reuse_on() {
    let dir = data_dir();
    let manifest = format!(
        "{}{}",
        counter("counter", "reuse = 1000"),
        counter("fresh", "")
    );
    let berth = serve(dir.path(), &manifest, &[]);
    let counts: Vec<u64> = (0..5).map(|_| count(&berth, "/counter")).collect();
    assert_eq!(counts, [1, 2, 3, 4, 5], "one instance serves them in turn");
    let counts: Vec<u64> = (0..5).map(|_| count(&berth, "/fresh")).collect();
    assert_eq!(counts, [1, 1, 1, 1, 1], "without reuse each is fresh");
}

#[test]
fn a_trapped_or_timed_out_instance_is_never_reused() {
    let dir = data_dir();
    let berth = serve(
        dir.path(),
        &counter("counter", "reuse = 1000\ntimeout_ms = 300"),
        &[],
    );
    assert_eq!(count(&berth, "/counter"), 1);
    assert_eq!(count(&berth, "/counter"), 2);
    let reply = berth.get("/counter/panic");
    assert_eq!(reply.status, 500, "{}", body(&reply));
    assert!(reply.error().contains("wasm trap"), "{}", reply.error());
    assert_eq!(count(&berth, "/counter"), 1, "the trapped instance is gone");
    assert_eq!(count(&berth, "/counter"), 2);
    let started = Instant::now();
    let reply = berth.get("/counter/loop");
    assert_eq!(reply.status, 504, "{}", body(&reply));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        count(&berth, "/counter"),
        1,
        "the timed-out instance is gone"
    );
    // The deadline is set for every call, not only an instance's first.
    assert_eq!(berth.get("/counter/loop").status, 504);
    assert_eq!(count(&berth, "/counter"), 1);
}

#[test]
fn an_instance_serves_at_most_reuse_requests() {
    let dir = data_dir();
    let berth = serve(dir.path(), &counter("counter", "reuse = 3"), &[]);
    let counts: Vec<u64> = (0..8).map(|_| count(&berth, "/counter")).collect();
    assert_eq!(counts, [1, 2, 3, 1, 2, 3, 1, 2]);
}

#[test]
fn idle_instances_expire() {
    let dir = data_dir();
    let berth = serve(
        dir.path(),
        &counter("counter", "reuse = 1000\nreuse_idle_ms = 200"),
        &[],
    );
    assert_eq!(count(&berth, "/counter"), 1);
    assert_eq!(count(&berth, "/counter"), 2);
    let idle = |n| sample(berth.addr, "berth_reuse_idle_instances", "counter") == Some(n);
    assert!(idle(1), "one instance waits");
    // Dropped by the reaper (200 ms idle, checked every 50 ms), waited for
    // rather than slept on.
    let dropped = eventually(Duration::from_secs(5), || idle(0).then_some(()));
    assert!(dropped.is_some(), "the idle instance was never dropped");
    assert_eq!(count(&berth, "/counter"), 1);
}

#[test]
fn the_memory_cap_holds_across_the_requests_of_an_instance() {
    let dir = data_dir();
    let manifest = format!(
        "{}{}",
        counter("counter", "reuse = 1000\nmax_memory_mb = 12"),
        counter("fresh", "max_memory_mb = 12")
    );
    let berth = serve(dir.path(), &manifest, &[]);
    // Fresh instances start empty each time: 5 MiB always fits.
    for _ in 0..4 {
        assert_eq!(berth.get("/fresh/hoard?mb=5").status, 200);
    }
    // A reused one keeps what it hoarded, so the third 5 MiB breaks the cap.
    let statuses: Vec<u16> = (0..3)
        .map(|_| berth.get("/counter/hoard?mb=5").status)
        .collect();
    assert_eq!(statuses, [200, 200, 500]);
    assert_eq!(count(&berth, "/counter"), 1, "the trapped instance is gone");
}

#[test]
fn hits_and_misses_are_counted_per_component() {
    let dir = data_dir();
    let berth = serve(dir.path(), &counter("counter", "reuse = 1000"), &[]);
    // The series exist at zero before the first request.
    for family in ["berth_reuse_hits_total", "berth_reuse_misses_total"] {
        assert_eq!(sample(berth.addr, family, "counter"), Some(0), "{family}");
    }
    for _ in 0..5 {
        count(&berth, "/counter");
    }
    assert_eq!(
        sample(berth.addr, "berth_reuse_misses_total", "counter"),
        Some(1)
    );
    assert_eq!(
        sample(berth.addr, "berth_reuse_hits_total", "counter"),
        Some(4)
    );
    assert_eq!(
        sample(berth.addr, "berth_reuse_idle_instances", "counter"),
        Some(1)
    );
}

#[test]
fn idle_instances_give_way_when_the_instance_pool_is_full() {
    let dir = data_dir();
    // An instance pool of two: one request at a time, no calls deeper.
    let manifest = format!(
        "{}{}[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n",
        counter("counter", "reuse = 1000"),
        counter("tally", "reuse = 1000"),
    );
    let berth = serve(
        dir.path(),
        &manifest,
        &["--max-in-flight", "1", "--max-call-depth", "0"],
    );
    // Each reusing component keeps one instance: the pool is full.
    assert_eq!(count(&berth, "/counter"), 1);
    assert_eq!(count(&berth, "/tally"), 1);
    assert_eq!(count(&berth, "/counter"), 2);
    // A fresh instance for users still gets a slot, not a 503.
    let reply = berth.get("/users/1");
    assert_eq!(reply.status, 200, "{}", body(&reply));
    assert_eq!(
        sample(berth.addr, "berth_instance_pool_full_total", "users"),
        Some(0)
    );
    // The idle ones were dropped to make room.
    assert_eq!(count(&berth, "/counter"), 1);
}

/// `swap_v1` or `swap_v2`, the hot-swap test guests.
fn swap_guest(name: &str) -> Vec<u8> {
    std::fs::read(test_wasm(name)).unwrap()
}

#[test]
fn hot_swaps_under_load_with_reuse_fail_no_request_and_retire_old_instances() {
    let dir = data_dir();
    let manifest = format!(
        "[components.swapper]\nwasm = {:?}\nroutes = [\"/swap\"]\nreuse = 1000\nmax_concurrency = 8\n",
        test_wasm("swap_v1")
    );
    let token = write_file(dir.path(), "token", TOKEN);
    let mut berth = serve(
        dir.path(),
        &manifest,
        &[
            "--admin",
            "127.0.0.1:0",
            "--admin-token-file",
            token.to_str().unwrap(),
        ],
    );
    let admin = berth.admin_addr();
    let auth = format!("Bearer {TOKEN}");
    let admin_call = |method: &str, path: &str, wasm: &[u8]| {
        let reply = request_at(admin, method, path, &[("authorization", &auth)], wasm);
        assert_eq!(reply.status, 200, "{method} {path}: {}", body(&reply));
    };
    let addr = berth.addr;
    let answers = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    // Bounded whatever happens.
    let limit = Instant::now() + Duration::from_secs(60);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let (answers, failures, stop) = (answers.clone(), failures.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
                    let reply = request_at(addr, "GET", "/swap", &[], b"");
                    if reply.status == 200 && matches!(reply.header("x-version"), Some("v1" | "v2"))
                    {
                        answers.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.lock().unwrap().push(body(&reply));
                    }
                }
            })
        })
        .collect();
    let (v1, v2) = (swap_guest("swap_v1"), swap_guest("swap_v2"));
    for round in 0..8 {
        if round % 4 == 3 {
            admin_call("POST", "/components/swapper/rollback", b"");
        } else {
            admin_call(
                "PUT",
                "/components/swapper",
                if round % 2 == 0 { &v2 } else { &v1 },
            );
        }
        let before = answers.load(Ordering::Relaxed);
        let wait = Instant::now();
        while answers.load(Ordering::Relaxed) < before + 50
            && wait.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let answered = answers.load(Ordering::Relaxed);
    eprintln!(
        "8 swaps under load with reuse: {answered} answers, {} failures",
        failures.len()
    );
    assert!(failures.is_empty(), "first failure: {:?}", failures.first());
    assert!(answered >= 400, "{answered} answers");
    let hits = sample(addr, "berth_reuse_hits_total", "swapper").unwrap();
    assert!(hits > answered / 2, "{hits} hits of {answered}");
    // The live version keeps its idle instances; a swap drops them at once,
    // though the replaced version stays loaded for rollback.
    let idle = || sample(addr, "berth_reuse_idle_instances", "swapper").unwrap();
    assert!((1..=8).contains(&idle()), "{} idle", idle());
    admin_call("PUT", "/components/swapper", &v2);
    admin_call("PUT", "/components/swapper", &v1);
    assert_eq!(idle(), 0);
    let reply = berth.get("/swap");
    assert_eq!(reply.header("x-version"), Some("v1"));
    assert_eq!(idle(), 1);
    admin_call("POST", "/components/swapper/rollback", b"");
    assert_eq!(idle(), 0, "a rollback retires the version rolled back from");
    assert_eq!(berth.get("/swap").header("x-version"), Some("v2"));
    assert_eq!(idle(), 1, "the version rolled back to is reused again");
}
