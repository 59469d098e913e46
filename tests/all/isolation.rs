//! Capability isolation: a component reaches its own key-value namespace and
//! nothing else. The test-only `snoop` component tries other components'
//! keys, the filesystem, the environment, sockets, and calls and events the
//! manifest did not grant, and reports what it got.

use crate::support::{Berth, data_dir, write_file};
use serde_json::{Value, json};

/// Serve users and orders beside `snoop`, which is granted nothing. The
/// server gets an environment variable the snoop must not see.
fn start(dir: &std::path::Path) -> Berth {
    let wasm = crate::support::guest_dir().join("snoop.wasm");
    let manifest = write_file(
        dir,
        "berth.toml",
        &format!(
            "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\npublishes = [\"user.deleted\"]\n\n\
             [components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/orders\"]\ncalls = [\"users\"]\nsubscribes = [\"user.deleted\"]\n\n\
             [components.snoop]\nwasm = {:?}\nroutes = [\"/snoop\"]\n",
            wasm.display().to_string()
        ),
    );
    let (berth, _logs) = Berth::start_logged(
        &dir.join("data"),
        &["--manifest", manifest.to_str().unwrap()],
        &[("BERTH_SNOOP_SECRET", "hunter2")],
    );
    berth
}

/// Whether a report entry is an error, which is what a denied attempt gives.
fn denied(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.starts_with("error: "))
}

/// Ask the snoop to try everything, pointing its socket attempt at the
/// server's own port.
fn snoop(berth: &Berth) -> Value {
    let reply = berth.get(&format!("/snoop?port={}", berth.addr.port()));
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let report = reply.json();
    eprintln!("snoop report: {report:#}");
    report
}

#[test]
fn a_component_cannot_read_or_write_another_components_keys() {
    let dir = data_dir();
    let berth = start(dir.path());
    // Users and orders seed their records on first use.
    assert_eq!(berth.get("/users/1").json()["name"], "John");
    assert_eq!(berth.get("/orders/1").status, 200);

    let report = snoop(&berth);
    let kv = &report["kv"];
    assert_eq!(kv["users_key"], Value::Null, "read users' record: {kv}");
    assert!(
        kv["escaped_key"].is_null() || denied(&kv["escaped_key"]),
        "{kv}"
    );
    assert!(kv["nul_key"].is_null() || denied(&kv["nul_key"]), "{kv}");
    assert_eq!(kv["keys_before_write"], json!([]), "saw others' keys");
    assert_eq!(kv["wrote_own_copy"], true);

    // Its write landed in its own namespace, not in users'.
    assert_eq!(berth.get("/users/1").json()["name"], "John");
    assert_eq!(
        berth.get("/users").json(),
        json!([{"id": 1, "name": "John"}, {"id": 2, "name": "Jane"}])
    );
    let again = snoop(&berth);
    assert_eq!(
        again["kv"]["users_key"], r#"{"id":1,"name":"Mallory"}"#,
        "the snoop reads back its own key"
    );
    assert_eq!(
        again["kv"]["keys_before_write"],
        json!(["user/00000000000000000001"])
    );
    // Users' writes do not show up in the snoop's namespace either.
    assert_eq!(berth.post("/users", r#"{"name":"Ann"}"#).status, 201);
    assert_eq!(
        snoop(&berth)["kv"]["keys_before_write"],
        json!(["user/00000000000000000001"])
    );
}

#[test]
fn a_component_sees_no_files_environment_or_sockets() {
    let dir = data_dir();
    let berth = start(dir.path());
    let report = snoop(&berth);

    let fs = &report["fs"];
    for attempt in ["read_dir_root", "read_passwd", "read_dir_cwd", "write_tmp"] {
        assert!(denied(&fs[attempt]), "filesystem {attempt}: {fs}");
    }

    let env = &report["env"];
    assert_eq!(env["vars"], json!([]), "environment leaked: {env}");
    assert!(
        env["args"].as_array().is_some_and(Vec::is_empty),
        "arguments leaked: {env}"
    );

    let net = &report["net"];
    for attempt in ["connect", "bind", "udp", "lookup"] {
        assert!(denied(&net[attempt]), "network {attempt}: {net}");
    }
}

#[test]
fn a_component_cannot_call_or_publish_without_a_grant() {
    let dir = data_dir();
    let berth = start(dir.path());
    let report = snoop(&berth);
    let services = report["services"].as_str().unwrap_or_default();
    assert!(services.contains("NotAllowed"), "{services}");
    let events = report["events"].as_str().unwrap_or_default();
    assert!(events.contains("NotAllowed"), "{events}");
    // The refused event deleted nothing and cancelled no order.
    assert_eq!(berth.get("/users/1").status, 200);
    assert_eq!(berth.get("/orders/1").json()["status"], "pending");
}

#[test]
fn clocks_are_granted() {
    let dir = data_dir();
    let berth = start(dir.path());
    let report = snoop(&berth);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let guest_now = report["clock"]["unix_secs"].as_u64().unwrap_or(0);
    assert!(
        guest_now.abs_diff(now) < 60,
        "guest clock {guest_now}, host {now}"
    );
    assert_eq!(report["clock"]["monotonic"], true);
}
