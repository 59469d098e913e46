//! Users and orders stay exact under races: an order created while its
//! user is deleted never stays pending, and of two concurrent deletes of a
//! user only one succeeds and publishes `user.deleted`.

use crate::rabbitmq::{Transport, metric};
use crate::store_support::created_id;
use crate::support::{Berth, data_dir, eventually, request_at};
use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// The status of order `id`.
fn order_status(addr: SocketAddr, id: u64) -> String {
    let reply = request_at(addr, "GET", &format!("/orders/{id}"), &[], b"");
    assert_eq!(reply.status, 200, "order {id}");
    reply.json()["status"].as_str().unwrap().to_string()
}

#[test]
fn an_order_racing_its_users_deletion_never_stays_pending() {
    order_racing_deletion(&Transport::InProcess);
}

#[test]
fn an_order_racing_its_users_deletion_never_stays_pending_through_a_broker() {
    if let Some(transport) = Transport::broker() {
        order_racing_deletion(&transport);
    }
}

fn order_racing_deletion(transport: &Transport) {
    const ROUNDS: usize = 150;
    let dir = data_dir();
    // Deliveries start within a millisecond, so the `user.deleted` handler
    // often runs between the order's check of the user and its commit.
    let mut args = vec!["--event-poll-ms", "1"];
    args.extend(transport.serve_args());
    let berth = Berth::start_with(dir.path(), &args);
    let addr = berth.addr;
    let mut orders = Vec::new();
    for _ in 0..ROUNDS {
        let user = created_id(&berth.post("/users", r#"{"name":"racer"}"#));
        let barrier = Arc::new(Barrier::new(2));
        let start = barrier.clone();
        let order = std::thread::spawn(move || {
            start.wait();
            let body = format!(r#"{{"user_id":{user}}}"#);
            request_at(
                addr,
                "POST",
                "/orders",
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
        });
        barrier.wait();
        let deleted = berth.delete(&format!("/users/{user}"));
        assert_eq!(deleted.status, 204);
        let order = order.join().unwrap();
        match order.status {
            201 => orders.push((user, created_id(&order))),
            422 => {}
            other => panic!(
                "POST /orders answered {other}: {}",
                String::from_utf8_lossy(&order.body)
            ),
        }
    }
    // Every user is deleted: once their events are handled, none of the
    // orders accepted for them may still be pending.
    let pending = || {
        orders
            .iter()
            .filter(|(_, id)| order_status(addr, *id) == "pending")
            .count()
    };
    let settled = eventually(Duration::from_secs(15), || (pending() == 0).then_some(()));
    assert!(
        settled.is_some(),
        "{} of {} orders accepted in {ROUNDS} races stayed pending after their user was deleted",
        pending(),
        orders.len()
    );
}

#[test]
fn of_two_concurrent_deletes_of_a_user_exactly_one_succeeds() {
    concurrent_deletes(&Transport::InProcess);
}

#[test]
fn of_two_concurrent_deletes_of_a_user_exactly_one_succeeds_through_a_broker() {
    if let Some(transport) = Transport::broker() {
        concurrent_deletes(&transport);
    }
}

fn concurrent_deletes(transport: &Transport) {
    const ROUNDS: usize = 100;
    let dir = data_dir();
    let mut args = vec!["--event-poll-ms", "1"];
    args.extend(transport.serve_args());
    let berth = Berth::start_with(dir.path(), &args);
    let addr = berth.addr;
    let mut doubles = 0;
    for round in 0..ROUNDS {
        let user = created_id(&berth.post("/users", r#"{"name":"twice"}"#));
        let barrier = Arc::new(Barrier::new(2));
        let deletes: Vec<_> = (0..2)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    request_at(addr, "DELETE", &format!("/users/{user}"), &[], b"").status
                })
            })
            .collect();
        let mut statuses: Vec<u16> = deletes.into_iter().map(|d| d.join().unwrap()).collect();
        statuses.sort_unstable();
        if statuses == [204, 204] {
            doubles += 1;
        } else {
            assert_eq!(statuses, [204, 404], "round {round}");
        }
    }
    assert_eq!(doubles, 0, "{doubles} of {ROUNDS} users were deleted twice");
    // One `user.deleted` event per user, delivered to orders once each.
    let delivered = || {
        metric(
            addr,
            "berth_event_deliveries_total",
            &[r#"component="orders""#, r#"outcome="delivered""#],
        )
    };
    let all = eventually(Duration::from_secs(15), || {
        (delivered() >= ROUNDS as u64).then_some(())
    });
    assert!(all.is_some(), "only {} deliveries arrived", delivered());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(delivered(), ROUNDS as u64, "user.deleted events delivered");
}
