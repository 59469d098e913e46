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

/// Under a manifest, a component runs with the grants it will be served
/// with: a missing `calls` or `publishes` grant fails as it does when
/// served, an event on a topic it does not subscribe to is refused, and a
/// component with `subscribes` but no event handler does not load.
#[test]
fn a_manifest_s_grants_apply_as_when_served() {
    let dir = std::env::temp_dir().join(format!("berth-test-grants-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let bare = manifest(
        "bare.toml",
        "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n\n\
         [components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/orders\"]\n",
    );
    let granted = manifest(
        "granted.toml",
        "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\npublishes = [\"user.deleted\"]\n\n\
         [components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/orders\"]\ncalls = [\"users\"]\nsubscribes = [\"user.deleted\"]\n",
    );

    // Without `publishes`, a delete is refused its event, in one readable line.
    let users = TestComponent::builtin("users")
        .unwrap()
        .with_manifest(&bare)
        .unwrap();
    let reply = users.delete("/users/1").send().unwrap();
    assert_eq!(reply.status, 500);
    let error = reply.json()["error"].as_str().unwrap().to_string();
    assert_eq!(
        error,
        "could not publish user.deleted: component `users` may not publish on `user.deleted`; add it to `publishes` in the manifest"
    );
    let users = TestComponent::builtin("users")
        .unwrap()
        .with_manifest(&granted)
        .unwrap();
    assert_eq!(users.delete("/users/1").send().unwrap().status, 204);
    assert_eq!(users.published().len(), 1);

    // Orders under `manifest`, with users stubbed, creating an order.
    let order_under = |manifest: &std::path::Path| {
        let orders = TestComponent::builtin("orders")
            .unwrap()
            .with_manifest(manifest)
            .unwrap();
        orders.stub_service("users", |_| {
            berth_test::StubResponse::json(200, serde_json::json!({"id": 1, "name": "John"}))
        });
        let reply = orders
            .post("/orders")
            .json(&serde_json::json!({"user_id": 1}))
            .send()
            .unwrap();
        (orders, reply)
    };
    // Without `calls`, the users service is unreachable even with a stub.
    let (_, reply) = order_under(&bare);
    assert_eq!(reply.status, 503, "{:?}", reply.json());
    assert!(
        reply.json()["error"]
            .as_str()
            .unwrap()
            .contains("component `orders` may not call `users`; add it to `calls` in the manifest"),
        "{:?}",
        reply.json()
    );
    // With it, the stub answers; events arrive only on subscribed topics.
    let (orders, reply) = order_under(&granted);
    assert_eq!(reply.status, 201, "{:?}", reply.json());
    let payload = serde_json::json!({"id": 1});
    assert_eq!(orders.deliver("user.deleted", &payload).unwrap(), Ok(()));
    let err = orders.deliver("user.renamed", &payload).unwrap_err();
    assert!(
        matches!(&err, Error::NotSubscribed(m) if m.contains("does not subscribe to `user.renamed`")),
        "{err:?}"
    );

    // A manifest without the component, and a subscriber with no handler.
    let err = TestComponent::builtin("users")
        .unwrap()
        .with_manifest(manifest(
            "other.toml",
            "[components.other]\nwasm = \"builtin:users\"\nroutes = [\"/other\"]\n",
        ))
        .err()
        .expect("no `users` in that manifest");
    assert!(
        err.to_string()
            .contains("has no component `users`; its components are: other"),
        "{err}"
    );
    let plain = manifest(
        "plain.toml",
        "[components.plain-service]\nwasm = \"builtin:users\"\nroutes = [\"/plain\"]\nsubscribes = [\"user.deleted\"]\n",
    );
    let err = TestComponent::workspace("plain_service")
        .unwrap()
        .with_manifest(&plain)
        .err()
        .expect("a subscriber without a handler is refused");
    assert!(
        format!("{err:#}").contains("does not export `berth:service/subscriber`"),
        "{err:#}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
