//! The instance pool: sized for every request's call chain and the event
//! worker, so a request that calls another component is not refused (or
//! failed) for want of an instance; past the host's limits, 503, never 500.

use crate::support::{Berth, data_dir, request_at};
use std::time::{Duration, Instant};

#[test]
fn a_request_holding_two_instances_fits_the_pool_and_load_gets_only_503() {
    let dir = data_dir();
    // One request at a time, but POST /orders holds two instances: orders,
    // and users while orders calls it.
    let berth = Berth::start_with(dir.path(), &["--max-in-flight", "1"]);
    let reply = berth.post("/orders", r#"{"user_id": 1}"#);
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    // Concurrent orders: the in-flight cap turns some away, and that is all.
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let addr = berth.addr;
            std::thread::spawn(move || {
                let mut statuses = Vec::new();
                for _ in 0..15 {
                    if started.elapsed() > Duration::from_secs(30) {
                        break;
                    }
                    let reply = request_at(
                        addr,
                        "POST",
                        "/orders",
                        &[("content-type", "application/json")],
                        br#"{"user_id": 2}"#,
                    );
                    if reply.status == 503 {
                        assert_eq!(reply.header("retry-after"), Some("1"));
                    }
                    statuses.push((
                        reply.status,
                        String::from_utf8_lossy(&reply.body).into_owned(),
                    ));
                }
                statuses
            })
        })
        .collect();
    let statuses: Vec<_> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    let bad: Vec<_> = statuses
        .iter()
        .filter(|(status, _)| *status != 201 && *status != 503)
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} answers were neither 201 nor 503: {bad:?}",
        bad.len(),
        statuses.len()
    );
    assert!(statuses.iter().any(|(status, _)| *status == 201));
    let metrics = String::from_utf8(berth.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("berth_traps_total{component=\"users\"} 0"),
        "{metrics}"
    );
}
