//! A misbehaving component gets its 5xx and nothing else is disturbed.

use crate::support::{Berth, data_dir, manifest_beside_users, test_wasm, write_file};
use std::time::{Duration, Instant};

/// Serve users plus the test-only `misbehave` component with tight limits.
fn start(dir: &std::path::Path) -> Berth {
    let manifest =
        manifest_beside_users(dir, "misbehave", "timeout_ms = 2000\nmax_memory_mb = 256\n");
    Berth::start_with(
        &dir.join("data"),
        &["--manifest", manifest.to_str().unwrap()],
    )
}

#[test]
fn a_panic_is_a_500_and_the_host_keeps_serving() {
    let dir = data_dir();
    let berth = start(dir.path());
    berth
        .get("/misbehave/panic")
        .assert_error(500, "component `misbehave` failed: wasm trap");
    assert_eq!(berth.get("/misbehave/ok").status, 200);
    assert_eq!(berth.get("/users/1").status, 200);
}

#[test]
fn an_endless_loop_is_a_504_at_its_deadline() {
    let dir = data_dir();
    let berth = start(dir.path());
    let started = Instant::now();
    berth
        .get("/misbehave/loop")
        .assert_error(504, "component `misbehave` did not answer within 2000 ms");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2000) && took < Duration::from_secs(8),
        "took {took:?}"
    );
    assert_eq!(berth.get("/users/1").status, 200);
}

#[test]
fn a_kv_hammer_is_stopped_at_its_deadline() {
    let dir = data_dir();
    let berth = start(dir.path());
    berth
        .get("/misbehave/hammer")
        .assert_error(504, "did not answer within 2000 ms");
}

#[test]
fn memory_past_the_cap_is_a_500() {
    let dir = data_dir();
    let berth = start(dir.path());
    berth
        .get("/misbehave/memory")
        .assert_error(500, "component `misbehave` failed");
}

#[test]
fn a_stack_overflow_is_a_500() {
    let dir = data_dir();
    let berth = start(dir.path());
    berth
        .get("/misbehave/recurse")
        .assert_error(500, "component `misbehave` failed: wasm trap");
}

#[test]
fn an_oversized_response_is_a_500() {
    let dir = data_dir();
    let berth = start(dir.path());
    berth
        .get("/misbehave/big")
        .assert_error(500, "returned a 104857600 byte body; the limit is 16777216");
}

/// Every hostile behaviour in turn, each while clients keep reading users
/// and orders: each hostile request gets its 5xx within its deadline, and
/// the normal traffic sees no error and no long stall.
#[test]
fn normal_traffic_is_unharmed_while_hostile_components_run() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = data_dir();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        &format!(
            "{}\n[components.misbehave]\nwasm = {:?}\nroutes = [\"/misbehave\"]\n\
             timeout_ms = 2000\nmax_memory_mb = 256\n",
            berth::manifest::DEFAULT_MANIFEST,
            test_wasm("misbehave")
        ),
    );
    let berth = Berth::start_with(
        &dir.path().join("data"),
        &["--manifest", manifest.to_str().unwrap()],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = ["/users/1", "/orders/1", "/users/2", "/orders"]
        .into_iter()
        .map(|path| {
            let (addr, stop) = (berth.addr, stop.clone());
            std::thread::spawn(move || {
                let (mut served, mut slowest, mut failures) = (0u32, Duration::ZERO, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let reply = crate::support::request_at(addr, "GET", path, &[], b"");
                    slowest = slowest.max(started.elapsed());
                    served += 1;
                    if reply.status != 200 {
                        failures.push(reply.status);
                    }
                }
                (served, slowest, failures)
            })
        })
        .collect();
    let hostile = [
        ("loop", 504),
        ("memory", 500),
        ("recurse", 500),
        ("panic", 500),
        ("big", 500),
        ("hammer", 504),
    ];
    for (what, status) in hostile {
        let started = Instant::now();
        let reply = berth.get(&format!("/misbehave/{what}"));
        let took = started.elapsed();
        assert_eq!(reply.status, status, "/misbehave/{what}: {}", reply.error());
        // The deadline is 2 s; allow as much again for a loaded test machine.
        assert!(
            took < Duration::from_secs(4),
            "/misbehave/{what} took {took:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let (served, slowest, failures) = client.join().unwrap();
        assert!(
            failures.is_empty(),
            "{} normal requests failed, the first with {:?}",
            failures.len(),
            failures.first()
        );
        assert!(served > 0);
        assert!(
            slowest < Duration::from_secs(2),
            "a normal request waited {slowest:?}"
        );
    }
}
