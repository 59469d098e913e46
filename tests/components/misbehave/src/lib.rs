//! A hostile component for tests: each path picks a way to misbehave, so one
//! build covers every failure the host must contain.

use berth_sdk::http;
use berth_sdk::services::{self, CallError};
use berth_sdk::{Handler, Level, Request, Response, kv, log};

struct Misbehave;

impl Handler for Misbehave {
    fn handle(request: Request) -> Response {
        let path = request.path.clone();
        match path.as_str() {
            // Calls itself through the host, so the chain only ends at the
            // host's depth limit; the error comes back as a value.
            "/misbehave/call-self" => {
                match services::call("misbehave", &Request::new("GET", "/misbehave/call-self")) {
                    Ok(response) => response,
                    Err(CallError::TooDeep(message)) => http::error(508, &message),
                    Err(other) => http::error(502, &format!("{other:?}")),
                }
            }
            "/misbehave/ok" => {
                log(Level::Info, "all is well");
                http::json(200, &"ok")
            }
            "/misbehave/panic" => panic!("boom: this component always panics"),
            "/misbehave/loop" => loop {
                std::hint::black_box(());
            },
            "/misbehave/memory" => {
                // Keep allocating until the host's memory cap stops us.
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1024 * 1024]);
                    std::hint::black_box(&hoard);
                }
            }
            "/misbehave/recurse" => {
                let depth = recurse(std::hint::black_box(1));
                http::json(200, &depth)
            }
            "/misbehave/big" => Response {
                status: 200,
                headers: Vec::new(),
                body: vec![b'x'; 100 * 1024 * 1024],
            },
            // A large answer of `n` bytes, for clients that never read it.
            "/misbehave/bytes" => Response {
                status: 200,
                headers: Vec::new(),
                body: vec![
                    b'x';
                    request
                        .query_param("n")
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                ],
            },
            "/misbehave/hammer" => loop {
                let _ = kv::set("hammer", b"x");
                let _ = kv::get("hammer");
            },
            // Eight values of 300 KB, for the read caps below.
            "/misbehave/fill" => {
                for i in 0..8 {
                    if let Err(e) = kv::set(&format!("blob/{i}"), &vec![b'b'; 300 * 1024]) {
                        return http::error(500, &format!("{e:?}"));
                    }
                }
                http::json(200, &"filled")
            }
            // Scans the blobs over and over, as a greedy listing would, and
            // reports the largest page and how much it read before the store
            // said no.
            "/misbehave/read-everything" => read_everything(),
            // Standing in for a broken users service in cross-service tests.
            users if users.starts_with("/users") => panic!("users is down"),
            _ => http::error(404, "unknown misbehaviour"),
        }
    }
}

fn read_everything() -> Response {
    let (mut total, mut largest_page) = (0usize, 0usize);
    let mut error = None;
    'reading: while total < 64 * 1024 * 1024 {
        let mut after: Option<String> = None;
        loop {
            match kv::scan("blob/", after.as_deref(), 1000) {
                Ok(page) if page.is_empty() => break,
                Ok(page) => {
                    let bytes: usize = page.iter().map(|e| e.key.len() + e.value.len()).sum();
                    total += bytes;
                    largest_page = largest_page.max(bytes);
                    after = page.last().map(|e| e.key.clone());
                }
                Err(e) => {
                    error = Some(format!("{e:?}"));
                    break 'reading;
                }
            }
        }
    }
    let error = error.map_or("null".to_string(), |e| format!("{e:?}"));
    Response {
        status: 200,
        headers: Vec::new(),
        body: format!(r#"{{"read":{total},"largest_page":{largest_page},"error":{error}}}"#)
            .into_bytes(),
    }
}

fn recurse(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 64]);
    if frame[0] == 0 {
        0
    } else {
        recurse(frame[1] + 1) + 1
    }
}

berth_sdk::export!(Misbehave);
