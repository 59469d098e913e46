//! The operations surface: metrics after known traffic, request ids, JSON
//! logs, and readiness while starting up and shutting down.

use crate::support::{Berth, Starting, data_dir, request_at};
use std::collections::HashMap;
use std::time::Duration;

/// Parse Prometheus text into `series{labels}` → value.
fn scrape(berth: &Berth) -> HashMap<String, f64> {
    let reply = berth.get("/metrics");
    assert_eq!(reply.status, 200);
    let text = String::from_utf8(reply.body).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn metrics_count_known_traffic() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    for _ in 0..3 {
        assert_eq!(berth.get("/users").status, 200);
    }
    assert_eq!(berth.get("/users/99").status, 404);
    assert_eq!(berth.post("/users", r#"{"name":"Ann"}"#).status, 201);
    assert_eq!(berth.get("/nowhere").status, 404);
    let m = scrape(&berth);
    let get = |series: &str| {
        m.get(series)
            .copied()
            .unwrap_or_else(|| panic!("no {series} in {m:?}"))
    };
    assert_eq!(
        get(r#"berth_requests_total{component="users",method="GET",status="200"}"#),
        3.0
    );
    assert_eq!(
        get(r#"berth_requests_total{component="users",method="GET",status="404"}"#),
        1.0
    );
    assert_eq!(
        get(r#"berth_requests_total{component="users",method="POST",status="201"}"#),
        1.0
    );
    assert_eq!(
        get(r#"berth_request_duration_seconds_count{component="users"}"#),
        5.0
    );
    assert_eq!(
        get(r#"berth_instantiation_seconds_count{component="users"}"#),
        5.0
    );
    assert_eq!(get("berth_requests_in_flight"), 0.0);
    assert!(get(r#"berth_kv_operations_total{op="get"}"#) >= 5.0);
    // Seeding raises the id counter too, so only a lower bound is exact.
    assert!(get(r#"berth_kv_operations_total{op="increment"}"#) >= 1.0);
    assert!(get(r#"berth_kv_operation_seconds_count{op="get"}"#) >= 5.0);
    assert!(
        !m.keys().any(|k| k.contains("nowhere")),
        "unrouted paths are not components"
    );
}

#[test]
fn traps_and_timeouts_are_counted() {
    let dir = data_dir();
    let wasm = crate::support::guest_dir().join("misbehave.wasm");
    let manifest = crate::support::write_file(
        dir.path(),
        "berth.toml",
        &format!(
            "[components.misbehave]\nwasm = {:?}\nroutes = [\"/misbehave\"]\ntimeout_ms = 300\n",
            wasm.display().to_string()
        ),
    );
    let berth = Berth::start_with(
        &dir.path().join("data"),
        &["--manifest", manifest.to_str().unwrap()],
    );
    assert_eq!(berth.get("/misbehave/panic").status, 500);
    assert_eq!(berth.get("/misbehave/panic").status, 500);
    assert_eq!(berth.get("/misbehave/loop").status, 504);
    let m = scrape(&berth);
    assert_eq!(m[r#"berth_traps_total{component="misbehave"}"#], 2.0);
    assert_eq!(m[r#"berth_timeouts_total{component="misbehave"}"#], 1.0);
}

#[test]
fn request_ids_are_kept_or_made_and_returned() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.request("GET", "/users/1", &[("x-request-id", "trace-42")], b"");
    assert_eq!(reply.header("x-request-id"), Some("trace-42"));
    let made = berth.get("/users/1");
    let id = made.header("x-request-id").expect("a generated request id");
    assert!(!id.is_empty());
    assert_ne!(
        berth.get("/users/1").header("x-request-id"),
        Some(id),
        "ids are unique"
    );
    // An unusable id (too long) is replaced.
    let long = "x".repeat(300);
    let reply = berth.request("GET", "/users/1", &[("x-request-id", &long)], b"");
    assert_ne!(reply.header("x-request-id"), Some(long.as_str()));
}

#[test]
fn json_logs_carry_one_line_per_request() {
    let dir = data_dir();
    let (berth, logs) = Berth::start_logged(dir.path(), &["--log-format", "json"], &[]);
    let reply = berth.request(
        "POST",
        "/users",
        &[
            ("content-type", "application/json"),
            ("x-request-id", "req-json-1"),
        ],
        br#"{"name":"Ann"}"#,
    );
    assert_eq!(reply.status, 201);
    assert!(
        logs.wait_for_line(&["req-json-1", "\"status\""], Duration::from_secs(10)),
        "{}",
        logs.text()
    );
    let text = logs.text();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request = lines
        .iter()
        .find(|l| l["target"] == "request" && l["request_id"] == "req-json-1")
        .expect("a request line");
    assert_eq!(request["method"], "POST");
    assert_eq!(request["path"], "/users");
    assert_eq!(request["component"], "users");
    assert_eq!(request["status"], 201);
    assert!(request["duration_us"].as_u64().unwrap() > 0);
    let component_line = lines
        .iter()
        .find(|l| l["message"] == "created user 3")
        .expect("the component's own log line");
    assert_eq!(component_line["component"], "users");
    assert_eq!(component_line["request_id"], "req-json-1");
}

#[test]
fn readyz_turns_503_on_sigterm_while_requests_are_still_served() {
    let dir = data_dir();
    let berth = Berth::start_with(dir.path(), &["--shutdown-delay-secs", "3"]);
    assert_eq!(berth.get("/readyz").status, 200);
    berth.send_sigterm();
    let mut unready = false;
    for _ in 0..100 {
        if berth.get("/readyz").status == 503 {
            unready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(unready, "/readyz never turned 503");
    berth.get("/readyz").assert_error(503, "draining");
    assert_eq!(
        berth.get("/users/1").status,
        200,
        "still serving during the delay"
    );
    let status = berth.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn readyz_is_503_until_start_up_completes() {
    let dir = data_dir();
    let first = Berth::start(dir.path());
    assert_eq!(first.post("/users", r#"{"name":"Ann"}"#).status, 201);
    // A second server on the same data directory binds its port at once but
    // waits, unready, for the first to let go of the data.
    let second = Starting::spawn(dir.path(), &[], &[]);
    let addr = second.bound_addr();
    assert!(
        second
            .logs
            .wait_for_line(&["waiting for the lock"], Duration::from_secs(30)),
        "no log line about waiting for the lock"
    );
    let readyz = request_at(addr, "GET", "/readyz", &[], b"");
    readyz.assert_error(503, "starting: waiting for the lock");
    assert_eq!(request_at(addr, "GET", "/healthz", &[], b"").status, 200);
    let users = request_at(addr, "GET", "/users", &[], b"");
    users.assert_error(503, "the server is starting");
    assert_eq!(users.header("retry-after"), Some("1"));
    // Still waiting a while later: the lock, not a timer, holds it back.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(request_at(addr, "GET", "/readyz", &[], b"").status, 503);

    assert_eq!(first.terminate().code(), Some(0));
    let (second, _logs) = second.ready();
    assert_eq!(second.addr, addr);
    assert_eq!(second.get("/readyz").status, 200);
    assert_eq!(second.get("/users/3").json()["name"], "Ann");
}
