//! A test-only component whose requests take a while: `GET /slow?ms=N`
//! logs that it started, spins on the monotonic clock for N milliseconds
//! (at most 30 s) and answers 200, so a test can hold a request in flight.

use berth_sdk::http;
use berth_sdk::{Handler, Level, Request, Response, log};
use std::time::{Duration, Instant};

struct Slow;

impl Handler for Slow {
    fn handle(request: Request) -> Response {
        let ms = request
            .query_param("ms")
            .and_then(|ms| ms.parse::<u64>().ok())
            .unwrap_or(1000)
            .min(30_000);
        let started = Instant::now();
        log(Level::Info, &format!("slow request started for {ms} ms"));
        // Busy, not sleeping: the guest has no timer to wait on, and a
        // spinning guest is what the host's drain must wait for.
        while started.elapsed() < Duration::from_millis(ms) {
            std::hint::spin_loop();
        }
        http::json(200, &format!("waited {ms} ms"))
    }
}

berth_sdk::export!(Slow);
