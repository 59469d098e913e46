//! The OpenAPI document the server publishes is the contract it keeps: each
//! bound it declares is where the server starts refusing, and what its
//! schemas forbid (`null`, an `id` in a PUT or PATCH body) gets 400.
//! `tests/schemathesis/run.sh` checks the rest, with every schemathesis check.

use crate::support::{Berth, data_dir};
use serde_json::Value;

/// Follow a local `$ref` (`#/components/...`) to what it names.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value["$ref"].as_str() {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local reference");
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} is not in the document"))
        }
        None => value,
    }
}

/// The `maximum` the document declares at `pointer`.
fn maximum(doc: &Value, pointer: &str) -> u64 {
    doc.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no maximum at {pointer}"))
}

#[test]
fn the_bounds_the_document_declares_are_where_the_server_refuses() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let doc = berth.get("/openapi.json").json();

    // Ids in paths and queries.
    let id_max = maximum(&doc, "/components/schemas/Id/maximum");
    assert_eq!(id_max, i64::MAX as u64);
    berth
        .get(&format!("/users/{id_max}"))
        .assert_error(404, "does not exist");
    berth
        .get(&format!("/users/{}", id_max + 1))
        .assert_error(400, "invalid user id");
    assert_eq!(berth.get(&format!("/orders?user_id={id_max}")).status, 200);
    berth
        .get(&format!("/orders?user_id={}", id_max + 1))
        .assert_error(400, "invalid query parameter `user_id");
    berth
        .post("/orders", &format!(r#"{{"user_id": {}}}"#, id_max + 1))
        .assert_error(400, "field `user_id` must be a positive integer below 2^63");

    // Ids a client picks for a new record.
    let new_max = maximum(&doc, "/components/schemas/NewId/maximum");
    assert_eq!(new_max, (1 << 53) - 1);
    let created = berth.post("/users", &format!(r#"{{"id": {new_max}, "name": "Max"}}"#));
    assert_eq!(created.status, 201);
    berth
        .post(
            "/users",
            &format!(r#"{{"id": {}, "name": "Past"}}"#, new_max + 1),
        )
        .assert_error(400, "field `id` must be at most 9007199254740991");

    // Paging: both lists take `limit` and `after` and document `Link`.
    for (path, operation) in [
        ("/users", "/paths/~1users/get"),
        ("/orders", "/paths/~1orders/get"),
    ] {
        let get = doc.pointer(operation).unwrap();
        let params: Vec<&Value> = get["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&doc, p))
            .collect();
        let param = |name: &str| {
            *params
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{path} documents no `{name}`"))
        };
        let limit_max = param("limit")["schema"]["maximum"].as_u64().unwrap();
        assert_eq!(berth.get(&format!("{path}?limit={limit_max}")).status, 200);
        berth
            .get(&format!("{path}?limit={}", limit_max + 1))
            .assert_error(400, "invalid query parameter `limit");
        berth
            .get(&format!("{path}?limit=0"))
            .assert_error(400, "invalid query parameter `limit");
        let after_max = param("after")["schema"]["maximum"].as_u64().unwrap();
        assert_eq!(
            berth.get(&format!("{path}?after={after_max}")).json(),
            serde_json::json!([])
        );
        berth
            .get(&format!("{path}?after={}", after_max + 1))
            .assert_error(400, "invalid query parameter `after");
        let link = resolve(&doc, &get["responses"]["200"]["headers"]["Link"]);
        assert!(
            link["schema"]["pattern"].is_string(),
            "{path}: Link undocumented"
        );
        assert_eq!(
            berth.get(&format!("{path}?limit=1")).header("link"),
            Some(format!("<{path}?limit=1&after=1>; rel=\"next\"").as_str())
        );
    }
}

#[test]
fn null_is_not_a_value_of_any_field() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    for (method, path, body) in [
        ("POST", "/users", r#"{"id": null, "name": "A"}"#),
        ("POST", "/users", r#"{"name": null}"#),
        ("POST", "/orders", r#"{"id": null, "user_id": 1}"#),
        ("POST", "/orders", r#"{"user_id": 1, "status": null}"#),
        ("POST", "/orders", r#"{"user_id": null}"#),
        (
            "PATCH",
            "/orders/1",
            r#"{"status": "completed", "user_id": null}"#,
        ),
        ("PATCH", "/orders/1", r#"{"status": null, "user_id": 2}"#),
    ] {
        let reply = berth.send_json(method, path, body);
        assert_eq!(
            reply.status,
            400,
            "{method} {path} {body}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    assert_eq!(berth.get("/users").json().as_array().unwrap().len(), 2);
    assert_eq!(berth.get("/orders").json().as_array().unwrap().len(), 2);
    assert_eq!(
        berth.get("/orders/1").json(),
        serde_json::json!({"id": 1, "user_id": 1, "status": "pending"})
    );
}

#[test]
fn put_and_patch_bodies_have_no_id_in_the_document_or_the_server() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let doc = berth.get("/openapi.json").json();
    for schema in ["UserUpdate", "OrderPatch"] {
        let schema = &doc["components"]["schemas"][schema];
        assert_eq!(schema["additionalProperties"], false);
        assert!(schema["properties"].get("id").is_none(), "{schema}");
    }
    for body in [r#"{"id": 1, "name": "X"}"#, r#"{"id": 2, "name": "X"}"#] {
        berth
            .send_json("PUT", "/users/1", body)
            .assert_error(400, "field `id` cannot be changed");
    }
    for body in [
        r#"{"id": 1, "status": "completed"}"#,
        r#"{"id": 2, "status": "completed"}"#,
    ] {
        berth
            .send_json("PATCH", "/orders/1", body)
            .assert_error(400, "field `id` cannot be changed");
    }
    assert_eq!(berth.get("/users/1").json()["name"], "John");
    assert_eq!(berth.get("/orders/1").json()["status"], "pending");
}
