//! Graceful shutdown with work in flight: on SIGTERM the server stops taking
//! connections, lets the running request finish and exits 0.

use crate::support::{
    Berth, Logs, data_dir, manifest_beside_users, parse_reply, test_wasm, write_file,
};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Serve users beside the test-only `slow` component.
fn start(dir: &std::path::Path) -> (Berth, Logs) {
    let manifest = manifest_beside_users(dir, "slow", "timeout_ms = 30000\n");
    Berth::start_logged(
        &dir.join("data"),
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--drain-timeout-secs",
            "20",
        ],
        &[],
    )
}

/// What a fresh connection gets once shutdown has begun.
enum Attempt {
    /// The listener is closed.
    Refused,
    /// Connected, but the request got no answer: the connection was closed
    /// or reset unanswered.
    NoService,
    /// Answered: shutdown has not begun yet.
    Served(u16),
}

fn try_new_connection(addr: std::net::SocketAddr) -> Attempt {
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(stream) => stream,
        // A connection the kernel queued as the listener closed is reset
        // rather than refused: the same answer, seen one step later.
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::ConnectionRefused | ErrorKind::ConnectionReset
            ) =>
        {
            return Attempt::Refused;
        }
        Err(e) => panic!("connecting to {addr}: {e}"),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    if stream
        .write_all(b"GET /users HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .is_err()
    {
        return Attempt::NoService;
    }
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) if response.windows(4).any(|w| w == b"\r\n\r\n") => {
            Attempt::Served(parse_reply(&response).status)
        }
        _ => Attempt::NoService,
    }
}

#[test]
fn sigterm_lets_a_slow_request_finish_and_refuses_new_ones() {
    let dir = data_dir();
    let (berth, logs) = start(dir.path());
    let addr = berth.addr;
    assert_eq!(berth.get("/users").status, 200);

    // One request that keeps the guest busy for four seconds.
    let slow = std::thread::spawn(move || {
        let started = Instant::now();
        let reply = crate::support::request_at(addr, "GET", "/slow?ms=4000", &[], b"");
        (reply, started.elapsed())
    });
    assert!(
        logs.wait_for_line(
            &["slow request started for 4000 ms"],
            Duration::from_secs(30)
        ),
        "the slow request never started; log:\n{}",
        logs.text()
    );
    berth.send_sigterm();

    // Shutdown begins at once: within a second, new connections are
    // refused or left unanswered, while the slow request still runs.
    let deadline = Instant::now() + Duration::from_secs(3);
    let refused = loop {
        match try_new_connection(addr) {
            Attempt::Refused => break "refused",
            Attempt::NoService => break "left unanswered",
            Attempt::Served(status) => {
                assert_eq!(status, 200);
                assert!(
                    Instant::now() < deadline,
                    "still serving new connections 3 s after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    };
    eprintln!("a new connection after SIGTERM was {refused}");
    assert!(
        !slow.is_finished(),
        "the slow request ended before shutdown was seen"
    );

    let (reply, took) = slow.join().expect("slow request thread");
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json(), "waited 4000 ms");
    assert!(took >= Duration::from_secs(4), "took {took:?}");

    let status = berth.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(logs.text().contains("draining in-flight requests"));
}

#[test]
fn the_drain_timeout_bounds_shutdown() {
    let dir = data_dir();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        &format!(
            "[components.slow]\nwasm = {:?}\nroutes = [\"/slow\"]\ntimeout_ms = 60000\n",
            test_wasm("slow")
        ),
    );
    let (berth, logs) = Berth::start_logged(
        &dir.path().join("data"),
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--drain-timeout-secs",
            "1",
        ],
        &[],
    );
    let addr = berth.addr;
    // A request that would take 30 s; the drain gives it one.
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).expect("connecting");
        stream
            .set_read_timeout(Some(Duration::from_secs(40)))
            .unwrap();
        stream
            .write_all(b"GET /slow?ms=30000 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        response
    });
    assert!(
        logs.wait_for_line(&["slow request started"], Duration::from_secs(30)),
        "the slow request never started"
    );
    let sent = Instant::now();
    berth.send_sigterm();
    let status = berth.wait_exit(Duration::from_secs(15));
    let took = sent.elapsed();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    assert!(
        logs.text().contains("drain timeout passed"),
        "log:\n{}",
        logs.text()
    );
    // The abandoned request got no response, and its client is not stuck.
    let response = slow.join().expect("slow request thread");
    assert!(
        response.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&response)
    );
}
