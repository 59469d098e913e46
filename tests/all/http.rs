//! The HTTP front: routing misses, size limits, shutdown.

use crate::support::{Berth, data_dir};

#[test]
fn unknown_route_is_404_json() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    berth
        .get("/nothing-here")
        .assert_error(404, "no service is routed at /nothing-here");
    berth
        .get("/usersx")
        .assert_error(404, "no service is routed at /usersx");
}

#[test]
fn oversized_body_is_refused_with_413() {
    let dir = data_dir();
    let berth = Berth::start_with(dir.path(), &["--max-body-bytes", "1024"]);
    let big = format!(r#"{{"name":"{}"}}"#, "a".repeat(2000));
    berth
        .post("/users", &big)
        .assert_error(413, "exceeds the limit of 1024 bytes");
    // Chunked, so the size is not known up front.
    let chunk = "a".repeat(1500);
    let raw = format!(
        "POST /users HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    berth
        .raw(raw.as_bytes())
        .assert_error(413, "exceeds the limit");
    assert_eq!(berth.post("/users", r#"{"name":"small"}"#).status, 201);
}

#[test]
fn responses_past_the_configured_limit_are_500() {
    let dir = data_dir();
    let berth = Berth::start_with(dir.path(), &["--max-response-bytes", "30"]);
    // `{"id":1,"name":"John"}` is 22 bytes; the list of two users is 47.
    assert_eq!(berth.get("/users/1").json()["name"], "John");
    berth
        .get("/users")
        .assert_error(500, "returned a 47 byte body; the limit is 30");
}

#[test]
fn sigterm_exits_cleanly() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    assert_eq!(berth.get("/users").status, 200);
    let status = berth.terminate();
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

#[test]
fn health_endpoints_answer() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let reply = berth.get("/healthz");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ok");
    let reply = berth.get("/readyz");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["status"], "ready");
}

#[test]
fn host_paths_answer_only_get() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let reply = berth.request("DELETE", path, &[], b"");
        reply.assert_error(405, "method DELETE is not allowed here; allowed: GET");
        assert_eq!(reply.header("allow"), Some("GET"));
    }
}
