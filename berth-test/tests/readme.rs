//! The example from the README's "Testing your component", kept compiling and passing.

use berth_test::TestComponent;
use serde_json::json;
use std::time::Duration;

#[test]
fn creates_a_user() {
    // Or TestComponent::from_file("target/wasm32-wasip2/release/my_service.wasm").
    let users = TestComponent::builtin("users").unwrap();

    // Seed the component's key-value namespace, then send a request.
    users.kv_set("meta/user/seeded", "1");
    let reply = users
        .post("/users")
        .json(&json!({"name": "Ann"}))
        .send()
        .unwrap();

    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("location"), Some("/users/1"));
    assert_eq!(reply.json()["name"], "Ann");
    // What the component stored, and what it logged.
    assert_eq!(
        users.kv_get_json("user/00000000000000000001").unwrap()["name"],
        "Ann"
    );
    assert_eq!(users.logs().last().unwrap().message, "created user 1");
}

#[test]
fn gives_up_on_a_slow_handler() {
    let slow = TestComponent::workspace("misbehave")
        .unwrap()
        .with_timeout(Duration::from_millis(200))
        .unwrap();
    let err = slow.get("/misbehave/loop").send().unwrap_err();
    assert!(matches!(err, berth_test::Error::Timeout(_)));
}
