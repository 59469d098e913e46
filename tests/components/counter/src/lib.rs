//! A test-only component with state in its globals, which survives only in
//! a reused instance. Every path counts the request first, then:
//!
//! - `GET /counter`: answers `{"count": N}`, the requests this instance saw
//! - `GET /counter/panic`: traps
//! - `GET /counter/loop`: spins until the host's deadline stops it
//! - `GET /counter/hoard?mb=N`: keeps N more MiB in a global and answers
//!   `{"count": N, "hoarded_mb": M}`, so a test can see the memory cap
//!   hold across the requests of one instance
//! - `GET /counter/print`: writes `request N` to stderr and answers

use berth_sdk::http;
use berth_sdk::{Handler, Header, Request, Response};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Requests this instance has handled, this one included.
static COUNT: AtomicU64 = AtomicU64::new(0);
/// Memory kept across requests by `/counter/hoard`.
static HOARD: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

struct Counter;

impl Handler for Counter {
    fn handle(request: Request) -> Response {
        let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        match request.path.as_str() {
            "/counter/panic" => panic!("counter trap on request {count}"),
            "/counter/loop" => loop {
                std::hint::black_box(());
            },
            "/counter/hoard" => {
                let mb: usize = request
                    .query_param("mb")
                    .and_then(|mb| mb.parse().ok())
                    .unwrap_or(1);
                let mut hoard = HOARD.lock().unwrap_or_else(|e| e.into_inner());
                for _ in 0..mb {
                    hoard.push(vec![1u8; 1024 * 1024]);
                }
                answer(format!(
                    r#"{{"count":{count},"hoarded_mb":{}}}"#,
                    hoard.len()
                ))
            }
            "/counter/print" => {
                eprintln!("request {count}");
                http::json(200, &count)
            }
            _ => answer(format!(r#"{{"count":{count}}}"#)),
        }
    }
}

/// A 200 with `json` as its body.
fn answer(json: String) -> Response {
    Response {
        status: 200,
        headers: vec![Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        body: json.into_bytes(),
    }
}

berth_sdk::export!(Counter);
