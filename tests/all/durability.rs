//! What is acknowledged stays: restarts, crashes and concurrent writers.

use crate::support::{Berth, data_dir};
use std::collections::BTreeSet;

#[test]
fn data_survives_a_restart() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    assert_eq!(berth.post("/users", r#"{"name":"Ann"}"#).status, 201);
    assert_eq!(
        berth
            .send_json("PATCH", "/orders/1", r#"{"status":"cancelled"}"#)
            .status,
        200
    );
    let status = berth.terminate();
    assert!(status.success(), "berth exited with {status}");

    let berth = Berth::start(dir.path());
    assert_eq!(berth.get("/users/3").json()["name"], "Ann");
    assert_eq!(berth.get("/orders/1").json()["status"], "cancelled");
    assert_eq!(berth.post("/users", r#"{"name":"Bob"}"#).json()["id"], 4);
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let mut ids = Vec::new();
    for i in 0..20 {
        let reply = berth.post("/users", &format!(r#"{{"name":"u{i}"}}"#));
        assert_eq!(reply.status, 201);
        ids.push(reply.json()["id"].as_u64().unwrap());
    }
    berth.kill();

    let berth = Berth::start(dir.path());
    for id in ids {
        assert_eq!(
            berth.get(&format!("/users/{id}")).status,
            200,
            "user {id} was lost"
        );
    }
}

#[test]
fn concurrent_creates_get_distinct_ids_and_all_are_listed() {
    const WRITERS: usize = 200;
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let ids: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|i| {
                let berth = &berth;
                scope.spawn(move || {
                    // 200 at once is past the component's concurrency cap
                    // (128): a refused writer retries, as Retry-After asks.
                    let mut reply = berth.post("/users", &format!(r#"{{"name":"writer {i}"}}"#));
                    for _ in 0..100 {
                        if reply.status != 503 || reply.header("retry-after").is_none() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(20));
                        reply = berth.post("/users", &format!(r#"{{"name":"writer {i}"}}"#));
                    }
                    assert_eq!(
                        reply.status,
                        201,
                        "{}",
                        String::from_utf8_lossy(&reply.body)
                    );
                    reply.json()["id"].as_u64().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), WRITERS, "duplicate ids: {ids:?}");
    assert!(distinct.iter().all(|id| *id > 2), "a sample id was reused");
    let listed: BTreeSet<u64> = berth
        .list_all("/users")
        .iter()
        .map(|u| u["id"].as_u64().unwrap())
        .collect();
    assert!(
        distinct.is_subset(&listed),
        "created users missing from the list"
    );
    assert_eq!(listed.len(), WRITERS + 2);
}

#[test]
fn concurrent_inserts_of_one_id_let_exactly_one_win() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let berth = &berth;
                scope.spawn(move || {
                    berth
                        .post("/users", &format!(r#"{{"id": 500, "name":"racer {i}"}}"#))
                        .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        15,
        "{statuses:?}"
    );
}
