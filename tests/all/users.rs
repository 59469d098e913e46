//! The users service over HTTP: every endpoint and every error case.

use crate::support::{Berth, data_dir};
use serde_json::json;

#[test]
fn new_store_lists_the_original_sample_users() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.get("/users");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        json!([{"id": 1, "name": "John"}, {"id": 2, "name": "Jane"}])
    );
}

#[test]
fn create_assigns_the_next_id_and_sets_location() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.post("/users", r#"{"name":"Ann"}"#);
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json(), json!({"id": 3, "name": "Ann"}));
    assert_eq!(reply.header("location"), Some("/users/3"));
    assert_eq!(
        berth.get("/users/3").json(),
        json!({"id": 3, "name": "Ann"})
    );
    let reply = berth.post("/users", r#"{"name":"Bob"}"#);
    assert_eq!(reply.json()["id"], 4);
}

#[test]
fn create_with_a_client_id_keeps_it_and_later_ids_go_past_it() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.post("/users", r#"{"id": 10, "name":"Ten"}"#);
    assert_eq!(reply.status, 201);
    assert_eq!(reply.header("location"), Some("/users/10"));
    assert_eq!(berth.post("/users", r#"{"name":"Next"}"#).json()["id"], 11);
}

#[test]
fn duplicate_id_is_a_conflict() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    berth
        .post("/users", r#"{"id": 1, "name":"Other John"}"#)
        .assert_error(409, "user 1 already exists");
    assert_eq!(berth.get("/users/1").json()["name"], "John");
}

#[test]
fn get_unknown_user_is_404() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    berth
        .get("/users/99")
        .assert_error(404, "user 99 does not exist");
}

#[test]
fn put_replaces_the_name() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.send_json("PUT", "/users/2", r#"{"name":"Janet"}"#);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), json!({"id": 2, "name": "Janet"}));
    assert_eq!(berth.get("/users/2").json()["name"], "Janet");
    berth
        .send_json("PUT", "/users/42", r#"{"name":"X"}"#)
        .assert_error(404, "user 42 does not exist");
    // The path names the user: a body `id`, equal or not, is refused.
    for body in [r#"{"id": 3, "name":"X"}"#, r#"{"id": 2, "name":"X"}"#] {
        berth
            .send_json("PUT", "/users/2", body)
            .assert_error(400, "field `id` cannot be changed");
    }
    assert_eq!(berth.get("/users/2").json()["name"], "Janet");
}

#[test]
fn delete_removes_the_user_for_good() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.delete("/users/1");
    assert_eq!(reply.status, 204);
    assert!(reply.body.is_empty());
    berth
        .get("/users/1")
        .assert_error(404, "user 1 does not exist");
    berth
        .delete("/users/1")
        .assert_error(404, "user 1 does not exist");
    // The sample data is not re-seeded once deleted.
    assert_eq!(
        berth.get("/users").json(),
        json!([{"id": 2, "name": "Jane"}])
    );
}

#[test]
fn invalid_bodies_get_400_with_the_reason() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let cases = [
        (r#"{"name":"#, "invalid JSON body"),
        (r#"not json"#, "invalid JSON body"),
        (r#"{"name": 5}"#, "invalid type"),
        (r#"{"name": "A", "id": "one"}"#, "invalid type"),
        (r#"{"name": "A", "id": -1}"#, "invalid value"),
        (
            r#"{"name": "A", "id": 0}"#,
            "`id` must be a positive integer",
        ),
        (
            r#"{"name": "A", "id": 18446744073709551616}"#,
            "invalid JSON body",
        ),
        (r#"{}"#, "missing field `name`"),
        (r#"{"name": "  "}"#, "`name` must not be empty"),
        (r#"{"name": "A", "age": 3}"#, "unknown field `age`"),
        (r#"[1, 2]"#, "invalid JSON body"),
        // serde would fill the fields in order from an array: id 5, "Ann".
        (r#" [5, "Ann"]"#, "expected a JSON object"),
    ];
    for (body, needle) in cases {
        let reply = berth.post("/users", body);
        assert_eq!(reply.status, 400, "POST {body}");
        let message = reply.error();
        assert!(
            message.contains(needle),
            "POST {body}: {message:?} lacks {needle:?}"
        );
    }
    assert_eq!(
        berth.get("/users").json().as_array().unwrap().len(),
        2,
        "nothing was stored"
    );
}

#[test]
fn writes_that_are_not_json_get_415() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    berth
        .request(
            "POST",
            "/users",
            &[("content-type", "text/plain")],
            br#"{"name":"Ann"}"#,
        )
        .assert_error(
            415,
            "expected content-type application/json, got `text/plain`",
        );
    berth
        .request("POST", "/users", &[], br#"{"name":"Ann"}"#)
        .assert_error(415, "got none");
    berth
        .request(
            "PUT",
            "/users/1",
            &[("content-type", "text/plain")],
            br#"{"name":"Ann"}"#,
        )
        .assert_error(415, "application/json");
    let reply = berth.request(
        "POST",
        "/users",
        &[("content-type", "application/json; charset=utf-8")],
        br#"{"name":"Ann"}"#,
    );
    assert_eq!(reply.status, 201);
}

#[test]
fn wrong_method_gets_405_with_allow() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.delete("/users");
    reply.assert_error(405, "method DELETE is not allowed");
    assert_eq!(reply.header("allow"), Some("GET, POST"));
    let reply = berth.send_json("POST", "/users/1", "{}");
    reply.assert_error(405, "method POST is not allowed");
    assert_eq!(reply.header("allow"), Some("GET, PUT, DELETE"));
}

#[test]
fn malformed_ids_get_400() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    for id in ["abc", "0", "-1", "18446744073709551616", "1.5", "%31"] {
        berth
            .get(&format!("/users/{id}"))
            .assert_error(400, "invalid user id");
    }
    berth
        .get("/users/1/extra")
        .assert_error(404, "no such resource");
}
