// The service itself, shared by `flaky` and `flaky-fixed`, which differ
// only in `FIXED` (an included file cannot hold the crate's `//!` docs).

use berth_sdk::http;
use berth_sdk::{Event, Handler, Request, Response, Subscriber, events, kv};

struct Flaky;

impl Handler for Flaky {
    fn handle(request: Request) -> Response {
        let segments = request.segments();
        match (request.method.as_str(), segments.as_slice()) {
            ("POST", ["flaky", "publish", topic]) => match events::publish(topic, "{\"n\":1}") {
                Ok(()) => http::json(202, &"published"),
                Err(e) => http::error(403, &format!("{e:?}")),
            },
            ("GET", ["flaky", "state"]) => {
                let deliveries = kv::get("deliveries")
                    .ok()
                    .flatten()
                    .as_deref()
                    .map_or(0, number);
                let (events, effects) = match applied() {
                    Ok(counts) => counts,
                    Err(e) => return http::error(500, &e),
                };
                let state = [
                    ("deliveries", deliveries),
                    ("effects", effects),
                    ("events", events),
                ];
                http::json(200, &std::collections::BTreeMap::from(state))
            }
            _ => http::error(404, "unknown flaky route"),
        }
    }
}

impl Subscriber for Flaky {
    fn on_event(event: Event) -> Result<(), String> {
        // Counted at once and never rolled back, unlike the effect below.
        kv::increment("deliveries", 1).map_err(|e| format!("{e:?}"))?;
        match event.topic.as_str() {
            "flaky.twice" if event.attempt < 3 => {
                Err(format!("not yet (attempt {})", event.attempt))
            }
            "flaky.never" if !FIXED => Err("never".to_string()),
            "flaky.slow" => {
                // Holds the in-process delivery worker (which delivers one
                // event at a time) for five seconds, so a test can crash the
                // host while later events wait. Busy, not sleeping: the
                // guest has no timer to wait on.
                let started = std::time::Instant::now();
                while started.elapsed() < std::time::Duration::from_secs(5) {
                    std::hint::spin_loop();
                }
                Ok(())
            }
            _ => {
                // The effect: one more application of this event, a
                // buffered write committed with the acknowledgement. The
                // compare-and-swap makes two concurrent applications of one
                // event conflict, so a duplicate shows as a count of 2.
                let key = format!("effect/{}", event.id);
                let current = kv::get(&key).map_err(|e| format!("{e:?}"))?;
                let count = current.as_deref().map_or(0, number);
                kv::compare_and_swap(&key, current.as_deref(), (count + 1).to_string().as_bytes())
                    .map_err(|e| format!("{e:?}"))
                    .map(drop)
            }
        }
    }
}

/// A counter's value as stored (decimal text); 0 if it is not one.
fn number(raw: &[u8]) -> u64 {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// How many events were applied, and how many applications there were in
/// all: equal unless some event was applied more than once.
fn applied() -> Result<(u64, u64), String> {
    let (mut events, mut effects) = (0, 0);
    let mut after: Option<String> = None;
    loop {
        let page = kv::scan("effect/", after.as_deref(), 1000).map_err(|e| format!("{e:?}"))?;
        let Some(last) = page.last() else {
            return Ok((events, effects));
        };
        after = Some(last.key.clone());
        for entry in &page {
            events += 1;
            effects += number(&entry.value);
        }
    }
}

berth_sdk::export_subscriber!(Flaky);
