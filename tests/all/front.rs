//! The HTTP front under clients that cost the host without asking much:
//! stalled bodies, readers that never read, idle sockets at the connection
//! cap, oversized bodies sent without waiting, half-closed sockets; and the
//! protocol it owes them: HEAD, and HTTP/2 with prior knowledge (h2c).

use crate::support::{Berth, data_dir, encode_request, manifest_beside_users, parse_reply};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Resident memory of `pid`, in KiB, from /proc/PID/status.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("a VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Open a connection and send `head` (a request head, perhaps with part
/// of its body), leaving it open.
fn connect_and_send(addr: SocketAddr, head: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connecting");
    stream.write_all(head).expect("sending");
    stream
}

/// Read one response (headers, then `content-length` bytes) from a
/// connection that stays open.
fn read_one(stream: &mut TcpStream) -> crate::support::Reply {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).expect("reading a response");
        assert!(n > 0, "connection closed mid-response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let reply = parse_reply(&raw);
            let length: usize = reply
                .header("content-length")
                .map_or(0, |v| v.parse().unwrap());
            if raw.len() >= end + 4 + length {
                return parse_reply(&raw[..end + 4 + length]);
            }
        }
    }
}

/// Read until the server closes; what came back, or the error.
fn read_to_close(stream: &mut TcpStream, limit: Duration) -> std::io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map(|_| raw)
}

/// A POST head declaring `length` body bytes, of which none are sent.
fn stalled_head(path: &str, length: usize) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    )
    .into_bytes()
}

// Item 1: a body that never comes holds a connection, not a request slot.

#[test]
fn stalled_bodies_take_no_request_slot_and_get_408() {
    let dir = data_dir();
    let berth = Berth::start_with(dir.path(), &["--body-timeout-secs", "4"]);
    // More stalled requests than the host's in-flight cap (256).
    let mut stalled: Vec<TcpStream> = (0..300)
        .map(|_| connect_and_send(berth.addr, &stalled_head("/users", 100)))
        .collect();
    // Let the server take them all in: each is parsed and waits on its body.
    std::thread::sleep(Duration::from_millis(1000));
    let started = Instant::now();
    let served = (0..50)
        .filter(|_| berth.get("/users/1").status == 200)
        .count();
    assert_eq!(served, 50, "probes answered 200 while bodies stalled");
    assert!(started.elapsed() < Duration::from_secs(3));
    // At the body deadline each stalled client gets a 408 and is closed.
    let raw = read_to_close(&mut stalled[0], Duration::from_secs(10)).expect("a 408");
    let reply = parse_reply(&raw);
    reply.assert_error(408, "did not arrive in time");
    for stream in &mut stalled[1..] {
        let raw = read_to_close(stream, Duration::from_secs(10)).expect("a 408");
        assert_eq!(parse_reply(&raw).status, 408);
    }
}

#[test]
fn sigterm_does_not_wait_for_stalled_bodies() {
    let dir = data_dir();
    let berth = Berth::start_with(
        dir.path(),
        &["--body-timeout-secs", "60", "--drain-timeout-secs", "30"],
    );
    let _stalled: Vec<TcpStream> = (0..50)
        .map(|_| connect_and_send(berth.addr, &stalled_head("/users", 100)))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    berth.send_sigterm();
    let status = berth.wait_exit(Duration::from_secs(25));
    assert!(status.success(), "exit: {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM waited {:?} for bodies that never came",
        started.elapsed()
    );
}

#[test]
fn a_stalled_admin_upload_gets_408() {
    let dir = data_dir();
    let token = "front-test-token";
    let (mut berth, _logs) = Berth::start_logged(
        dir.path(),
        &["--admin", "127.0.0.1:0", "--body-timeout-secs", "2"],
        &[("BERTH_ADMIN_TOKEN", token)],
    );
    let admin = berth.admin_addr();
    let head = format!(
        "PUT /components/users HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {token}\r\ncontent-length: 1000\r\n\r\n\0asm"
    );
    let mut stream = connect_and_send(admin, head.as_bytes());
    let started = Instant::now();
    let raw = read_to_close(&mut stream, Duration::from_secs(20)).expect("an answer");
    parse_reply(&raw).assert_error(408, "did not arrive in time");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
}

// Item 3: a client that never reads its response loses it.

#[test]
fn responses_to_clients_that_never_read_are_dropped_at_the_write_timeout() {
    let dir = data_dir();
    let manifest = manifest_beside_users(dir.path(), "misbehave", "");
    // A fixed mmap threshold: each 8 MB buffer is its own mapping and goes
    // back to the system when freed, so RSS shows what is held, not what
    // glibc kept for later.
    let (berth, _logs) = Berth::start_logged(
        &dir.path().join("data"),
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--write-timeout-secs",
            "3",
        ],
        &[("MALLOC_MMAP_THRESHOLD_", "1048576")],
    );
    let pid = berth.child.id();
    let request = encode_request("x", "GET", "/misbehave/bytes?n=8000000", &[], b"");
    // Warm up with as many readers that do read, so the baseline holds
    // what serving them keeps (instance slots, buffers).
    let readers: Vec<_> = (0..24)
        .map(|_| {
            let mut stream = connect_and_send(berth.addr, &request);
            std::thread::spawn(move || {
                let raw = read_to_close(&mut stream, Duration::from_secs(30)).expect("an answer");
                assert!(raw.len() > 8_000_000);
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    let baseline = rss_kib(pid);
    // 24 clients that ask and never read.
    let _readers: Vec<TcpStream> = (0..24)
        .map(|_| connect_and_send(berth.addr, &request))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut peak = baseline;
    while Instant::now() < deadline && peak < baseline + 128 * 1024 {
        peak = peak.max(rss_kib(pid));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        peak >= baseline + 128 * 1024,
        "the answers never took memory (baseline {baseline} KiB, peak {peak} KiB)"
    );
    // Within the timeout and a margin, the memory goes back.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = peak;
    while Instant::now() < deadline {
        now = rss_kib(pid);
        if now < baseline + 48 * 1024 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("slow readers: RSS baseline {baseline} KiB, peak {peak} KiB, after {now} KiB");
    assert!(
        now < baseline + 48 * 1024,
        "still {now} KiB resident after the write timeout (baseline {baseline} KiB, peak {peak} KiB)"
    );
    assert_eq!(berth.get("/users/1").status, 200);
}

// Item 7: idle keep-alive connections give way to new clients at the cap.

#[test]
fn idle_connections_give_way_to_new_ones_at_the_cap() {
    let dir = data_dir();
    let berth = Berth::start_with(dir.path(), &["--max-connections", "4"]);
    // Four keep-alive connections, each served once and then idle.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut stream =
                connect_and_send(berth.addr, b"GET /users/1 HTTP/1.1\r\nhost: x\r\n\r\n");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            assert_eq!(read_one(&mut stream).status, 200);
            stream
        })
        .collect();
    for round in 0..3 {
        let started = Instant::now();
        let mut stream = connect_and_send(
            berth.addr,
            &encode_request("x", "GET", "/users/2", &[], b""),
        );
        let raw = read_to_close(&mut stream, Duration::from_secs(5))
            .expect("no answer within 5 s: idle connections held every slot");
        assert_eq!(parse_reply(&raw).status, 200);
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(1),
            "round {round}: waited {took:?}"
        );
    }
    // The oldest idle connections were the ones closed.
    let mut closed = 0;
    for stream in &mut idle {
        if matches!(read_to_close(stream, Duration::from_millis(500)), Ok(raw) if raw.is_empty()) {
            closed += 1;
        }
    }
    assert!(closed >= 1, "no idle connection was closed");
}

// Item 8: a body over the limit, sent without waiting, still gets its 413.

#[test]
fn an_oversized_body_sent_whole_still_gets_its_413() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let body = vec![b' '; 8 * 1024 * 1024];
    let mut seen = 0;
    for _ in 0..10 {
        let mut stream = TcpStream::connect(berth.addr).unwrap();
        let mut writer = stream.try_clone().unwrap();
        writer
            .set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let head = stalled_head("/users", body.len());
        let body = body.clone();
        // Like Python's http.client: the whole body first, then read; a
        // failed send (broken pipe, reset) is all such a client sees.
        let sender = std::thread::spawn(move || {
            writer
                .write_all(&head)
                .and_then(|()| writer.write_all(&body))
        });
        let sent = sender.join().unwrap();
        if let Ok(raw) = read_to_close(&mut stream, Duration::from_secs(10))
            && !raw.is_empty()
            && sent.is_ok()
        {
            let reply = parse_reply(&raw);
            reply.assert_error(413, "exceeds the limit of 1048576 bytes");
            seen += 1;
        }
    }
    assert_eq!(seen, 10, "clients that saw their 413");
}

// Item 14: a client that shuts its write side after a whole request.

#[test]
fn half_closed_clients_get_their_answers() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let mut answered = Vec::new();
    for i in 0..50 {
        let name = format!("half-{i}");
        let body = format!("{{\"name\":\"{name}\"}}");
        let mut stream = connect_and_send(
            berth.addr,
            &encode_request(
                "x",
                "POST",
                "/users",
                &[("content-type", "application/json")],
                body.as_bytes(),
            ),
        );
        stream.shutdown(Shutdown::Write).unwrap();
        if let Ok(raw) = read_to_close(&mut stream, Duration::from_secs(10))
            && !raw.is_empty()
        {
            let reply = parse_reply(&raw);
            assert_eq!(reply.status, 201);
            answered.push((reply.json()["id"].as_u64().unwrap(), name));
        }
    }
    assert_eq!(answered.len(), 50, "half-closed clients answered");
    // Every user that exists was answered: none committed unseen.
    for id in 3..=60u64 {
        let reply = berth.get(&format!("/users/{id}"));
        if reply.status == 200 {
            let name = reply.json()["name"].as_str().unwrap().to_string();
            assert!(
                answered.contains(&(id, name.clone())),
                "user {id} ({name}) was created without an answer"
            );
        }
    }
}

// Item 15: HEAD, and HTTP/2 with prior knowledge.

#[test]
fn head_on_a_service_route_is_get_without_the_body() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let get = berth.get("/users/1");
    assert_eq!(get.status, 200);
    let raw = {
        let mut stream = connect_and_send(
            berth.addr,
            b"HEAD /users/1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        );
        read_to_close(&mut stream, Duration::from_secs(10)).unwrap()
    };
    let head = parse_reply(&raw);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty(), "HEAD sent a body: {:?}", head.body);
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert_eq!(berth.request("HEAD", "/users/999", &[], b"").status, 404);
}

/// One request over HTTP/2 with prior knowledge; status and body.
async fn h2_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), h2::Error> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await?;
    tokio::spawn(connection);
    let mut client = client.ready().await?;
    let request = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, body.is_empty())?;
    if !body.is_empty() {
        send.send_data(bytes::Bytes::copy_from_slice(body), true)?;
    }
    let response = response.await?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok((status, out))
}

#[test]
fn h2c_with_prior_knowledge_is_served() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = berth.addr;
    let (status, body) = runtime
        .block_on(h2_request(addr, "GET", "/users/1", b""))
        .expect("an HTTP/2 answer");
    assert_eq!(status, 200);
    let user: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(user, serde_json::json!({"id": 1, "name": "John"}));
    let (status, body) = runtime
        .block_on(h2_request(addr, "POST", "/users", br#"{"name":"Ann"}"#))
        .expect("an HTTP/2 answer");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    // HTTP/1.1 on the same port is unchanged.
    assert_eq!(berth.get("/users/1").status, 200);
}
