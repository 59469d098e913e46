//! Unit tests of the orders component: the compiled wasm, run under
//! wasmtime by berth-test, with no HTTP server and an in-memory store.

use berth_test::{StubResponse, TestComponent};
use serde_json::json;

/// Orders, with a stub users service that knows users 1 and 2.
fn orders() -> TestComponent {
    let orders = TestComponent::builtin("orders").expect("loading the orders component");
    orders.stub_service("users", |request| match request.path.as_str() {
        "/users/1" | "/users/2" => StubResponse::json(200, json!({"id": 1, "name": "someone"})),
        other => StubResponse::json(404, json!({"error": format!("{other} does not exist")})),
    });
    orders
}

#[test]
fn seeds_the_sample_orders() {
    let orders = orders();
    let reply = orders.get("/orders").send().unwrap();
    assert_eq!(
        reply.json(),
        json!([
            {"id": 1, "user_id": 1, "status": "pending"},
            {"id": 2, "user_id": 2, "status": "completed"}
        ])
    );
}

#[test]
fn allocates_ids_and_defaults_to_pending() {
    let orders = orders();
    let reply = orders
        .post("/orders")
        .json(&json!({"user_id": 1}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 201);
    assert_eq!(
        reply.json(),
        json!({"id": 3, "user_id": 1, "status": "pending"})
    );
    assert_eq!(
        orders.kv_get_json("order/00000000000000000003"),
        Some(json!({"id": 3, "user_id": 1, "status": "pending"}))
    );
}

#[test]
fn a_duplicate_id_is_409() {
    let orders = orders();
    let reply = orders
        .post("/orders")
        .json(&json!({"id": 1, "user_id": 2}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 409);
    assert_eq!(reply.error(), "order 1 already exists");
}

#[test]
fn status_moves_only_out_of_pending() {
    let orders = orders();
    let to = |id: u64, status: &str| {
        orders
            .patch(&format!("/orders/{id}"))
            .json(&json!({"status": status}))
            .send()
            .unwrap()
    };
    assert_eq!(to(1, "cancelled").json()["status"], "cancelled");
    let reply = to(1, "completed");
    assert_eq!(reply.status, 409);
    assert_eq!(
        reply.error(),
        "order 1 is cancelled and can no longer change to completed"
    );
    let reply = to(2, "pending");
    assert_eq!(reply.status, 409);
    assert_eq!(
        reply.error(),
        "order 2 is completed and can no longer change to pending"
    );
    assert_eq!(to(2, "completed").status, 200, "no change is not a change");
    let reply = to(2, "shipped");
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.error(),
        "unknown status `shipped`: expected pending, completed or cancelled"
    );
    assert_eq!(
        orders.kv_get_json("order/00000000000000000001").unwrap()["status"],
        "cancelled"
    );
}

#[test]
fn filters_by_user_id() {
    let orders = orders();
    orders
        .post("/orders")
        .json(&json!({"user_id": 2, "status": "cancelled"}))
        .send()
        .unwrap();
    let reply = orders.get("/orders?user_id=2").send().unwrap();
    let ids: Vec<u64> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 3]);
    assert_eq!(
        orders
            .get("/orders")
            .query("user_id=0")
            .send()
            .unwrap()
            .status,
        400
    );
}

#[test]
fn validation_errors() {
    let orders = orders();
    let reply = orders
        .post("/orders")
        .json(&json!({"status": "pending"}))
        .send()
        .unwrap();
    assert_eq!(
        (reply.status, reply.error()),
        (400, "missing field `user_id`".to_string())
    );
    let reply = orders
        .post("/orders")
        .json(&json!({"user_id": 1, "status": "lost"}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 400);
    let reply = orders.put("/orders/1").json(&json!({})).send().unwrap();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, PATCH, DELETE"));
    let reply = orders
        .post("/orders")
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .unwrap();
    assert_eq!(reply.status, 415);
    assert_eq!(
        orders.get("/orders/999").send().unwrap().error(),
        "order 999 does not exist"
    );
}

#[test]
fn an_unknown_user_is_422_and_an_unreachable_users_service_503() {
    let orders = orders();
    let reply = orders
        .post("/orders")
        .json(&json!({"user_id": 7}))
        .send()
        .unwrap();
    assert_eq!(
        (reply.status, reply.error()),
        (422, "user 7 does not exist".to_string())
    );
    let reply = orders
        .patch("/orders/1")
        .json(&json!({"user_id": 9}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 422);

    let lonely = TestComponent::builtin("orders").unwrap();
    let reply = lonely
        .post("/orders")
        .json(&json!({"user_id": 1}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 503);
    assert!(
        reply.error().starts_with("users service unavailable"),
        "{}",
        reply.error()
    );
    lonely.stub_service("users", |_| {
        StubResponse::json(500, json!({"error": "boom"}))
    });
    let reply = lonely
        .post("/orders")
        .json(&json!({"user_id": 1}))
        .send()
        .unwrap();
    assert_eq!(
        (reply.status, reply.error()),
        (503, "users service answered 500; try again".to_string())
    );
    assert_eq!(
        lonely
            .get("/orders")
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
fn user_deleted_cancels_only_that_users_pending_orders() {
    let orders = orders();
    orders
        .post("/orders")
        .json(&json!({"user_id": 2}))
        .send()
        .unwrap();
    assert_eq!(
        orders.deliver("user.deleted", &json!({"id": 2})).unwrap(),
        Ok(())
    );
    let statuses: Vec<_> = orders
        .get("/orders")
        .send()
        .unwrap()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"].as_u64().unwrap(),
                o["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (1, "pending".into()),
            (2, "completed".into()),
            (3, "cancelled".into())
        ]
    );
    // Delivered again, it changes nothing.
    assert_eq!(
        orders.deliver("user.deleted", &json!({"id": 2})).unwrap(),
        Ok(())
    );
    assert_eq!(
        orders.kv_get_json("order/00000000000000000003").unwrap()["status"],
        "cancelled"
    );
    let refused = orders.deliver("user.deleted", &json!({"who": 2})).unwrap();
    assert!(refused.unwrap_err().starts_with("bad user.deleted payload"));
}

#[test]
fn a_user_deleted_before_any_order_request_still_cancels_the_sample_order() {
    let orders = orders();
    // Nothing has touched the orders yet, so the sample orders are not
    // stored; the event must not let John's pending order appear later.
    assert_eq!(
        orders.deliver("user.deleted", &json!({"id": 1})).unwrap(),
        Ok(())
    );
    let order = orders.get("/orders/1").send().unwrap();
    assert_eq!(order.status, 200);
    assert_eq!(order.json()["status"], "cancelled");
}

#[test]
fn reading_one_order_seeds_the_sample_orders_when_none_are_stored() {
    let orders = orders();
    let order = orders.get("/orders/2").send().unwrap();
    assert_eq!(
        order.json(),
        json!({"id": 2, "user_id": 2, "status": "completed"})
    );
    assert_eq!(orders.get("/orders/3").send().unwrap().status, 404);
}

#[test]
fn lists_page_and_a_filtered_page_carries_the_filter_in_link() {
    let orders = orders();
    for user_id in [2, 1, 2, 2] {
        let reply = orders
            .post("/orders")
            .json(&json!({"user_id": user_id}))
            .send()
            .unwrap();
        assert_eq!(reply.status, 201);
    }
    let reply = orders.get("/orders?user_id=2&limit=2").send().unwrap();
    let ids: Vec<u64> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 3]);
    assert_eq!(
        reply.header("link"),
        Some("</orders?limit=2&after=3&user_id=2>; rel=\"next\"")
    );
    let reply = orders
        .get("/orders?limit=2&after=3&user_id=2")
        .send()
        .unwrap();
    let ids: Vec<u64> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![5, 6]);
    assert_eq!(reply.header("link"), None);
    let reply = orders.get("/orders?limit=1001").send().unwrap();
    assert_eq!(reply.status, 400);
}

#[test]
fn patch_refuses_an_id_and_null_fields() {
    let orders = orders();
    for body in [
        json!({"id": 1, "status": "completed"}),
        json!({"status": null, "user_id": 2}),
        json!({"status": "completed", "user_id": null}),
    ] {
        let reply = orders.patch("/orders/1").json(&body).send().unwrap();
        assert_eq!(reply.status, 400, "{body}");
    }
    let reply = orders
        .post("/orders")
        .json(&json!({"user_id": 1, "status": null}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(
        orders.get("/orders/1").send().unwrap().json()["status"],
        "pending"
    );
}
