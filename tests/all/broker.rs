//! Events over RabbitMQ (`--broker`): two replicas on one PostgreSQL
//! database and one broker behave as one service. Each test gets its own
//! database and its own virtual host; the test that stops the broker gets a
//! node of its own. Every test prints what it counted (events published,
//! delivered, applied, duplicated effects, lost) on one `counts:` line.

use crate::pg::{Database, Replica, body_text, run_to_exit, try_get, try_post};
use crate::rabbitmq::{Broker, Vhost, metric};
use crate::store_support::created_id;
use crate::support::{BERTH, Berth, data_dir, eventually, test_wasm, write_file};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Start replicas A and B on `db` and `broker`, with `extra` flags.
fn start_pair(db: &str, broker: &str, work: &Path, extra: &[&str]) -> (Replica, Replica) {
    let mut args = vec!["--broker", broker];
    args.extend_from_slice(extra);
    std::thread::scope(|s| {
        let a = s.spawn(|| Replica::start("A", db, &work.join("cache-a"), &args));
        let b = s.spawn(|| Replica::start("B", db, &work.join("cache-b"), &args));
        let a = a.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        let b = b.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (a, b)
    })
}

/// A manifest serving the flaky subscriber, on the topics it knows.
fn flaky_manifest(dir: &Path) -> std::path::PathBuf {
    write_file(
        dir,
        "berth.toml",
        &format!(
            "[components.flaky]\nwasm = {:?}\nroutes = [\"/flaky\"]\n\
             publishes = [\"flaky.twice\", \"flaky.never\", \"flaky.ok\"]\n\
             subscribes = [\"flaky.twice\", \"flaky.never\", \"flaky.ok\"]\n",
            test_wasm("flaky")
        ),
    )
}

/// Two replicas serving the flaky subscriber, on a database and a vhost of
/// their own. Fields drop in order: the replicas before what they use.
struct FlakyPair {
    a: Replica,
    b: Replica,
    vhost: Vhost,
    manifest: String,
    _db: Database,
    _work: tempfile::TempDir,
}

impl FlakyPair {
    /// With `extra` flags; `None` when the test is to be skipped.
    fn start(extra: &[&str]) -> Option<FlakyPair> {
        let db = Database::fresh()?;
        let vhost = Vhost::fresh()?;
        let work = data_dir();
        let manifest = flaky_manifest(work.path()).to_str().unwrap().to_string();
        let mut args = vec!["--manifest", manifest.as_str()];
        args.extend_from_slice(extra);
        let (a, b) = start_pair(&db.url, &vhost.url, work.path(), &args);
        Some(FlakyPair {
            a,
            b,
            vhost,
            manifest,
            _db: db,
            _work: work,
        })
    }
}

/// What the flaky subscriber counted: deliveries (every run), events
/// applied, and applications in all (more than events if one was applied
/// twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlakyState {
    deliveries: u64,
    events: u64,
    effects: u64,
}

fn flaky_state(addr: SocketAddr) -> FlakyState {
    let reply = try_get(addr, "/flaky/state").expect("GET /flaky/state");
    assert_eq!(reply.status, 200, "{}", body_text(&reply));
    let state = reply.json();
    let n = |k: &str| {
        state[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {state}"))
    };
    FlakyState {
        deliveries: n("deliveries"),
        events: n("events"),
        effects: n("effects"),
    }
}

/// Wait up to `limit` until `waiter` has applied `events` events, give a
/// stray redelivery half a second to show, then read the counts through
/// `reader` (the other replica, or the same one). `what` names the wait in
/// the failure message.
fn applied_then_settled(
    waiter: SocketAddr,
    reader: SocketAddr,
    events: u64,
    limit: Duration,
    what: &str,
) -> FlakyState {
    eventually(limit, || {
        (flaky_state(waiter).events == events).then_some(())
    })
    .unwrap_or_else(|| panic!("{what}: {:?}", flaky_state(waiter)));
    // Not a readiness wait: a duplicate would arrive after the last
    // original, and this is the window in which the counts would show it.
    std::thread::sleep(Duration::from_millis(500));
    flaky_state(reader)
}

fn publish(addr: SocketAddr, topic: &str) -> Result<(), String> {
    match try_post(addr, &format!("/flaky/publish/{topic}"), "") {
        Ok(r) if r.status == 202 => Ok(()),
        Ok(r) => Err(format!("{} {}", r.status, body_text(&r))),
        Err(e) => Err(e),
    }
}

/// A counter summed over both replicas.
fn total(replicas: &[SocketAddr], family: &str, labels: &[&str]) -> u64 {
    replicas.iter().map(|&a| metric(a, family, labels)).sum()
}

/// The admin API's dead letters on `replica`.
fn admin_dead_letters(replica: &Replica) -> Vec<Value> {
    let reply = replica.admin("GET", "/dead-letters", b"");
    assert_eq!(reply.status, 200, "{}", body_text(&reply));
    reply.json().as_array().expect("an array").clone()
}

#[test]
fn a_user_deleted_through_one_replica_has_their_orders_cancelled_once() {
    const USERS: usize = 20;
    let Some(db) = Database::fresh() else { return };
    let Some(vhost) = Vhost::fresh() else { return };
    let work = data_dir();
    let (a, b) = start_pair(&db.url, &vhost.url, work.path(), &[]);
    let addrs = [a.addr(), b.addr()];
    let mut orders = Vec::new();
    for i in 0..USERS {
        let via = &[&a, &b][i % 2].berth;
        let user = created_id(&via.post("/users", &format!(r#"{{"name":"u{i}"}}"#)));
        let reply = via.post("/orders", &format!(r#"{{"user_id": {user}}}"#));
        assert_eq!(reply.status, 201, "{}", body_text(&reply));
        orders.push((user, reply.json()["id"].as_u64().expect("an order id")));
    }
    for (user, _) in &orders {
        let reply = a.berth.delete(&format!("/users/{user}"));
        assert_eq!(reply.status, 204, "{}", body_text(&reply));
    }
    // Read through B: whichever replica consumed, the effect is shared.
    let pending = || {
        orders
            .iter()
            .filter(|(_, order)| {
                b.berth.get(&format!("/orders/{order}")).json()["status"] != "cancelled"
            })
            .count()
    };
    eventually(Duration::from_secs(30), || (pending() == 0).then_some(()))
        .unwrap_or_else(|| panic!("{} orders still not cancelled after 30 s", pending()));
    // Give a stray redelivery time to show, then count.
    std::thread::sleep(Duration::from_millis(500));
    let published = total(&addrs, "berth_events_published_total", &[]);
    let delivered = total(
        &addrs,
        "berth_event_deliveries_total",
        &["component=\"orders\"", "outcome=\"delivered\""],
    );
    let duplicates = total(
        &addrs,
        "berth_event_deliveries_total",
        &["outcome=\"duplicate\""],
    );
    let by_replica: Vec<u64> = addrs
        .iter()
        .map(|&r| {
            metric(
                r,
                "berth_event_deliveries_total",
                &["component=\"orders\"", "outcome=\"delivered\""],
            )
        })
        .collect();
    eprintln!(
        "counts: users deleted {USERS}, events published {published}, applied {delivered} (A {}, B {}), redeliveries acknowledged unapplied {duplicates}, lost {}",
        by_replica[0],
        by_replica[1],
        USERS as u64 - delivered.min(USERS as u64)
    );
    assert_eq!(
        published, USERS as u64,
        "one event per deleted user reached the broker"
    );
    assert_eq!(delivered, USERS as u64, "each event applied exactly once");
}

#[test]
fn a_subscriber_that_fails_twice_gets_three_deliveries_and_one_effect() {
    const EVENTS: u64 = 10;
    let Some(pair) = FlakyPair::start(&["--event-backoff-ms", "20"]) else {
        return;
    };
    let (a, b) = (&pair.a, &pair.b);
    for i in 0..EVENTS {
        publish([a.addr(), b.addr()][i as usize % 2], "flaky.twice").unwrap();
    }
    let state = applied_then_settled(
        a.addr(),
        b.addr(),
        EVENTS,
        Duration::from_secs(30),
        "not every event applied",
    );
    let addrs = [a.addr(), b.addr()];
    let retried = total(
        &addrs,
        "berth_event_deliveries_total",
        &["outcome=\"retried\""],
    );
    eprintln!(
        "counts: published {EVENTS}, deliveries {}, retried {retried}, applied {}, duplicated effects {}, lost {}",
        state.deliveries,
        state.events,
        state.effects - state.events,
        EVENTS - state.events
    );
    assert_eq!(
        state,
        FlakyState {
            deliveries: 3 * EVENTS,
            events: EVENTS,
            effects: EVENTS
        }
    );
    assert_eq!(retried, 2 * EVENTS, "two retries per event");
    assert!(admin_dead_letters(a).is_empty());
}

#[test]
fn a_dead_lettered_event_is_applied_once_when_retried_after_a_fix() {
    let Some(pair) = FlakyPair::start(&["--event-backoff-ms", "20", "--event-max-attempts", "3"])
    else {
        return;
    };
    let (a, b, vhost, manifest) = (&pair.a, &pair.b, &pair.vhost, pair.manifest.as_str());
    publish(a.addr(), "flaky.never").unwrap();
    publish(b.addr(), "flaky.never").unwrap();
    let dead = eventually(Duration::from_secs(30), || {
        let dead = admin_dead_letters(b);
        (dead.len() == 2).then_some(dead)
    })
    .expect("two dead letters within 30 s");
    for letter in &dead {
        assert_eq!(letter["recipient"], "flaky", "{letter}");
        assert_eq!(letter["topic"], "flaky.never", "{letter}");
        assert_eq!(letter["attempts"], 3, "{letter}");
        assert_eq!(letter["last_error"], "never", "{letter}");
        assert_eq!(letter["payload"], r#"{"n":1}"#, "{letter}");
    }
    // The command line sees the same dead letters on the broker.
    let listed = cli(&[
        "dead-letters",
        "list",
        "--broker",
        &vhost.url,
        "--manifest",
        manifest,
    ]);
    let listed: Vec<Value> = serde_json::from_str(&listed).expect("a JSON array");
    let ids = |letters: &[Value]| {
        let mut ids: Vec<String> = letters
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&listed), ids(&dead));
    assert_eq!(
        flaky_state(a.addr()),
        FlakyState {
            deliveries: 6,
            events: 0,
            effects: 0
        }
    );

    // The fix, hot-swapped in through A, reaches B too.
    let fixed = std::fs::read(test_wasm("flaky_fixed")).expect("the fixed build");
    let reply = a.admin("PUT", "/components/flaky", &fixed);
    assert_eq!(reply.status, 200, "{}", body_text(&reply));
    let version = reply.json()["version"]
        .as_str()
        .expect("a version")
        .to_string();
    eventually(Duration::from_secs(10), || {
        (b.component("flaky")["version"] == version.as_str()).then_some(())
    })
    .expect("B runs the fix within 10 s");

    // One retried through B's admin API, one through the command line.
    let first = dead[0]["id"].as_str().unwrap();
    let reply = b.admin("POST", &format!("/dead-letters/{first}/retry"), b"");
    assert_eq!(reply.status, 200, "{}", body_text(&reply));
    let second = dead[1]["id"].as_str().unwrap();
    let said = cli(&[
        "dead-letters",
        "retry",
        second,
        "--broker",
        &vhost.url,
        "--manifest",
        manifest,
    ]);
    assert!(said.contains("queued again"), "{said}");
    // A retried id is gone: retrying it again is a 404.
    let again = b.admin("POST", &format!("/dead-letters/{first}/retry"), b"");
    assert_eq!(again.status, 404, "{}", body_text(&again));

    let state = applied_then_settled(
        a.addr(),
        b.addr(),
        2,
        Duration::from_secs(30),
        "the retried events were not applied",
    );
    eprintln!(
        "counts: published 2, dead-lettered 2 after 3 attempts each, retried 2, deliveries {}, applied {}, duplicated effects {}, lost {}",
        state.deliveries,
        state.events,
        state.effects - state.events,
        2 - state.events
    );
    assert_eq!(
        state,
        FlakyState {
            deliveries: 8,
            events: 2,
            effects: 2
        }
    );
    assert!(admin_dead_letters(a).is_empty());
}

#[test]
fn events_are_applied_exactly_once_when_the_consuming_replica_is_killed() {
    const EVENTS: usize = 300;
    let Some(mut pair) =
        FlakyPair::start(&["--event-max-attempts", "50", "--event-backoff-ms", "20"])
    else {
        return;
    };
    let (a, b) = (pair.a.addr(), pair.b.addr());
    // Published through A only, steadily, while both consume; B is killed
    // in the middle, holding events: the broker hands those it had not
    // acknowledged to A.
    let publisher = std::thread::spawn(move || {
        for n in 0..EVENTS {
            if let Err(e) = publish(a, "flaky.ok") {
                return Err(format!("publish {n}: {e}"));
            }
        }
        Ok(EVENTS)
    });
    eventually(Duration::from_secs(20), || {
        (metric(
            b,
            "berth_event_deliveries_total",
            &["outcome=\"delivered\""],
        ) >= 30)
            .then_some(())
    })
    .expect("B applied events before the kill");
    let b_applied = metric(
        b,
        "berth_event_deliveries_total",
        &["outcome=\"delivered\""],
    );
    // SIGKILL, as a crash would.
    let _ = pair.b.berth.child.kill();
    let _ = pair.b.berth.child.wait();
    let published = publisher
        .join()
        .expect("the publisher")
        .expect("every publish accepted");
    let state = applied_then_settled(
        a,
        a,
        EVENTS as u64,
        Duration::from_secs(60),
        "not every event applied after B died",
    );
    let a_applied = metric(
        a,
        "berth_event_deliveries_total",
        &["outcome=\"delivered\""],
    );
    let duplicates = metric(
        a,
        "berth_event_deliveries_total",
        &["outcome=\"duplicate\""],
    );
    eprintln!(
        "counts: published {published}, applied by B up to its SIGKILL at least {b_applied}, applied by A {a_applied}, redeliveries acknowledged unapplied {duplicates}, deliveries {}, applied {}, duplicated effects {}, lost {}",
        state.deliveries,
        state.events,
        state.effects - state.events,
        EVENTS as u64 - state.events
    );
    assert_eq!(state.events, EVENTS as u64, "no event lost");
    assert_eq!(state.effects, EVENTS as u64, "no event applied twice");
}

#[test]
fn writes_go_on_while_the_broker_is_down_and_their_events_flow_after() {
    const BEFORE: usize = 20;
    const DURING: usize = 60;
    let Some(db) = Database::fresh() else { return };
    let Some(broker) = Broker::start() else {
        return;
    };
    let work = data_dir();
    let manifest = flaky_manifest(work.path());
    let (a, b) = start_pair(
        &db.url,
        &broker.url,
        work.path(),
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--event-backoff-ms",
            "20",
        ],
    );
    let addrs = [a.addr(), b.addr()];
    for i in 0..BEFORE {
        publish(addrs[i % 2], "flaky.ok").unwrap();
    }
    eventually(Duration::from_secs(30), || {
        (flaky_state(a.addr()).events == BEFORE as u64).then_some(())
    })
    .expect("events applied before the broker stops");

    broker.stop();
    // Both replicas notice, and stay ready: writes do not need the broker.
    for replica in [&a, &b] {
        let down = eventually(Duration::from_secs(20), || {
            let reply = try_get(replica.addr(), "/readyz").ok()?;
            let said = reply.json()["broker"].as_str().unwrap_or("").to_string();
            (reply.status == 200 && said.starts_with("down")).then_some(said)
        });
        assert!(
            down.is_some(),
            "{}: /readyz never said the broker is down",
            replica.name
        );
    }
    for i in 0..DURING {
        publish(addrs[i % 2], "flaky.ok")
            .unwrap_or_else(|e| panic!("a write failed while the broker was down: {e}"));
    }
    let backlog = eventually(Duration::from_secs(10), || {
        let waiting = metric(a.addr(), "berth_outbox_backlog", &[]);
        (waiting > 0).then_some(waiting)
    })
    .expect("the outbox backlog shows the waiting events");
    broker.resume();
    let state = applied_then_settled(
        a.addr(),
        b.addr(),
        (BEFORE + DURING) as u64,
        Duration::from_secs(60),
        "events did not flow after the broker came back",
    );
    eprintln!(
        "counts: published {} ({DURING} while the broker was down, backlog seen {backlog}), applied {}, duplicated effects {}, lost {}, failed writes 0",
        BEFORE + DURING,
        state.events,
        state.effects - state.events,
        (BEFORE + DURING) as u64 - state.events
    );
    assert_eq!(state.effects, state.events, "no event applied twice");
    for replica in [&a, &b] {
        assert_eq!(
            try_get(replica.addr(), "/readyz").unwrap().json(),
            json!({"status": "ready", "broker": "connected"}),
            "{}",
            replica.name
        );
    }
}

#[test]
fn one_replica_on_sqlite_with_a_broker_runs_the_saga_and_retries() {
    let Some(vhost) = Vhost::fresh() else { return };
    let dir = data_dir();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        &format!(
            "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\npublishes = [\"user.deleted\"]\n\n\
             [components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/orders\"]\ncalls = [\"users\"]\nsubscribes = [\"user.deleted\"]\n\n\
             [components.flaky]\nwasm = {:?}\nroutes = [\"/flaky\"]\n\
             publishes = [\"flaky.twice\"]\nsubscribes = [\"flaky.twice\"]\n",
            test_wasm("flaky")
        ),
    );
    let berth = Berth::start_with(
        &dir.path().join("data"),
        &[
            "--manifest",
            manifest.to_str().unwrap(),
            "--broker",
            &vhost.url,
            "--event-backoff-ms",
            "20",
        ],
    );
    let ann = created_id(&berth.post("/users", r#"{"name":"Ann"}"#));
    let order = berth
        .post("/orders", &format!(r#"{{"user_id": {ann}}}"#))
        .json()["id"]
        .as_u64()
        .unwrap();
    assert_eq!(berth.delete(&format!("/users/{ann}")).status, 204);
    publish(berth.addr, "flaky.twice").unwrap();
    eventually(Duration::from_secs(30), || {
        let cancelled = berth.get(&format!("/orders/{order}")).json()["status"] == "cancelled";
        (cancelled && flaky_state(berth.addr).events == 1).then_some(())
    })
    .expect("the saga and the retried event both completed");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        flaky_state(berth.addr),
        FlakyState {
            deliveries: 3,
            events: 1,
            effects: 1
        }
    );
    assert_eq!(
        berth.get("/orders/1").json()["status"],
        "pending",
        "other users' orders untouched"
    );
    let readyz = berth.get("/readyz").json();
    assert_eq!(readyz["broker"], "connected", "{readyz}");
}

/// Run the berth command line to success; its stdout.
fn cli(args: &[&str]) -> String {
    let output = Command::new(BERTH)
        .args(args)
        .output()
        .expect("running berth");
    assert!(
        output.status.success(),
        "berth {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_malformed_broker_url_stops_start_up_and_an_unreachable_broker_does_not() {
    // No broker needed: one URL is wrong, the other names a closed port.
    let dir = data_dir();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = run_to_exit(
        &[
            "--data",
            data,
            "--broker",
            "amqp://berth:s3cret@127.0.0.1:notaport/berth",
        ],
        &[],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not an AMQP URL"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "the password leaked: {stderr}");
    let out = run_to_exit(
        &[
            "--data",
            data,
            "--broker",
            "http://berth:s3cret@127.0.0.1/berth",
        ],
        &[],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the scheme must be amqp or amqps"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "the password leaked: {stderr}");

    // Port 1 on loopback: nothing listens there.
    let (berth, logs) = Berth::start_logged(
        dir.path(),
        &["--broker", "amqp://berth:s3cret@127.0.0.1:1/berth"],
        &[],
    );
    let reply = berth.post("/users", r#"{"name":"Ann"}"#);
    assert_eq!(reply.status, 201, "writes go on without the broker");
    let said = eventually(Duration::from_secs(10), || {
        let reply = berth.get("/readyz");
        let said = reply.json()["broker"].as_str()?.to_string();
        (reply.status == 200
            && said
                .starts_with("down: cannot reach the broker at amqp://berth:***@127.0.0.1:1/berth"))
        .then_some(said)
    })
    .expect("/readyz says why the broker is down");
    assert!(!said.contains("s3cret"), "{said}");
    assert!(
        !logs.text().contains("s3cret"),
        "the password reached the log"
    );
    assert!(
        berth
            .get("/metrics")
            .body
            .windows(20)
            .any(|w| w == b"berth_outbox_backlog")
    );
}

/// `(queue, topic)` of every binding from `berth.events`, sorted.
fn bindings(vhost: &Vhost) -> Vec<(String, String)> {
    let listed = vhost.ctl(
        "list_bindings",
        &[
            "--no-table-headers",
            "source_name",
            "destination_name",
            "routing_key",
        ],
    );
    let mut bound: Vec<(String, String)> = listed
        .lines()
        .filter_map(|line| {
            let mut fields = line.split('\t');
            let source = fields.next()?;
            let queue = fields.next()?;
            let topic = fields.next()?;
            (source == "berth.events").then(|| (queue.to_string(), topic.to_string()))
        })
        .collect();
    bound.sort();
    bound
}

#[test]
fn the_topology_follows_the_manifest() {
    let Some(vhost) = Vhost::fresh() else { return };
    let dir = data_dir();
    let data = dir.path().join("data");
    let manifest = flaky_manifest(dir.path());
    let serve = |manifest: &Path| {
        Berth::start_with(
            &data,
            &[
                "--manifest",
                manifest.to_str().unwrap(),
                "--broker",
                &vhost.url,
            ],
        )
    };
    let connected = |berth: &Berth| {
        eventually(Duration::from_secs(20), || {
            (berth.get("/readyz").json()["broker"] == "connected").then_some(())
        })
        .expect("connected to the broker");
    };
    // Before any server declared its queues, there are no dead letters
    // (rather than an error about a missing queue).
    let listed = cli(&[
        "dead-letters",
        "list",
        "--broker",
        &vhost.url,
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), json!([]));
    let berth = serve(&manifest);
    connected(&berth);
    let queue = |topic: &str| ("berth.flaky".to_string(), topic.to_string());
    assert_eq!(
        bindings(&vhost),
        vec![
            queue("flaky.never"),
            queue("flaky.ok"),
            queue("flaky.twice")
        ]
    );
    let queues = vhost.ctl(
        "list_queues",
        &["--no-table-headers", "name", "type", "durable"],
    );
    let mut queues: Vec<&str> = queues.lines().collect();
    queues.sort();
    // The default backoff (200 ms, doubled, five attempts) waits 200, 400,
    // 800 and 1600 ms.
    assert_eq!(
        queues,
        [
            "berth.flaky\tquorum\ttrue",
            "berth.flaky.dead\tclassic\ttrue",
            "berth.flaky.retry.1600ms\tclassic\ttrue",
            "berth.flaky.retry.200ms\tclassic\ttrue",
            "berth.flaky.retry.400ms\tclassic\ttrue",
            "berth.flaky.retry.800ms\tclassic\ttrue",
        ]
    );
    berth.terminate();

    // The next start subscribes to one topic fewer: it is unbound.
    let fewer = write_file(
        dir.path(),
        "fewer.toml",
        &format!(
            "[components.flaky]\nwasm = {:?}\nroutes = [\"/flaky\"]\n\
             publishes = [\"flaky.twice\", \"flaky.ok\"]\nsubscribes = [\"flaky.twice\", \"flaky.ok\"]\n",
            test_wasm("flaky")
        ),
    );
    let berth = serve(&fewer);
    connected(&berth);
    assert_eq!(
        bindings(&vhost),
        vec![queue("flaky.ok"), queue("flaky.twice")]
    );
    berth.terminate();

    // And one that no longer subscribes at all leaves the queue, unbound.
    let none = write_file(
        dir.path(),
        "none.toml",
        &format!(
            "[components.flaky]\nwasm = {:?}\nroutes = [\"/flaky\"]\n",
            test_wasm("flaky")
        ),
    );
    let berth = serve(&none);
    connected(&berth);
    assert_eq!(bindings(&vhost), vec![]);
}
