//! Commits wait for SQLite's write lock (on the busy timeout) instead of
//! failing with "database is locked" when another connection holds it.

use crate::store_support::created_id;
use crate::support::{Berth, data_dir, request_at};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[test]
fn writes_wait_for_the_lock_instead_of_failing_with_database_is_locked() {
    const WRITERS: usize = 8;
    const WRITES_EACH: usize = 500;
    const LIMIT: Duration = Duration::from_secs(120);
    const MIN_HELD: usize = 100;
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let addr = berth.addr;
    created_id(&berth.post("/users", r#"{"name":"first"}"#));
    // Another connection takes the write lock for a millisecond every few,
    // as `berth dead-letters retry` beside a running server does, and as a
    // reader rebuilding the WAL index does for an instant under load. The
    // server's commits must wait for it, not fail.
    let started = Instant::now();
    let writing = Arc::new(AtomicUsize::new(WRITERS));
    // How often the side connection has held the lock: the writers go on
    // past their quota until it has held it often enough to have met
    // their commits, however fast they are.
    let held = Arc::new(AtomicUsize::new(0));
    let side = {
        let writing = writing.clone();
        let held = held.clone();
        let db = dir.path().join("berth.db");
        std::thread::spawn(move || {
            let mut conn = rusqlite::Connection::open(db).unwrap();
            // Take the lock whenever it is free, rather than queueing
            // behind the server's busy writer.
            conn.busy_timeout(Duration::ZERO).unwrap();
            while writing.load(Ordering::Relaxed) > 0 && started.elapsed() < LIMIT {
                let Ok(tx) =
                    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                else {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                };
                std::thread::sleep(Duration::from_millis(1));
                tx.commit().unwrap();
                held.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(4));
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let writing = writing.clone();
            let held = held.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut done = 0;
                for i in 0.. {
                    let enough = i >= WRITES_EACH && held.load(Ordering::Relaxed) > MIN_HELD;
                    if enough || started.elapsed() > LIMIT {
                        break;
                    }
                    let body = format!(r#"{{"name":"w{w}-{i}"}}"#);
                    let reply = request_at(
                        addr,
                        "POST",
                        "/users",
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    );
                    done += 1;
                    if reply.status != 201 {
                        failures.push(format!(
                            "{} {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        ));
                    }
                }
                writing.fetch_sub(1, Ordering::Relaxed);
                (done, failures)
            })
        })
        .collect();
    let mut done = 0;
    let mut failures = Vec::new();
    for writer in writers {
        let (n, f) = writer.join().unwrap();
        done += n;
        failures.extend(f);
    }
    side.join().unwrap();
    let held = held.load(Ordering::Relaxed);
    let locked = failures
        .iter()
        .filter(|f| f.contains("database is locked"))
        .count();
    assert!(
        failures.is_empty(),
        "{} of {done} writes failed ({locked} with \"database is locked\"), first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(
        done >= WRITERS * WRITES_EACH && held > MIN_HELD,
        "the load did not finish within {LIMIT:?}: {done} writes, the side connection held the lock {held} times"
    );
}
