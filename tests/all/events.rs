//! Services that talk: orders calls users, users publishes `user.deleted`,
//! orders cancels the user's pending orders, at least once, across crashes.

use crate::rabbitmq::Transport;
use crate::support::{BERTH, Berth, Reply, data_dir, eventually, write_file};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn guest(name: &str) -> String {
    crate::support::guest_dir()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

fn statuses(reply: &Reply) -> Vec<(u64, String)> {
    reply
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
        .collect()
}

#[test]
fn deleting_a_user_cancels_their_pending_orders() {
    cancels_pending_orders(&Transport::InProcess);
}

#[test]
fn deleting_a_user_cancels_their_pending_orders_through_a_broker() {
    if let Some(transport) = Transport::broker() {
        cancels_pending_orders(&transport);
    }
}

fn cancels_pending_orders(transport: &Transport) {
    let dir = data_dir();
    let berth = Berth::start_with(dir.path(), &transport.serve_args());
    let ann = berth.post("/users", r#"{"name":"Ann"}"#).json()["id"]
        .as_u64()
        .unwrap();
    let body = format!(r#"{{"user_id": {ann}}}"#);
    let pending = berth.post("/orders", &body).json()["id"].as_u64().unwrap();
    let done = berth
        .post(
            "/orders",
            &format!(r#"{{"user_id": {ann}, "status": "completed"}}"#),
        )
        .json()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(berth.delete(&format!("/users/{ann}")).status, 204);
    let path = format!("/orders?user_id={ann}");
    let settled = eventually(Duration::from_secs(20), || {
        let now = statuses(&berth.get(&path));
        now.iter().all(|(_, s)| s != "pending").then_some(now)
    })
    .expect("pending orders were not cancelled");
    assert_eq!(
        settled,
        vec![(pending, "cancelled".into()), (done, "completed".into())]
    );
    // Other users' orders are untouched.
    assert_eq!(berth.get("/orders/1").json()["status"], "pending");
}

#[test]
fn orders_refuses_unknown_users_with_422() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    berth
        .post("/orders", r#"{"user_id": 7}"#)
        .assert_error(422, "user 7 does not exist");
    berth
        .send_json("PATCH", "/orders/1", r#"{"user_id": 9}"#)
        .assert_error(422, "user 9 does not exist");
    assert_eq!(
        berth.get("/orders/1").json()["user_id"],
        1,
        "nothing changed"
    );
    assert_eq!(berth.post("/orders", r#"{"user_id": 2}"#).status, 201);
}

#[test]
fn orders_answers_503_when_users_is_down() {
    let dir = data_dir();
    // `users` is a component that traps on every request.
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        &format!(
            "[components.users]\nwasm = {:?}\nroutes = [\"/users\"]\n\n\
             [components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/orders\"]\ncalls = [\"users\"]\n",
            guest("misbehave")
        ),
    );
    let berth = Berth::start_with(
        &dir.path().join("data"),
        &["--manifest", manifest.to_str().unwrap()],
    );
    berth
        .post("/orders", r#"{"user_id": 1}"#)
        .assert_error(503, "users service unavailable: `users` trapped");
    assert_eq!(
        berth.get("/orders").json().as_array().unwrap().len(),
        2,
        "nothing was accepted"
    );
}

#[test]
fn calls_and_publishes_need_a_grant() {
    let dir = data_dir();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        &format!(
            "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n\n\
             [components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/orders\"]\n\n\
             [components.flaky]\nwasm = {:?}\nroutes = [\"/flaky\"]\n",
            guest("flaky")
        ),
    );
    let berth = Berth::start_with(
        &dir.path().join("data"),
        &["--manifest", manifest.to_str().unwrap()],
    );
    berth.post("/orders", r#"{"user_id": 1}"#).assert_error(
        503,
        "component `orders` may not call `users`; add it to `calls` in the manifest",
    );
    berth.request("POST", "/flaky/publish/flaky.twice", &[], b"").assert_error(
        403,
        "component `flaky` may not publish on `flaky.twice`; add it to `publishes` in the manifest",
    );
    // users publishes user.deleted without a grant: the delete fails whole.
    berth
        .delete("/users/2")
        .assert_error(500, "could not publish user.deleted");
    assert_eq!(
        berth.get("/users/2").status,
        200,
        "the delete was rolled back"
    );
}

/// Serve the flaky subscriber with fast retries.
fn start_flaky(dir: &Path, max_attempts: u32, transport: &Transport) -> Berth {
    let manifest = write_file(
        dir,
        "berth.toml",
        &format!(
            "[components.flaky]\nwasm = {:?}\nroutes = [\"/flaky\"]\n\
             publishes = [\"flaky.twice\", \"flaky.never\"]\nsubscribes = [\"flaky.twice\", \"flaky.never\"]\n",
            guest("flaky")
        ),
    );
    let max_attempts = max_attempts.to_string();
    let mut args = vec![
        "--manifest",
        manifest.to_str().unwrap(),
        "--event-backoff-ms",
        "20",
        "--event-max-attempts",
        &max_attempts,
    ];
    args.extend(transport.serve_args());
    Berth::start_with(&dir.join("data"), &args)
}

fn flaky_state(berth: &Berth) -> (u64, u64) {
    let state = berth.get("/flaky/state").json();
    (
        state["deliveries"].as_u64().unwrap(),
        state["effects"].as_u64().unwrap(),
    )
}

#[test]
fn a_subscriber_that_fails_twice_has_its_effect_applied_once() {
    fails_twice(&Transport::InProcess);
}

#[test]
fn a_subscriber_that_fails_twice_has_its_effect_applied_once_through_a_broker() {
    if let Some(transport) = Transport::broker() {
        fails_twice(&transport);
    }
}

fn fails_twice(transport: &Transport) {
    let dir = data_dir();
    let berth = start_flaky(dir.path(), 5, transport);
    assert_eq!(
        berth
            .request("POST", "/flaky/publish/flaky.twice", &[], b"")
            .status,
        202
    );
    eventually(Duration::from_secs(20), || {
        (flaky_state(&berth).1 >= 1).then_some(())
    })
    .expect("the event was never applied");
    // Give any stray redelivery time to show up before checking the counts.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(flaky_state(&berth), (3, 1), "(deliveries, effects)");
    assert!(dead_letters(dir.path(), transport).is_empty());
}

/// `berth dead-letters list` for the flaky server in `dir`.
fn dead_letters(dir: &Path, transport: &Transport) -> Vec<Value> {
    let data = dir.join("data");
    let manifest = dir.join("berth.toml");
    let output = Command::new(BERTH)
        .args(["dead-letters", "list"])
        .args(transport.dead_letter_args(&data, &manifest))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice::<Value>(&output.stdout)
        .expect("dead-letters list prints JSON")
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_subscriber_that_always_fails_is_dead_lettered_and_can_be_retried() {
    dead_lettered_and_retried(&Transport::InProcess);
}

#[test]
fn a_subscriber_that_always_fails_is_dead_lettered_and_can_be_retried_through_a_broker() {
    if let Some(transport) = Transport::broker() {
        dead_lettered_and_retried(&transport);
    }
}

fn dead_lettered_and_retried(transport: &Transport) {
    let dir = data_dir();
    let data = dir.path().join("data");
    let manifest = dir.path().join("berth.toml");
    let berth = start_flaky(dir.path(), 3, transport);
    assert_eq!(
        berth
            .request("POST", "/flaky/publish/flaky.never", &[], b"")
            .status,
        202
    );
    let dead = eventually(Duration::from_secs(20), || {
        let dead = dead_letters(dir.path(), transport);
        (!dead.is_empty()).then_some(dead)
    })
    .expect("the event was never dead-lettered");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["topic"], "flaky.never");
    assert_eq!(dead[0]["recipient"], "flaky");
    assert_eq!(dead[0]["attempts"], 3);
    assert_eq!(dead[0]["last_error"], "never");
    assert_eq!(flaky_state(&berth), (3, 0));

    // A number for the store's dead letters, COMPONENT/EVENT-ID for the broker's.
    let id = match &dead[0]["id"] {
        Value::String(id) => id.clone(),
        id => id.to_string(),
    };
    let retried = Command::new(BERTH)
        .args(["dead-letters", "retry", &id])
        .args(transport.dead_letter_args(&data, &manifest))
        .output()
        .unwrap();
    assert!(
        retried.status.success(),
        "{}",
        String::from_utf8_lossy(&retried.stderr)
    );
    eventually(Duration::from_secs(20), || {
        (flaky_state(&berth).0 == 6).then_some(())
    })
    .expect("the retried event was not delivered again");
    let dead = eventually(Duration::from_secs(20), || {
        let dead = dead_letters(dir.path(), transport);
        (dead.len() == 1 && dead[0]["attempts"] == 3).then_some(dead)
    });
    assert!(
        dead.is_some(),
        "the retried event did not return to the dead letters"
    );

    let unknown = transport.unknown_dead_letter();
    let missing = Command::new(BERTH)
        .args(["dead-letters", "retry", unknown])
        .args(transport.dead_letter_args(&data, &manifest))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(
        said.contains(&format!("no dead letter has id {unknown}")),
        "{said}"
    );
}

#[test]
fn an_event_acknowledged_before_a_crash_is_delivered_after_restart() {
    let dir = data_dir();
    // Deliveries run one at a time, and `flaky.slow` takes five seconds: the
    // user.deleted event committed behind it waits until after the kill.
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        &format!(
            "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\npublishes = [\"user.deleted\"]\n\n\
             [components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/orders\"]\ncalls = [\"users\"]\nsubscribes = [\"user.deleted\"]\n\n\
             [components.flaky]\nwasm = {:?}\nroutes = [\"/flaky\"]\npublishes = [\"flaky.slow\"]\nsubscribes = [\"flaky.slow\"]\n",
            guest("flaky")
        ),
    );
    let data = dir.path().join("data");
    let args = ["--manifest", manifest.to_str().unwrap()];
    let berth = Berth::start_with(&data, &args);
    assert_eq!(
        berth
            .request("POST", "/flaky/publish/flaky.slow", &[], b"")
            .status,
        202
    );
    let ann = berth.post("/users", r#"{"name":"Ann"}"#).json()["id"]
        .as_u64()
        .unwrap();
    let order = berth
        .post("/orders", &format!(r#"{{"user_id": {ann}}}"#))
        .json()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(berth.delete(&format!("/users/{ann}")).status, 204);
    assert_eq!(
        berth.get(&format!("/orders/{order}")).json()["status"],
        "pending"
    );
    berth.kill();

    let berth = Berth::start_with(&data, &args);
    let status = eventually(Duration::from_secs(20), || {
        let status = berth.get(&format!("/orders/{order}")).json()["status"].clone();
        (status == json!("cancelled")).then_some(status)
    });
    assert!(status.is_some(), "the event was lost in the crash");
}

#[test]
fn a_call_chain_past_the_depth_limit_fails_as_a_value() {
    let dir = data_dir();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        &format!(
            "[components.misbehave]\nwasm = {:?}\nroutes = [\"/misbehave\"]\ncalls = [\"misbehave\"]\n",
            guest("misbehave")
        ),
    );
    let berth = Berth::start_with(
        &dir.path().join("data"),
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--max-call-depth",
            "3",
        ],
    );
    berth.get("/misbehave/call-self").assert_error(
        508,
        "calling `misbehave` from `misbehave` would nest 4 calls; the limit is 3",
    );
}
