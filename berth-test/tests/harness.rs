//! The harness itself: traps and endless loops surface as errors, stores
//! are isolated, logs are captured, seeding and inspection work.

use berth_test::{Error, TestComponent};
use std::time::{Duration, Instant};

#[test]
fn a_panic_is_an_error_with_the_message_and_backtrace() {
    let component = TestComponent::workspace("misbehave").unwrap();
    let err = component.get("/misbehave/panic").send().unwrap_err();
    let Error::Trap { reason, details } = &err else {
        panic!("expected a trap, got {err:?}");
    };
    assert!(reason.contains("wasm trap"), "reason: {reason}");
    assert!(
        details.contains("boom: this component always panics"),
        "details: {details}"
    );
    assert!(details.contains("wasm backtrace"), "details: {details}");
    // Display carries both, so `.unwrap()` in a test shows everything.
    assert!(err.to_string().contains("boom"), "{err}");
}

#[test]
fn an_endless_loop_fails_after_the_deadline() {
    let timeout = Duration::from_millis(300);
    let component = TestComponent::workspace("misbehave")
        .unwrap()
        .with_timeout(timeout)
        .unwrap();
    let started = Instant::now();
    let err = component.get("/misbehave/loop").send().unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, Error::Timeout(t) if t == timeout), "{err:?}");
    assert!(took >= timeout, "stopped early, after {took:?}");
    assert!(
        took < timeout + Duration::from_secs(5),
        "stopped late, after {took:?}"
    );
}

#[test]
fn the_component_keeps_working_after_a_trap() {
    let component = TestComponent::workspace("misbehave").unwrap();
    assert!(component.get("/misbehave/panic").send().is_err());
    let ok = component.get("/misbehave/ok").send().unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.json(), "ok");
}

#[test]
fn log_lines_are_captured() {
    let component = TestComponent::workspace("misbehave").unwrap();
    component.get("/misbehave/ok").send().unwrap();
    let logs = component.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].message, "all is well");
    assert_eq!(
        logs[0].level,
        berth::bindings::berth::service::log::Level::Info
    );
}

#[test]
fn each_component_gets_a_fresh_store() {
    let first = TestComponent::builtin("users").unwrap();
    first
        .post("/users")
        .json(&serde_json::json!({"name": "Ann"}))
        .send()
        .unwrap();
    assert_eq!(
        first
            .get("/users")
            .send()
            .unwrap()
            .json()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let second = TestComponent::builtin("users").unwrap();
    assert_eq!(
        second
            .get("/users")
            .send()
            .unwrap()
            .json()
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn seeded_keys_are_visible_to_the_component_and_writes_to_the_test() {
    let users = TestComponent::builtin("users").unwrap();
    users.kv_set("meta/user/seeded", "1");
    users.kv_set_json(
        "user/00000000000000000007",
        &serde_json::json!({"id": 7, "name": "Seven"}),
    );
    let reply = users.get("/users").send().unwrap();
    assert_eq!(
        reply.json(),
        serde_json::json!([{"id": 7, "name": "Seven"}])
    );
    users.delete("/users/7").send().unwrap();
    assert_eq!(users.kv_get("user/00000000000000000007"), None);
    assert_eq!(users.kv_keys(), vec!["meta/user/seeded"]);
}

#[test]
fn unknown_builtin_is_an_error() {
    let err = TestComponent::builtin("payments")
        .err()
        .expect("no such built-in");
    assert_eq!(
        err.to_string(),
        "no built-in component `payments`; built-ins are: users, orders"
    );
}

#[test]
fn a_wasi_http_component_is_tested_the_same_way() {
    let component = TestComponent::workspace("http_hello").unwrap();
    let reply = component.get("/hi?there=1").send().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "hello from wasi:http");
    assert_eq!(reply.header("x-seen-path"), Some("/hi?there=1"));
    let echoed = component
        .request("POST", "/echo")
        .body(b"round trip".to_vec())
        .send()
        .unwrap();
    assert_eq!(echoed.text(), "round trip");
    let err = component.get("/trap").send().unwrap_err();
    let Error::Trap { details, .. } = &err else {
        panic!("expected a trap, got {err:?}");
    };
    assert!(details.contains("asked to trap"), "details: {details}");
}

#[test]
fn with_reuse_keeps_globals_for_n_requests_but_not_past_a_trap() {
    let counter = TestComponent::workspace("counter")
        .unwrap()
        .with_reuse(3)
        .unwrap();
    assert_eq!(counter.reuse(), Some(3));
    let count = || counter.get("/counter").send().unwrap().json()["count"].clone();
    let counts: Vec<_> = (0..4).map(|_| count()).collect();
    assert_eq!(counts, [1, 2, 3, 1]);
    assert!(counter.get("/counter/panic").send().is_err());
    assert_eq!(count(), 1, "a trapped instance is never reused");

    let fresh = TestComponent::workspace("counter").unwrap();
    if fresh.reuse().is_none() {
        let count = || fresh.get("/counter").send().unwrap().json()["count"].clone();
        assert_eq!([count(), count()], [1, 1]);
    }
}
