//! Unit tests of the users component: the compiled wasm, run under wasmtime
//! by berth-test, with no HTTP server and an in-memory store.

use berth_test::TestComponent;
use serde_json::json;

fn users() -> TestComponent {
    TestComponent::builtin("users").expect("loading the users component")
}

#[test]
fn seeds_the_sample_users_once() {
    let users = users();
    let reply = users.get("/users").send().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        json!([{"id": 1, "name": "John"}, {"id": 2, "name": "Jane"}])
    );
    assert_eq!(users.kv_get("meta/user/seeded").as_deref(), Some(&b"1"[..]));
    assert_eq!(
        users.kv_get_json("user/00000000000000000001"),
        Some(json!({"id": 1, "name": "John"}))
    );
}

#[test]
fn allocates_increasing_ids_past_the_samples() {
    let users = users();
    for (name, id) in [("Ann", 3), ("Bob", 4), ("Cy", 5)] {
        let reply = users
            .post("/users")
            .json(&json!({"name": name}))
            .send()
            .unwrap();
        assert_eq!(reply.status, 201);
        assert_eq!(reply.json(), json!({"id": id, "name": name}));
        assert_eq!(
            reply.header("location"),
            Some(format!("/users/{id}").as_str())
        );
    }
    assert_eq!(
        users.kv_get("meta/user/next-id").as_deref(),
        Some(&b"5"[..])
    );
    assert_eq!(users.logs().last().unwrap().message, "created user 5");
}

#[test]
fn skips_ids_a_client_already_took() {
    let users = users();
    assert_eq!(
        users
            .post("/users")
            .json(&json!({"id": 3, "name": "Three"}))
            .send()
            .unwrap()
            .status,
        201
    );
    let reply = users
        .post("/users")
        .json(&json!({"name": "Next"}))
        .send()
        .unwrap();
    assert_eq!(reply.json()["id"], 4);
}

#[test]
fn a_duplicate_id_is_409_and_changes_nothing() {
    let users = users();
    let reply = users
        .post("/users")
        .json(&json!({"id": 2, "name": "Imposter"}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 409);
    assert_eq!(reply.error(), "user 2 already exists");
    assert_eq!(
        users.kv_get_json("user/00000000000000000002").unwrap()["name"],
        "Jane"
    );
}

#[test]
fn validation_errors() {
    let users = users();
    let check = |body: &str, status: u16, message: &str| {
        let reply = users
            .post("/users")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(reply.status, status, "{body}");
        assert!(reply.error().contains(message), "{body}: {}", reply.error());
    };
    check("{", 400, "invalid JSON body");
    check(r#"{"name": ""}"#, 400, "`name` must not be empty");
    check(r#"{"name": null}"#, 400, "missing field `name`");
    check(r#"{"name": ["A"]}"#, 400, "invalid type");
    check(r#"{"name": "A", "extra": 1}"#, 400, "unknown field `extra`");
    let reply = users.post("/users").body(r#"{"name":"A"}"#).send().unwrap();
    assert_eq!(reply.status, 415);
    let reply = users.patch("/users").send().unwrap();
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow"), Some("GET, POST"));
    assert_eq!(users.get("/users/zero").send().unwrap().status, 400);
}

#[test]
fn update_and_delete() {
    let users = users();
    let reply = users
        .put("/users/1")
        .json(&json!({"name": "Johnny"}))
        .send()
        .unwrap();
    assert_eq!(reply.json(), json!({"id": 1, "name": "Johnny"}));
    assert_eq!(
        users.kv_get_json("user/00000000000000000001").unwrap()["name"],
        "Johnny"
    );
    assert_eq!(users.delete("/users/1").send().unwrap().status, 204);
    assert_eq!(users.kv_get("user/00000000000000000001"), None);
    assert_eq!(
        users.get("/users/1").send().unwrap().error(),
        "user 1 does not exist"
    );
}

#[test]
fn delete_publishes_user_deleted() {
    let users = users();
    assert_eq!(users.delete("/users/2").send().unwrap().status, 204);
    let published = users.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].topic, "user.deleted");
    assert_eq!(published[0].payload, json!({"id": 2}));
    // A delete of a missing user publishes nothing.
    assert_eq!(users.delete("/users/2").send().unwrap().status, 404);
    assert_eq!(users.published().len(), 1);
}

#[test]
fn client_ids_past_2_pow_53_are_refused_so_allocation_never_runs_out() {
    let users = users();
    let reply = users
        .post("/users")
        .json(&json!({"id": 9_007_199_254_740_992u64, "name": "Huge"}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error(), "field `id` must be at most 9007199254740991");
    let reply = users
        .post("/users")
        .json(&json!({"id": 9_007_199_254_740_991u64, "name": "Max"}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 201);
    let reply = users
        .post("/users")
        .json(&json!({"name": "Next"}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 201);
    assert_eq!(reply.json()["id"], 9_007_199_254_740_992u64);
}

#[test]
fn reading_one_user_seeds_on_a_fresh_store_and_a_deleted_sample_stays_deleted() {
    let users = users();
    assert_eq!(
        users.get("/users/2").send().unwrap().json(),
        json!({"id": 2, "name": "Jane"})
    );
    assert_eq!(users.kv_get("meta/user/seeded").as_deref(), Some(&b"1"[..]));
    assert_eq!(users.delete("/users/1").send().unwrap().status, 204);
    // The miss checks the seeding marker, which says John was seeded once.
    let gone = users.get("/users/1").send().unwrap();
    assert_eq!(gone.status, 404);
    assert_eq!(gone.error(), "user 1 does not exist");
    assert_eq!(users.get("/users/3").send().unwrap().status, 404);
}
