//! Hostile and malformed input over raw TCP: broken HTTP, oversized and
//! too many headers, odd bytes and escapes in paths, ids past 63 bits and
//! broken JSON. Each gets a 4xx, and the server keeps serving afterwards.

use crate::support::{Berth, Reply, data_dir, parse_reply};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Send `raw` and expect `status`; then check the server still answers.
#[track_caller]
fn check(berth: &Berth, raw: &[u8], status: u16) -> Reply {
    let reply = berth.raw(raw);
    assert_eq!(
        reply.status,
        status,
        "for {:?}: {}",
        String::from_utf8_lossy(&raw[..raw.len().min(120)]),
        String::from_utf8_lossy(&reply.body)
    );
    let users = berth.get("/users");
    assert_eq!(users.status, 200, "GET /users after a bad request");
    assert_eq!(users.json().as_array().map(Vec::len), Some(2));
    reply
}

/// A GET of `target` with the given extra header lines, closing afterwards.
fn get_with(target: &[u8], extra_headers: &[u8]) -> Vec<u8> {
    let mut raw = b"GET ".to_vec();
    raw.extend_from_slice(target);
    raw.extend_from_slice(b" HTTP/1.1\r\nhost: berth\r\nconnection: close\r\n");
    raw.extend_from_slice(extra_headers);
    raw.extend_from_slice(b"\r\n");
    raw
}

#[test]
fn malformed_http_is_400_and_the_server_stays_up() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let cases: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"\x00\x01\x02\x03 / HTTP/1.1\r\n\r\n",
        b"GET /users\r\n\r\n",
        b"GET /users HTTP/9.9\r\nhost: x\r\n\r\n",
        b"GET /users HTTP/1.1\r\nhost x\r\n\r\n",
        b"GET /users HTTP/1.1\r\nhost: x\r\nbad header: v\r\n\r\n",
        b"GET /users HTTP/1.1\r\nhost: x\r\nx-ctl: a\x01b\r\n\r\n",
        b"GET /users HTTP/1.1\r\nhost: x\r\n: no name\r\n\r\n",
        b"POST /users HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n",
        b"POST /users HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd",
    ];
    for raw in cases {
        check(&berth, raw, 400);
    }
}

#[test]
fn a_broken_chunked_body_is_400() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let raw = b"POST /users HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
    check(&berth, raw, 400).assert_error(400, "could not read the request body");
}

#[test]
fn bad_json_is_400() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    for body in [
        &b"{"[..],
        b"{\"name\": \"a\"",
        b"\xff\xfe{}",
        b"{\"name\": \"\xff\"}",
        b"",
        b"null",
        b"{\"name\": \"a\"} trailing",
    ] {
        let raw = [
            format!(
                "POST /users HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
            body,
        ]
        .concat();
        check(&berth, &raw, 400).assert_error(400, "invalid JSON body");
    }
}

/// Send a request head the server will refuse before reading all of it.
/// The server answers and closes with bytes unread, which may reset the
/// connection before the answer is read, so a reset is tried again (up to
/// five times); any answer must be `status`.
#[track_caller]
fn check_refused_early(berth: &Berth, raw: &[u8], status: u16) {
    for _ in 0..5 {
        let Ok(mut stream) = TcpStream::connect(berth.addr) else {
            panic!("the server stopped accepting connections")
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        // A failed write means the server already answered and closed.
        let _ = stream.write_all(raw);
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        if response.windows(4).any(|w| w == b"\r\n\r\n") {
            let reply = parse_reply(&response);
            assert_eq!(reply.status, status);
            let users = berth.get("/users");
            assert_eq!(users.status, 200, "GET /users after a refused request");
            return;
        }
    }
    panic!("no answer in five tries; the connection was reset every time");
}

#[test]
fn too_many_headers_are_431() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let headers: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    check_refused_early(&berth, &get_with(b"/users", headers.as_bytes()), 431);
}

#[test]
fn huge_headers_are_431() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    // One header of 500 KB, and a head of 500 KB in 50 headers of 10 KB.
    let one = format!("x-big: {}\r\n", "a".repeat(500 * 1024));
    check_refused_early(&berth, &get_with(b"/users", one.as_bytes()), 431);
    let many: String = (0..50)
        .map(|i| format!("x-h{i}: {}\r\n", "b".repeat(10 * 1024)))
        .collect();
    check_refused_early(&berth, &get_with(b"/users", many.as_bytes()), 431);
}

#[test]
fn headers_past_the_configured_limit_get_a_json_431() {
    let dir = data_dir();
    let berth = Berth::start_with(dir.path(), &["--max-header-bytes", "8192"]);
    let header = |n: usize| format!("x-big: {}\r\n", "a".repeat(n));
    let reply = check(&berth, &get_with(b"/users", header(6000).as_bytes()), 200);
    assert_eq!(
        reply.json()[0]["name"],
        "John",
        "6 KB of headers are within 8 KB"
    );
    let reply = check(&berth, &get_with(b"/users", header(9000).as_bytes()), 431);
    assert!(
        reply.error().contains("the limit is 8192 bytes"),
        "{}",
        reply.error()
    );
    // Far past the limit the parser stops reading and answers 431 itself.
    check_refused_early(&berth, &get_with(b"/users", header(40_000).as_bytes()), 431);
}

#[test]
fn header_values_that_are_not_utf8_are_400() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    check(&berth, &get_with(b"/users", b"x-odd: \xff\xfe\r\n"), 400)
        .assert_error(400, "header `x-odd` is not valid UTF-8");
}

#[test]
fn odd_bytes_and_escapes_in_paths_are_4xx() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    // Escapes reach the component undecoded, which rejects them as ids.
    for target in [
        &b"/users/%ff"[..],
        b"/users/%zz",
        b"/users/%",
        b"/users/%00",
        b"/orders/%ff%fe",
        b"/users/\xc3\xa9",
        b"/orders?user_id=%ff",
        b"/orders?user_id=%zz",
    ] {
        let reply = check(&berth, &get_with(target, b""), 400);
        let message = reply.error();
        assert!(message.contains("invalid"), "{message:?}");
    }
    // Bytes HTTP does not allow in a request target never reach a component.
    for target in [
        &b"/users/\xff"[..],
        b"/users/\xff\xfe",
        b"/users/a b",
        b"/users/\x7f",
    ] {
        check(&berth, &get_with(target, b""), 400);
    }
    // Neither does a path that climbs out of its route.
    check(&berth, &get_with(b"/users/../orders/1", b""), 404);
}

#[test]
fn ids_beyond_63_bits_are_400() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    for path in [
        "/users/18446744073709551616",
        "/users/18446744073709551615",
        "/users/9223372036854775808",
        "/users/99999999999999999999999999999999",
        "/orders/18446744073709551616",
    ] {
        let reply = check(&berth, &get_with(path.as_bytes(), b""), 400);
        assert!(reply.error().contains("below 2^63"), "{path}");
    }
    let reply = check(
        &berth,
        &get_with(b"/orders?user_id=18446744073709551616", b""),
        400,
    );
    assert!(reply.error().contains("from 1 to 9223372036854775807"));
    // The largest id, 2^63 - 1, is an id like any other: it just is not there.
    check(&berth, &get_with(b"/users/9223372036854775807", b""), 404);
    for (path, body) in [
        ("/users", r#"{"id": 18446744073709551616, "name": "A"}"#),
        ("/orders", r#"{"user_id": 18446744073709551616}"#),
        ("/orders", r#"{"user_id": 1, "id": 1e30}"#),
    ] {
        let reply = berth.post(path, body);
        reply.assert_error(400, "invalid");
    }
    assert_eq!(
        berth.get("/orders").json().as_array().map(Vec::len),
        Some(2)
    );
}
