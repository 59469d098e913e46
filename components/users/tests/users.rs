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
fn a_reused_instance_remembers_a_seeding_it_found_but_not_one_it_wrote() {
    // With reuse, the SDK skips the marker read once an instance has found
    // the marker. Deleting it behind the instance's back shows which calls
    // read it.
    let users = users().with_reuse(10).unwrap();
    let names = |reply: berth_test::TestResponse| -> Vec<String> {
        let list = reply.json();
        let list = list.as_array().expect("a JSON array");
        list.iter()
            .map(|u| u["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(users.get("/users").send().unwrap()), ["John", "Jane"]);
    // The first call wrote the marker, which its commit might have lost:
    // not remembered, so the next call reads it, finds it gone and seeds.
    users.kv_delete("meta/user/seeded");
    users.kv_delete("user/00000000000000000001");
    assert_eq!(names(users.get("/users").send().unwrap()), ["John", "Jane"]);
    // That call wrote it again; this one finds it, and the instance
    // remembers: it no longer reads the marker, so it does not seed again.
    assert_eq!(names(users.get("/users").send().unwrap()), ["John", "Jane"]);
    users.kv_delete("meta/user/seeded");
    users.kv_delete("user/00000000000000000001");
    assert_eq!(names(users.get("/users").send().unwrap()), ["Jane"]);
    assert_eq!(users.kv_get("meta/user/seeded"), None);
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

#[test]
fn lists_page_with_limit_and_a_cursor_in_link() {
    let users = users();
    for i in 0..5 {
        let reply = users
            .post("/users")
            .json(&json!({"name": format!("u{i}")}))
            .send()
            .unwrap();
        assert_eq!(reply.status, 201);
    }
    let mut seen = Vec::new();
    let mut next = Some("/users?limit=3".to_string());
    while let Some(path) = next {
        let reply = users.get(&path).send().unwrap();
        assert_eq!(reply.status, 200);
        seen.extend(
            reply
                .json()
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["id"].as_u64().unwrap()),
        );
        next = reply.header("link").map(|link| {
            link.strip_prefix('<')
                .unwrap()
                .strip_suffix(">; rel=\"next\"")
                .unwrap()
                .to_string()
        });
    }
    assert_eq!(seen, (1..=7).collect::<Vec<_>>());
    let reply = users.get("/users?limit=3").send().unwrap();
    assert_eq!(
        reply.header("link"),
        Some("</users?limit=3&after=3>; rel=\"next\"")
    );
    for bad in ["limit=0", "limit=1001", "limit=two", "after=-3"] {
        let reply = users.get(&format!("/users?{bad}")).send().unwrap();
        assert_eq!(reply.status, 400, "{bad}");
        assert!(
            reply.error().starts_with("invalid query parameter"),
            "{bad}"
        );
    }
}

#[test]
fn a_page_stops_at_a_mebibyte_of_records() {
    let users = users();
    let name = "n".repeat(600 * 1024);
    for _ in 0..3 {
        let reply = users
            .post("/users")
            .json(&json!({"name": name}))
            .send()
            .unwrap();
        assert_eq!(reply.status, 201);
    }
    // John, Jane and one big user fill the first page; each next big user
    // comes alone.
    let reply = users.get("/users").send().unwrap();
    let ids: Vec<u64> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(
        reply.header("link"),
        Some("</users?limit=100&after=3>; rel=\"next\"")
    );
    let reply = users.get("/users?after=3").send().unwrap();
    assert_eq!(reply.json().as_array().unwrap().len(), 1);
    assert_eq!(
        reply.header("link"),
        Some("</users?limit=100&after=4>; rel=\"next\"")
    );
}

#[test]
fn put_refuses_an_id_and_null_fields() {
    let users = users();
    for body in [
        json!({"id": 1, "name": "X"}),
        json!({"id": null, "name": "X"}),
    ] {
        let reply = users.put("/users/1").json(&body).send().unwrap();
        assert_eq!(reply.status, 400, "{body}");
    }
    let reply = users
        .post("/users")
        .json(&json!({"id": null, "name": "X"}))
        .send()
        .unwrap();
    assert_eq!(reply.status, 400);
    assert!(
        reply.error().contains("invalid type: null"),
        "{}",
        reply.error()
    );
}
