//! The handler both versions share. Every answer carries `x-version` and
//! names the version in its body, so a test can tell which one served it.
//!
//! - `GET /swap` (or any other path): `{"version": VERSION}`
//! - `PUT /swap/note` stores the body; `GET /swap/note` returns it, so a
//!   test can check that a swap leaves the component's data alone
//! - `GET /swap/slow?ms=N` answers after N ms of (yielding) work, so a test
//!   can hold a request open across a swap (it logs when it starts)

use berth_sdk::http;
use berth_sdk::{Handler, Level, Request, Response, kv, log};
use std::time::{Duration, Instant};

struct Swap;

impl Handler for Swap {
    fn handle(request: Request) -> Response {
        let response = match (request.method.as_str(), request.path.as_str()) {
            ("PUT", "/swap/note") => match kv::set("note", &request.body) {
                Ok(()) => http::json(200, &serde_json::json!({ "version": crate::VERSION })),
                Err(e) => http::error(503, &format!("{e:?}")),
            },
            ("GET", "/swap/note") => match kv::get("note") {
                Ok(note) => http::json(
                    200,
                    &serde_json::json!({
                        "version": crate::VERSION,
                        "note": note.map(|n| String::from_utf8_lossy(&n).into_owned()),
                    }),
                ),
                Err(e) => http::error(503, &format!("{e:?}")),
            },
            ("GET", "/swap/slow") => {
                let ms = request
                    .query_param("ms")
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or(500);
                // Tells a test, through the host's log, that the request is
                // running on this version.
                log(
                    Level::Info,
                    &format!("slow request started on {}", crate::VERSION),
                );
                let until = Instant::now() + Duration::from_millis(ms);
                while Instant::now() < until {
                    std::hint::black_box(());
                }
                http::json(200, &serde_json::json!({ "version": crate::VERSION }))
            }
            _ => http::json(200, &serde_json::json!({ "version": crate::VERSION })),
        };
        http::with_header(response, "x-version", crate::VERSION)
    }
}

berth_sdk::export!(Swap);
