//! The orders service over HTTP: creation, filtering, the status rules and
//! every error case.

use crate::support::{Berth, data_dir};
use serde_json::json;

#[test]
fn new_store_lists_the_original_sample_orders() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.get("/orders");
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!([
            {"id": 1, "user_id": 1, "status": "pending"},
            {"id": 2, "user_id": 2, "status": "completed"}
        ])
    );
}

#[test]
fn create_defaults_to_pending() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.post("/orders", r#"{"user_id": 2}"#);
    assert_eq!(reply.status, 201);
    assert_eq!(
        reply.json(),
        json!({"id": 3, "user_id": 2, "status": "pending"})
    );
    assert_eq!(reply.header("location"), Some("/orders/3"));
    let reply = berth.post("/orders", r#"{"user_id": 1, "status": "completed"}"#);
    assert_eq!(
        reply.json(),
        json!({"id": 4, "user_id": 1, "status": "completed"})
    );
    assert_eq!(berth.get("/orders/4").json()["status"], "completed");
}

#[test]
fn list_filters_by_user() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    berth.post("/orders", r#"{"user_id": 2}"#);
    let reply = berth.get("/orders?user_id=2");
    assert_eq!(
        reply.json(),
        json!([
            {"id": 2, "user_id": 2, "status": "completed"},
            {"id": 3, "user_id": 2, "status": "pending"}
        ])
    );
    assert_eq!(berth.get("/orders?user_id=9").json(), json!([]));
    berth
        .get("/orders?user_id=x")
        .assert_error(400, "invalid query parameter `user_id=x`");
}

#[test]
fn pending_can_complete_or_cancel_and_then_no_more() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.send_json("PATCH", "/orders/1", r#"{"status": "completed"}"#);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"id": 1, "user_id": 1, "status": "completed"})
    );
    berth
        .send_json("PATCH", "/orders/1", r#"{"status": "pending"}"#)
        .assert_error(
            409,
            "order 1 is completed and can no longer change to pending",
        );
    berth
        .send_json("PATCH", "/orders/1", r#"{"status": "cancelled"}"#)
        .assert_error(409, "can no longer change to cancelled");
    assert_eq!(berth.get("/orders/1").json()["status"], "completed");

    let created = berth.post("/orders", r#"{"user_id": 1}"#).json();
    let path = format!("/orders/{}", created["id"]);
    assert_eq!(
        berth
            .send_json("PATCH", &path, r#"{"status": "cancelled"}"#)
            .status,
        200
    );
    berth
        .send_json("PATCH", &path, r#"{"status": "completed"}"#)
        .assert_error(409, "is cancelled");
}

#[test]
fn patch_can_move_an_order_to_another_user() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.send_json("PATCH", "/orders/1", r#"{"user_id": 2}"#);
    assert_eq!(
        reply.json(),
        json!({"id": 1, "user_id": 2, "status": "pending"})
    );
}

#[test]
fn invalid_orders_get_400() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let cases = [
        (r#"{}"#, "missing field `user_id`"),
        (r#"{"user_id": "1"}"#, "invalid type"),
        (r#"{"user_id": 0}"#, "`user_id` must be a positive integer"),
        (
            r#"{"user_id": 1, "status": "shipped"}"#,
            "unknown status `shipped`",
        ),
        (r#"{"user_id": 1, "status": 3}"#, "invalid type"),
        (
            r#"{"user_id": 1, "colour": "red"}"#,
            "unknown field `colour`",
        ),
        (r#"{"user_id": 1"#, "invalid JSON body"),
        // serde would fill the fields in order from an array.
        (r#"[1, 1]"#, "expected a JSON object"),
    ];
    for (body, needle) in cases {
        let reply = berth.post("/orders", body);
        assert_eq!(reply.status, 400, "POST {body}");
        let message = reply.error();
        assert!(
            message.contains(needle),
            "POST {body}: {message:?} lacks {needle:?}"
        );
    }
    berth
        .send_json("PATCH", "/orders/1", r#"{"status": "lost"}"#)
        .assert_error(400, "unknown status `lost`");
    berth
        .send_json("PATCH", "/orders/1", "{}")
        .assert_error(400, "nothing to change");
    assert_eq!(berth.get("/orders").json().as_array().unwrap().len(), 2);
}

#[test]
fn duplicate_unknown_and_wrong_method() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    berth
        .post("/orders", r#"{"id": 2, "user_id": 1}"#)
        .assert_error(409, "order 2 already exists");
    berth
        .get("/orders/77")
        .assert_error(404, "order 77 does not exist");
    berth
        .send_json("PATCH", "/orders/77", r#"{"status": "completed"}"#)
        .assert_error(404, "order 77 does not exist");
    let reply = berth.send_json("PUT", "/orders/1", "{}");
    reply.assert_error(405, "method PUT is not allowed");
    assert_eq!(reply.header("allow"), Some("GET, PATCH, DELETE"));
    berth
        .request(
            "PATCH",
            "/orders/1",
            &[("content-type", "text/csv")],
            b"status,completed",
        )
        .assert_error(415, "text/csv");
}

#[test]
fn delete_order() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    assert_eq!(berth.delete("/orders/2").status, 204);
    berth
        .get("/orders/2")
        .assert_error(404, "order 2 does not exist");
    berth
        .delete("/orders/2")
        .assert_error(404, "order 2 does not exist");
}
