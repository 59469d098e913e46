//! Tests of the {{name}} component. `TestComponent::build("..")` builds the
//! crate one directory up (`cargo build --release`, for wasm32-wasip2), so
//! the tests never run a stale .wasm, then runs it under wasmtime as
//! `berth serve` does, with a fresh in-memory store for each test.

use berth_test::TestComponent;
use serde_json::json;

fn service() -> TestComponent {
    TestComponent::build("..").unwrap_or_else(|e| panic!("{e:#}"))
}

#[test]
fn creates_lists_and_gets_records() {
    let svc = service();
    let empty = svc.get("/{{name}}").send().unwrap();
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json(), json!([]));

    let created = svc
        .post("/{{name}}")
        .json(&json!({"name": "First"}))
        .send()
        .unwrap();
    assert_eq!(created.status, 201);
    assert_eq!(created.json(), json!({"id": 1, "name": "First"}));
    assert_eq!(created.header("location"), Some("/{{name}}/1"));

    let one = svc.get("/{{name}}/1").send().unwrap();
    assert_eq!(one.status, 200);
    assert_eq!(one.json(), json!({"id": 1, "name": "First"}));

    let all = svc.get("/{{name}}").send().unwrap();
    assert_eq!(all.json(), json!([{"id": 1, "name": "First"}]));
}

#[test]
fn answers_bad_requests_with_errors() {
    let svc = service();
    let unnamed = svc.post("/{{name}}").json(&json!({})).send().unwrap();
    assert_eq!(unnamed.status, 400);
    let missing = svc.get("/{{name}}/7").send().unwrap();
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json(),
        json!({"error": "{{name}} record 7 does not exist"})
    );
    let delete = svc.delete("/{{name}}/1").send().unwrap();
    assert_eq!(delete.status, 405);
}
