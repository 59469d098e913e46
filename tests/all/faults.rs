//! A misbehaving component gets its 5xx and nothing else is disturbed.

use crate::support::{Berth, data_dir, manifest_beside_users};
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
