//! The host's own limits: concurrency caps per component and host-wide
//! (503 with Retry-After, at once), the connection cap, and the header
//! deadline that keeps slow clients from holding the server.

use crate::support::{Berth, Logs, data_dir, encode_request, manifest_beside_users, parse_reply};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Serve users beside the test-only `slow` component, whose manifest table
/// gets `slow_extra`.
fn start(dir: &std::path::Path, slow_extra: &str, args: &[&str]) -> (Berth, Logs) {
    let manifest = manifest_beside_users(dir, "slow", &format!("timeout_ms = 30000\n{slow_extra}"));
    let mut all = vec!["--manifest", manifest.to_str().unwrap()];
    all.extend_from_slice(args);
    Berth::start_logged(&dir.join("data"), &all, &[])
}

/// Start `GET /slow?ms=…` on another thread and wait until the component
/// is running it.
fn hold_slow_request(
    berth: &Berth,
    logs: &Logs,
    ms: u64,
) -> std::thread::JoinHandle<crate::support::Reply> {
    let addr = berth.addr;
    let held = std::thread::spawn(move || {
        crate::support::request_at(addr, "GET", &format!("/slow?ms={ms}"), &[], b"")
    });
    assert!(
        logs.wait_for_line(&["slow request started"], Duration::from_secs(30)),
        "the slow request never started"
    );
    held
}

/// `reply` is a 503 asking to come back later, and came at once.
#[track_caller]
fn assert_turned_away(reply: &crate::support::Reply, took: Duration, needle: &str) {
    reply.assert_error(503, needle);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(took < Duration::from_secs(2), "waited {took:?} for a 503");
}

#[test]
fn a_component_at_its_concurrency_cap_gets_503_at_once() {
    let dir = data_dir();
    let (berth, logs) = start(dir.path(), "max_concurrency = 1\n", &[]);
    let held = hold_slow_request(&berth, &logs, 3000);
    let started = Instant::now();
    let reply = berth.get("/slow?ms=1");
    assert_turned_away(
        &reply,
        started.elapsed(),
        "component `slow` is running as many",
    );
    // The cap is the component's own: others are served as usual.
    assert_eq!(berth.get("/users/1").status, 200);
    assert_eq!(held.join().unwrap().status, 200);
    assert_eq!(berth.get("/slow?ms=1").status, 200, "a slot is free again");
}

#[test]
fn the_host_at_its_in_flight_cap_gets_503_at_once() {
    let dir = data_dir();
    let (berth, logs) = start(dir.path(), "", &["--max-in-flight", "1"]);
    let held = hold_slow_request(&berth, &logs, 3000);
    let started = Instant::now();
    let reply = berth.get("/users/1");
    assert_turned_away(&reply, started.elapsed(), "at its request limit");
    // The host's own paths are not requests to components; they still answer.
    assert_eq!(berth.get("/healthz").status, 200);
    assert_eq!(held.join().unwrap().status, 200);
    assert_eq!(berth.get("/users/1").status, 200);
}

/// A connection that sends part of a request head and then one byte at a
/// time, as a slowloris client does; returns whether the server closed it.
/// `connected` is told once the connection is open.
fn dribble(
    addr: std::net::SocketAddr,
    for_at_most: Duration,
    connected: std::sync::mpsc::Sender<()>,
) -> bool {
    let mut stream = TcpStream::connect(addr).expect("connecting a slow client");
    let _ = connected.send(());
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    if stream
        .write_all(b"GET /users HTTP/1.1\r\nhost: x\r\n")
        .is_err()
    {
        return true;
    }
    let deadline = Instant::now() + for_at_most;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if stream.write_all(b"x").is_err() {
            return true;
        }
        match stream.read(&mut buf) {
            Ok(_) => return true, // an answer (408) or end of stream: cut off
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn slow_header_clients_are_cut_off_and_cannot_hold_the_server() {
    let dir = data_dir();
    let (berth, _logs) = start(
        dir.path(),
        "",
        &["--max-connections", "2", "--header-timeout-secs", "1"],
    );
    let addr = berth.addr;
    // Two slow clients take every connection slot: they connect first, and
    // the server accepts in connection order...
    let (connected, slots_taken) = std::sync::mpsc::channel();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let connected = connected.clone();
            std::thread::spawn(move || dribble(addr, Duration::from_secs(20), connected))
        })
        .collect();
    for _ in 0..2 {
        slots_taken
            .recv_timeout(Duration::from_secs(10))
            .expect("a slow client could not connect");
    }
    // ...yet a normal client is served once the header deadline frees them.
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&encode_request("x", "GET", "/users/1", &[], b""))
        .unwrap();
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("no answer within 10 s: slow clients held the server");
    assert_eq!(parse_reply(&response).status, 200);
    assert!(started.elapsed() < Duration::from_secs(8));
    for handle in slow {
        assert!(handle.join().unwrap(), "a slow client was never cut off");
    }
}

#[test]
fn connections_past_the_cap_wait_while_every_one_is_busy() {
    let dir = data_dir();
    let (berth, logs) = start(dir.path(), "", &["--max-connections", "1"]);
    // A request under way holds the only slot (an idle connection would
    // give way; see `front`).
    let held = hold_slow_request(&berth, &logs, 3000);
    // A second connection is accepted by the kernel but not served...
    let mut second = TcpStream::connect(berth.addr).unwrap();
    second
        .write_all(&encode_request("x", "GET", "/users/2", &[], b""))
        .unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 4096];
    let err = second
        .read(&mut buf)
        .expect_err("served past the connection cap");
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    // ...until the first one is done.
    assert_eq!(held.join().unwrap().status, 200);
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut response = Vec::new();
    second.read_to_end(&mut response).unwrap();
    assert_eq!(parse_reply(&response).status, 200);
}
