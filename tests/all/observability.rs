//! Logs and metrics: labels a client cannot multiply, calls visible in
//! both, the request id on every line a request causes, every series there
//! from the start, one line per failed request, and a full disk that logs a
//! rate-limited error rather than a line per write.

use crate::support::{Berth, Logs, Starting, data_dir, manifest_beside_users, request_at};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// `GET /metrics` as text.
fn metrics(berth: &Berth) -> String {
    let reply = berth.get("/metrics");
    assert_eq!(reply.status, 200);
    String::from_utf8(reply.body).expect("UTF-8 metrics")
}

/// The value of the sample line that starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn unique_methods_share_one_series_and_metrics_stay_small() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 500;
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let sent = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let clients: Vec<_> = (0..THREADS)
        .map(|t| {
            let (addr, sent) = (berth.addr, sent.clone());
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    if started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    // A method no client sent before, as an attacker would.
                    let reply = request_at(addr, &format!("X{t}M{i}"), "/users/1", &[], b"");
                    assert!(reply.status < 500, "status {}", reply.status);
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent >= 1000, "only {sent} requests within 60 s");
    let text = metrics(&berth);
    assert!(
        text.len() < 64 * 1024,
        "/metrics is {} bytes after {sent} requests with unique methods",
        text.len()
    );
    assert!(!text.contains("method=\"X"), "a series per method:\n{text}");
    let others: f64 = text
        .lines()
        .filter(|l| l.starts_with("berth_requests_total{") && l.contains("method=\"other\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(others as usize, sent, "every odd method counts as `other`");
    // The standard methods keep their own label.
    assert_eq!(berth.get("/users/1").status, 200);
    assert!(metrics(&berth).contains("method=\"GET\""));
}

#[test]
fn every_family_and_component_series_is_there_from_the_start() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let text = metrics(&berth);
    for series in [
        "berth_traps_total{component=\"users\"}",
        "berth_traps_total{component=\"orders\"}",
        "berth_timeouts_total{component=\"users\"}",
        "berth_swaps_total{component=\"orders\"}",
        "berth_swaps_rejected_total{component=\"users\"}",
        "berth_instance_pool_full_total{component=\"users\"}",
        "berth_event_deliveries_total{component=\"orders\",outcome=\"dead_lettered\"}",
        "berth_calls_total{caller=\"orders\",callee=\"users\",outcome=\"ok\"}",
        "berth_calls_total{caller=\"orders\",callee=\"users\",outcome=\"failed\"}",
        "berth_kv_operations_total{op=\"get\"}",
        "berth_kv_operations_total{op=\"increment\"}",
    ] {
        assert_eq!(
            sample(&text, series),
            Some(0.0),
            "{series} 0 missing:\n{text}"
        );
    }
    // (A family shows once it has a series: requests have theirs from the
    // first request, as their status is not known before.)
    for family in [
        "berth_traps",
        "berth_calls",
        "berth_instance_pool_full",
        "berth_kv_operations",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} counter")),
            "{family} is not registered:\n{text}"
        );
    }
    // A call counts under its outcome.
    assert_eq!(berth.post("/orders", r#"{"user_id": 1}"#).status, 201);
    let text = metrics(&berth);
    assert_eq!(
        sample(
            &text,
            "berth_calls_total{caller=\"orders\",callee=\"users\",outcome=\"ok\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

/// POST an order and a user with request ids `{prefix}-order` and
/// `{prefix}-user`; return the lines they logged, once both are logged.
fn order_and_user(berth: &Berth, logs: &Logs, prefix: &str) -> Vec<String> {
    for (path, body, id) in [
        ("/orders", r#"{"user_id": 1}"#, format!("{prefix}-order")),
        ("/users", r#"{"name":"Ann"}"#, format!("{prefix}-user")),
    ] {
        let reply = berth.request(
            "POST",
            path,
            &[("content-type", "application/json"), ("x-request-id", &id)],
            body.as_bytes(),
        );
        assert_eq!(reply.status, 201);
        assert!(
            logs.wait_for_line(&[id.as_str(), "POST", "201"], Duration::from_secs(10)),
            "no request line for {id}:\n{}",
            logs.text()
        );
    }
    logs.text().lines().map(str::to_string).collect()
}

#[test]
fn calls_and_component_lines_carry_the_request_id_in_text() {
    let dir = data_dir();
    let (berth, logs) = Berth::start_logged(dir.path(), &[], &[]);
    let lines = order_and_user(&berth, &logs, "obs-text");
    let with = |needles: &[&str]| {
        lines
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .unwrap_or_else(|| panic!("no line with {needles:?}:\n{}", lines.join("\n")))
    };
    let call = with(&[" call: ", "obs-text-order"]);
    for field in [
        "caller=\"orders\"",
        "callee=\"users\"",
        "outcome=\"ok\"",
        "status=200",
        "duration_us=",
        "path=\"/users/1\"",
    ] {
        assert!(call.contains(field), "{field} missing: {call}");
    }
    with(&["request: ", "path=/orders", "request_id=obs-text-order"]);
    with(&[
        "component: ",
        "created user 3",
        "request_id=\"obs-text-user\"",
    ]);
}

#[test]
fn calls_and_component_lines_carry_the_request_id_in_json() {
    let dir = data_dir();
    let (berth, logs) = Berth::start_logged(dir.path(), &["--log-format", "json"], &[]);
    let lines: Vec<serde_json::Value> = order_and_user(&berth, &logs, "obs-json")
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let find = |target: &str, id: &str| {
        lines
            .iter()
            .find(|l| l["target"] == target && l["request_id"] == id)
            .unwrap_or_else(|| panic!("no {target} line for {id}: {lines:#?}"))
    };
    let call = find("call", "obs-json-order");
    assert_eq!(call["caller"], "orders");
    assert_eq!(call["callee"], "users");
    assert_eq!(call["outcome"], "ok");
    assert_eq!(call["level"], "INFO");
    find("request", "obs-json-order");
    assert_eq!(
        find("component", "obs-json-user")["message"],
        "created user 3"
    );
}

/// Lines logged from `from` on.
fn lines_since(logs: &Logs, from: usize) -> Vec<String> {
    logs.text().lines().skip(from).map(str::to_string).collect()
}

#[test]
fn a_failed_request_logs_one_line_with_its_details() {
    let dir = data_dir();
    let manifest = manifest_beside_users(dir.path(), "misbehave", "timeout_ms = 500\n");
    let (berth, logs) = Berth::start_logged(
        &dir.path().join("data"),
        &["--manifest", manifest.to_str().unwrap()],
        &[],
    );
    // Start-up's last lines may come after the `listening on` line.
    assert!(logs.wait_for_line(&["ready"], Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(300));
    for (path, id, status, level, detail) in [
        (
            "/misbehave/panic",
            "obs-trap",
            500,
            " ERROR request: ",
            "boom: this component always panics",
        ),
        (
            "/misbehave/loop",
            "obs-loop",
            504,
            " WARN request: ",
            "request stopped after 500 ms",
        ),
    ] {
        let before = logs.text().lines().count();
        let reply = berth.request("GET", path, &[("x-request-id", id)], b"");
        assert_eq!(reply.status, status);
        assert!(
            logs.wait_for_line(&[id, "status="], Duration::from_secs(10)),
            "{}",
            logs.text()
        );
        // Anything else the request logged is flushed with or before it.
        std::thread::sleep(Duration::from_millis(300));
        let lines = lines_since(&logs, before);
        assert_eq!(lines.len(), 1, "{path} logged {lines:#?}");
        let line = &lines[0];
        assert!(line.contains(level), "{line}");
        assert!(line.contains(detail), "{line}");
        assert!(line.contains(&format!("request_id={id}")), "{line}");
    }
}

#[test]
fn a_full_disk_logs_a_rate_limited_error_not_one_per_write() {
    let dir = data_dir();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    // A real write failure: the server may grow no file past 1 MiB (its
    // pipes are no files), and ignores SIGXFSZ so the write fails with
    // EFBIG instead of killing it; once SQLite's write-ahead log reaches the
    // cap, every commit fails, as on a full disk.
    let (berth, logs) = Starting::spawn_in_shell(
        "trap '' XFSZ; ulimit -f 1024; exec \"$@\"",
        &dir.path().join("data"),
        &[],
        &[],
    )
    .ready();
    let name = "n".repeat(100 * 1024);
    let body = format!(r#"{{"name":"{name}"}}"#);
    let mut full = false;
    for _ in 0..40 {
        let reply = berth.post("/users", &body);
        if reply.status == 503 {
            full = true;
            break;
        }
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    assert!(full, "writes never failed under a 1 MiB file size limit");
    // The lines of the writes so far are all out.
    std::thread::sleep(Duration::from_millis(300));
    let before = logs.text().lines().count();
    // A bounded burst of writes, every one failing.
    let started = Instant::now();
    let body = Arc::new(body);
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let (addr, body) = (berth.addr, body.clone());
            std::thread::spawn(move || {
                let mut failed = 0;
                for _ in 0..50 {
                    if started.elapsed() > Duration::from_secs(8) {
                        break;
                    }
                    let reply = request_at(
                        addr,
                        "POST",
                        "/users",
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    );
                    assert_eq!(
                        reply.status,
                        503,
                        "{}",
                        String::from_utf8_lossy(&reply.body)
                    );
                    failed += 1;
                }
                failed
            })
        })
        .collect();
    let failed: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(failed >= 100, "only {failed} failed writes in 8 s");
    std::thread::sleep(Duration::from_millis(300));
    let lines = lines_since(&logs, before);
    let errors: Vec<_> = lines.iter().filter(|l| l.contains(" ERROR ")).collect();
    // At most one a 10 s window: the burst spans at most two.
    assert!(
        errors.len() <= 2,
        "{} error lines for {failed} failed writes: {errors:#?}",
        errors.len()
    );
    assert!(
        logs.text()
            .contains("check the disk holding the data directory"),
        "the failing store was never logged:\n{}",
        logs.text()
    );
    // Each failed request still has its one line.
    let requests = lines
        .iter()
        .filter(|l| l.contains(" request: ") && l.contains("status=503"))
        .count();
    assert_eq!(requests, failed, "{lines:#?}");
}
