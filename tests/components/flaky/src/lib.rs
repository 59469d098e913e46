//! A test-only subscriber. `POST /flaky/publish/TOPIC` publishes an event;
//! on `flaky.twice` the handler refuses the first two deliveries and applies
//! its effect on the third, on `flaky.never` it always refuses. `GET
//! /flaky/state` shows how many deliveries arrived and how many effects
//! were applied, so a test can check "exactly once".

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
                let read = |key: &str| {
                    kv::get(key)
                        .ok()
                        .flatten()
                        .and_then(|v| String::from_utf8(v).ok())
                        .and_then(|s| s.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                let state = [
                    ("deliveries", read("deliveries")),
                    ("effects", read("effects")),
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
            "flaky.never" => Err("never".to_string()),
            _ => {
                // The effect: a buffered write, committed with the acknowledgement.
                let effects = kv::get("effects")
                    .map_err(|e| format!("{e:?}"))?
                    .and_then(|v| String::from_utf8(v).ok())
                    .and_then(|s| s.parse::<u64>().ok())
                    .unwrap_or(0);
                kv::set("effects", (effects + 1).to_string().as_bytes())
                    .map_err(|e| format!("{e:?}"))
            }
        }
    }
}

berth_sdk::export_subscriber!(Flaky);
