//! Scale-out: several `berth serve --store postgres://...` replicas on one
//! database. Data written through one is seen by the others, writes race
//! safely, a crash loses nothing acknowledged, hot swaps spread, and the
//! database going away or being wrong is reported without the password.

use crate::pg::{
    Cluster, Database, Load, Replica, body_text, files_under, password_of, run_to_exit, server_url,
    try_get, try_post, try_request, wait_ready_status, with_password,
};
use crate::store_support::created_id;
use crate::support::{BERTH, Starting, data_dir, eventually, write_file};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// Start replicas A and B on `url` side by side, each with its own compile
/// cache under `work`.
fn start_pair(url: &str, work: &Path, extra: &[&str]) -> (Replica, Replica) {
    std::thread::scope(|s| {
        let a = s.spawn(|| Replica::start("A", url, &work.join("cache-a"), extra));
        let b = s.spawn(|| Replica::start("B", url, &work.join("cache-b"), extra));
        let a = a.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        let b = b.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (a, b)
    })
}

/// Every user as `id -> name`, read through `replica`.
fn users(replica: &Replica) -> BTreeMap<u64, String> {
    replica
        .berth
        .list_all("/users?limit=1000")
        .into_iter()
        .map(|u| {
            (
                u["id"].as_u64().expect("an id"),
                u["name"].as_str().expect("a name").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_user_created_on_one_replica_is_read_changed_and_deleted_on_the_other() {
    let Some(db) = Database::fresh() else { return };
    let work = data_dir();
    let (a, b) = start_pair(&db.url, work.path(), &[]);
    // Two replicas started on one empty database seeded it once.
    let seeded = vec![
        json!({"id": 1, "name": "John"}),
        json!({"id": 2, "name": "Jane"}),
    ];
    assert_eq!(a.berth.list_all("/users"), seeded);
    assert_eq!(b.berth.list_all("/users"), seeded);

    let id = created_id(&a.berth.post("/users", r#"{"name":"Ann"}"#));
    let path = format!("/users/{id}");
    let reply = b.berth.get(&path);
    assert_eq!(reply.status, 200, "B: {}", body_text(&reply));
    assert_eq!(reply.json(), json!({"id": id, "name": "Ann"}));
    assert_eq!(users(&b).get(&id).map(String::as_str), Some("Ann"));

    let reply = b.berth.send_json("PUT", &path, r#"{"name":"Annie"}"#);
    assert_eq!(reply.status, 200, "B: {}", body_text(&reply));
    assert_eq!(
        a.berth.get(&path).json(),
        json!({"id": id, "name": "Annie"})
    );

    let reply = b.berth.delete(&path);
    assert_eq!(reply.status, 204, "B: {}", body_text(&reply));
    let gone = format!("user {id} does not exist");
    a.berth.get(&path).assert_error(404, &gone);
    a.berth.delete(&path).assert_error(404, &gone);
    // Ids assigned by either replica go on past it.
    let next = created_id(&b.berth.post("/users", r#"{"name":"Bob"}"#));
    assert!(next > id, "B assigned {next} after A assigned {id}");
    assert_eq!(users(&a), users(&b));
}

#[test]
fn concurrent_creates_on_two_replicas_get_distinct_ids() {
    const CREATES: usize = 200;
    const THREADS: usize = 16;
    let Some(db) = Database::fresh() else { return };
    let work = data_dir();
    let (a, b) = start_pair(&db.url, work.path(), &[]);
    let addrs = [a.addr(), b.addr()];
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::new());
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= CREATES {
                        break;
                    }
                    let name = format!("c{i}");
                    let body = format!(r#"{{"name":"{name}"}}"#);
                    let reply = try_post(addrs[i % 2], "/users", &body);
                    results.lock().unwrap().push((i, name, reply));
                }
            });
        }
    });
    eprintln!(
        "{CREATES} creates over {THREADS} threads took {:?}",
        started.elapsed()
    );
    let mut created = BTreeMap::new();
    let mut failures = Vec::new();
    for (i, name, reply) in results.into_inner().unwrap() {
        let replica = ["A", "B"][i % 2];
        match reply {
            Ok(r) if r.status == 201 && r.json()["name"] == name.as_str() => {
                let id = r.json()["id"].as_u64().expect("an id");
                if let Some(other) = created.insert(id, name.clone()) {
                    failures.push(format!("id {id} given to both {other} and {name}"));
                }
            }
            Ok(r) => failures.push(format!("{replica} {name}: {} {}", r.status, body_text(&r))),
            Err(e) => failures.push(format!("{replica} {name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {CREATES} creates failed: {failures:#?}",
        failures.len()
    );
    assert_eq!(created.len(), CREATES);
    for replica in [&a, &b] {
        let listed = users(replica);
        let missing: Vec<_> = created
            .iter()
            .filter(|(id, name)| listed.get(id) != Some(name))
            .collect();
        assert!(
            missing.is_empty(),
            "{} lists {} users; missing or wrong: {missing:?}",
            replica.name,
            listed.len()
        );
        assert_eq!(listed.len(), CREATES + 2, "{}: {listed:?}", replica.name);
    }
}

#[test]
fn racing_creates_of_one_id_on_two_replicas_give_one_201_and_one_409() {
    let Some(db) = Database::fresh() else { return };
    let work = data_dir();
    let (a, b) = start_pair(&db.url, work.path(), &[]);
    for id in 1000..1020u64 {
        let barrier = Barrier::new(2);
        let post = |replica: &Replica| {
            let body = format!(r#"{{"id": {id}, "name": "{}{id}"}}"#, replica.name);
            barrier.wait();
            try_post(replica.addr(), "/users", &body)
                .unwrap_or_else(|e| panic!("{} POST id {id}: {e}", replica.name))
        };
        let (from_a, from_b) = std::thread::scope(|s| {
            let from_a = s.spawn(|| post(&a));
            let from_b = post(&b);
            (from_a.join().unwrap(), from_b)
        });
        let seen = format!(
            "A: {} {}, B: {} {}",
            from_a.status,
            body_text(&from_a),
            from_b.status,
            body_text(&from_b)
        );
        let winner = match (from_a.status, from_b.status) {
            (201, 409) => {
                from_b.assert_error(409, &format!("user {id} already exists"));
                "A"
            }
            (409, 201) => {
                from_a.assert_error(409, &format!("user {id} already exists"));
                "B"
            }
            _ => panic!("id {id}: expected one 201 and one 409; {seen}"),
        };
        let expected = json!({"id": id, "name": format!("{winner}{id}")});
        for replica in [&a, &b] {
            let reply = replica.berth.get(&format!("/users/{id}"));
            assert_eq!(reply.json(), expected, "{} after {seen}", replica.name);
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill_of_both_replicas() {
    const WRITERS: usize = 8;
    let Some(db) = Database::fresh() else { return };
    let work = data_dir();
    let (a, b) = start_pair(&db.url, work.path(), &[]);
    let addrs = [a.addr(), b.addr()];
    // Writers alternate between the replicas; a success is noted as
    // `ID NAME`, only for a complete 201 naming what was sent.
    let load = Load::start(WRITERS, Duration::from_secs(180), move |t, n| {
        let replica = ["A", "B"][t % 2];
        let name = format!("w{t}-{n}");
        let body = format!(r#"{{"name":"{name}"}}"#);
        match try_post(addrs[t % 2], "/users", &body) {
            Ok(r) if r.status == 201 && r.json()["name"] == name.as_str() => {
                Ok(format!("{} {name}", r.json()["id"]))
            }
            Ok(r) => Err(format!("{replica} {name}: {} {}", r.status, body_text(&r))),
            Err(e) => Err(format!("{replica} {name}: {e}")),
        }
    });
    assert!(
        load.wait_for_ok(100, Duration::from_secs(60)),
        "not 100 writes acknowledged within a minute; failures: {:?}",
        load.tally.failures.lock().unwrap().first()
    );
    let Replica { berth: a_berth, .. } = a;
    // Counted before the kill: requests in flight at the kill fail after.
    let failures_at_kill = load.tally.failures.lock().unwrap().len();
    a_berth.kill();
    let at_kill = load.tally.ok_count();
    // B keeps taking writes with A gone.
    assert!(
        load.wait_for_ok(at_kill + 100, Duration::from_secs(60)),
        "B acknowledged too few writes after A was killed; failures: {:?}",
        load.tally.failures.lock().unwrap().last()
    );
    let tally = load.stop();
    let acknowledged: BTreeMap<u64, String> = tally
        .ok
        .lock()
        .unwrap()
        .iter()
        .map(|note| {
            let (id, name) = note.split_once(' ').unwrap();
            (id.parse().unwrap(), name.to_string())
        })
        .collect();
    assert_eq!(
        acknowledged.len(),
        tally.ok_count(),
        "one id was acknowledged twice"
    );
    let failures = tally.failures.lock().unwrap();
    let on_b: Vec<_> = failures.iter().filter(|f| f.starts_with("B ")).collect();
    assert!(on_b.is_empty(), "writes through B failed: {on_b:#?}");
    eprintln!(
        "{} writes acknowledged ({at_kill} before A was killed); {} failed through A, \
         {failures_at_kill} of them before the kill",
        acknowledged.len(),
        failures.len()
    );
    assert_eq!(
        failures_at_kill, 0,
        "failures before the kill: {failures:#?}"
    );

    let check = |replica: &Replica| {
        let listed = users(replica);
        let lost: Vec<_> = acknowledged
            .iter()
            .filter(|(id, name)| listed.get(id) != Some(name))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes are missing or wrong through {}: {lost:?}",
            lost.len(),
            acknowledged.len(),
            replica.name
        );
        listed
    };
    let seen_by_b = check(&b);
    let Replica { berth: b_berth, .. } = b;
    b_berth.kill();
    let c = Replica::start("C", &db.url, &work.path().join("cache-b"), &[]);
    assert_eq!(check(&c), seen_by_b, "C lists what B listed");
}

/// Which version answers `GET /swap` on `replica`.
fn version_of(replica: &Replica) -> String {
    let reply = try_get(replica.addr(), "/swap")
        .unwrap_or_else(|e| panic!("{}: GET /swap: {e}", replica.name));
    assert_eq!(reply.status, 200, "{}: {}", replica.name, body_text(&reply));
    reply
        .header("x-version")
        .unwrap_or_else(|| panic!("{}: no x-version", replica.name))
        .to_string()
}

/// Wait for `replica` to serve `version`, for at most 5 s; how long it took.
#[track_caller]
fn follows(replica: &Replica, version: &str) -> Duration {
    let started = Instant::now();
    let limit = Duration::from_secs(5);
    eventually(limit, || (version_of(replica) == version).then_some(())).unwrap_or_else(|| {
        panic!(
            "{} did not serve {version} within {limit:?}; it lists {}; log:\n{}",
            replica.name,
            replica.component("swapper"),
            replica.logs.text()
        )
    });
    started.elapsed()
}

/// Assert the admin API of every one of `replicas` shows `sha` live here
/// and in the shared record.
#[track_caller]
fn all_list(replicas: &[&Replica], sha: &str) {
    for replica in replicas {
        let listed = replica.component("swapper");
        assert_eq!(listed["version"], sha, "{}: {listed}", replica.name);
        assert_eq!(
            listed["shared"]["version"], sha,
            "{}: {listed}",
            replica.name
        );
        assert_eq!(
            listed["here"]["state"], "live",
            "{}: {listed}",
            replica.name
        );
        assert!(
            listed["shared"]["changed_at"].is_string(),
            "{}: {listed}",
            replica.name
        );
    }
}

fn guest(name: &str) -> Vec<u8> {
    crate::support::test_wasm_bytes(name)
}

#[test]
fn a_hot_swap_through_one_replica_reaches_the_others_under_load() {
    let Some(db) = Database::fresh() else { return };
    let (v1, v2) = (guest("swap_v1"), guest("swap_v2"));
    let (sha1, sha2) = (berth::app::sha256_hex(&v1), berth::app::sha256_hex(&v2));
    let work = data_dir();
    // The manifest's file is v1, for every replica.
    std::fs::write(work.path().join("swapper.wasm"), &v1).unwrap();
    let manifest = write_file(
        work.path(),
        "berth.toml",
        "[components.swapper]\nwasm = \"swapper.wasm\"\nroutes = [\"/swap\"]\n\n\
         [components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n",
    );
    let extra = ["--manifest", manifest.to_str().unwrap()];
    let (a, b) = start_pair(&db.url, work.path(), &extra);
    assert_eq!(version_of(&a), "v1");
    assert_eq!(version_of(&b), "v1");
    all_list(&[&a, &b], &sha1);

    // Steady load on both, one request at a time per thread.
    let addrs = [a.addr(), b.addr()];
    let load = Load::start(4, Duration::from_secs(180), move |t, _| {
        let replica = ["A", "B"][t % 2];
        let reply = try_get(addrs[t % 2], "/swap").map_err(|e| format!("{replica}: {e}"))?;
        match (reply.status, reply.header("x-version")) {
            (200, Some(v @ ("v1" | "v2"))) => Ok(v.to_string()),
            (status, _) => Err(format!("{replica}: {status} {}", body_text(&reply))),
        }
    });
    let settle = |load: &Load| {
        let n = load.tally.ok_count() + 40;
        assert!(
            load.wait_for_ok(n, Duration::from_secs(30)),
            "the load stalled"
        );
    };
    settle(&load);

    let reply = a.admin("PUT", "/components/swapper", &v2);
    assert_eq!(reply.status, 200, "A: {}", body_text(&reply));
    assert_eq!(
        version_of(&a),
        "v2",
        "A serves the upload as soon as it answers"
    );
    let took = follows(&b, "v2");
    eprintln!("B followed the upload to A in {took:?}");
    all_list(&[&a, &b], &sha2);
    settle(&load);

    let reply = b.admin("POST", "/components/swapper/rollback", b"");
    assert_eq!(reply.status, 200, "B: {}", body_text(&reply));
    assert_eq!(version_of(&b), "v1");
    let took = follows(&a, "v1");
    eprintln!("A followed the rollback on B in {took:?}");
    all_list(&[&a, &b], &sha1);
    settle(&load);

    let reply = b.admin("PUT", "/components/swapper", &v2);
    assert_eq!(reply.status, 200, "B: {}", body_text(&reply));
    follows(&a, "v2");
    all_list(&[&a, &b], &sha2);

    // A replica started now serves the live version, not its manifest's v1.
    let c = Replica::start("C", &db.url, &work.path().join("cache-c"), &extra);
    assert_eq!(version_of(&c), "v2", "C serves its manifest's file");
    all_list(&[&a, &b, &c], &sha2);

    // A wasm that does not compile is refused where it arrives and
    // recorded nowhere: after more than a poll interval, all still serve v2.
    let shared = a.component("swapper")["shared"].clone();
    let broken = &v2[..v2.len() / 2];
    let reply = a.admin("PUT", "/components/swapper", broken);
    reply.assert_error(422, "swapper");
    std::thread::sleep(Duration::from_millis(2500));
    for replica in [&a, &b, &c] {
        assert_eq!(version_of(replica), "v2", "{}", replica.name);
        let listed = replica.component("swapper");
        assert_eq!(listed["shared"], shared, "{}: {listed}", replica.name);
    }
    all_list(&[&a, &b, &c], &sha2);
    settle(&load);

    let tally = load.stop();
    let served = tally.ok.lock().unwrap();
    let failures = tally.failures.lock().unwrap();
    let count = |v: &str| served.iter().filter(|s| *s == v).count();
    eprintln!(
        "under load: {} answers from v1, {} from v2, {} failures",
        count("v1"),
        count("v2"),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed during the swaps: {failures:#?}",
        failures.len()
    );
    assert!(count("v1") > 0 && count("v2") > 0);
}

/// Assert a request that needs the store answers 503 with a JSON error,
/// within a few seconds; how long it took.
#[track_caller]
fn refused_promptly(replica: &Replica, method: &str, path: &str, body: &str) -> Duration {
    let started = Instant::now();
    let reply = try_request(
        replica.addr(),
        method,
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("{} {method} {path}: {e}", replica.name));
    let took = started.elapsed();
    assert_eq!(
        reply.status,
        503,
        "{} {method} {path} with the database down: {}",
        replica.name,
        body_text(&reply)
    );
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(!reply.error().is_empty());
    assert!(
        took <= Duration::from_secs(5),
        "{} {method} {path} took {took:?} to answer 503",
        replica.name
    );
    took
}

#[test]
fn replicas_answer_503_while_the_database_restarts_and_recover_on_their_own() {
    // A private cluster, so stopping it disturbs no other test.
    if server_url().is_none() {
        return;
    }
    let cluster = Cluster::start();
    let work = data_dir();
    let (mut a, mut b) = start_pair(&cluster.url, work.path(), &[]);
    let id = created_id(&a.berth.post("/users", r#"{"name":"Before"}"#));

    cluster.stop();
    let stopped = Instant::now();
    // The write probe (every second) notices without any traffic.
    for replica in [&a, &b] {
        assert!(
            wait_ready_status(replica.addr(), 503, Duration::from_secs(5)),
            "{}: /readyz not 503 within 5 s of the database stopping",
            replica.name
        );
    }
    eprintln!(
        "both unready {:?} after the database stopped",
        stopped.elapsed()
    );
    let mut slowest = Duration::ZERO;
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(4) {
        for replica in [&a, &b] {
            for (method, path, body) in [
                ("GET", format!("/users/{id}"), ""),
                ("GET", "/users".to_string(), ""),
                ("POST", "/users".to_string(), r#"{"name":"During"}"#),
                ("DELETE", format!("/users/{id}"), ""),
            ] {
                slowest = slowest.max(refused_promptly(replica, method, &path, body));
            }
        }
    }
    eprintln!("slowest 503 with the database down: {slowest:?}");
    let password = password_of(&cluster.url).expect("a password in the cluster's URL");
    for replica in [&a, &b] {
        let readyz = try_get(replica.addr(), "/readyz").unwrap();
        readyz.assert_error(503, "");
        assert!(
            !body_text(&readyz).contains(password),
            "{}",
            body_text(&readyz)
        );
        assert_eq!(try_get(replica.addr(), "/healthz").unwrap().status, 200);
    }

    cluster.restart();
    let restarted = Instant::now();
    for replica in [&a, &b] {
        let recovered = eventually(Duration::from_secs(12), || {
            let ready = try_get(replica.addr(), "/readyz").ok()?.status == 200;
            let body = format!(r#"{{"name":"After {}"}}"#, replica.name);
            let created = try_post(replica.addr(), "/users", &body).ok()?.status == 201;
            (ready && created).then_some(())
        });
        assert!(
            recovered.is_some(),
            "{} did not serve again within 12 s of the database restarting; log:\n{}",
            replica.name,
            replica.logs.text()
        );
    }
    eprintln!(
        "both replicas serve again {:?} after the restart",
        restarted.elapsed()
    );
    assert!(a.running() && b.running(), "a replica exited");
    for replica in [&a, &b] {
        let logs = replica.logs.text();
        assert!(
            !logs.contains(password),
            "{}: password in the log",
            replica.name
        );
    }
    for replica in [&a, &b] {
        let reply = replica.berth.get(&format!("/users/{id}"));
        assert_eq!(reply.json()["name"], "Before", "{}", replica.name);
    }
    assert_eq!(users(&a), users(&b));
}

/// A port nothing listens on.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn start_up_waits_for_an_unreachable_database_without_showing_the_password() {
    let password = "Unreachable-Pw-7a";
    let port = free_port();
    let url = format!("postgres://berth:{password}@127.0.0.1:{port}/berth");
    let cache = data_dir();
    let starting = Starting::spawn_command(
        Command::new(BERTH),
        &[
            "--store",
            &url,
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &[],
    );
    let addr: SocketAddr = starting.bound_addr();
    let redacted = format!("postgres://berth:***@127.0.0.1:{port}/berth");
    let waiting = |addr| {
        try_get(addr, "/readyz").ok().filter(|r| {
            let body = body_text(r);
            r.status == 503 && body.contains("waiting for the store") && body.contains(&redacted)
        })
    };
    let reply = eventually(Duration::from_secs(30), || waiting(addr)).unwrap_or_else(|| {
        panic!(
            "/readyz never said {redacted:?}; last: {:?}; log:\n{}",
            try_get(addr, "/readyz").map(|r| body_text(&r)),
            starting.logs.text()
        )
    });
    reply.assert_error(503, &redacted);
    assert_eq!(try_get(addr, "/healthz").unwrap().status, 200);
    let post = try_post(addr, "/users", r#"{"name":"Early"}"#).unwrap();
    assert_eq!(post.status, 503, "{}", body_text(&post));
    // Still retrying a few seconds later, not exited.
    std::thread::sleep(Duration::from_secs(3));
    let reply = waiting(addr).expect("still waiting for the store");
    assert!(!body_text(&reply).contains(password));
    assert!(!body_text(&post).contains(password));
    let logs = starting.logs.text();
    assert!(
        !logs.contains(password),
        "the password is in the log:\n{logs}"
    );
}

/// Check `berth serve ARGS` exits with status 1 and one `error:` line,
/// without `password` anywhere in its output: its stderr, or what was wrong.
fn check_refused(args: &[&str], env: &[(&str, &str)], password: &str) -> Result<String, String> {
    let output = run_to_exit(args, env, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let what = format!("{args:?} {env:?}");
    if output.status.code() != Some(1) {
        return Err(format!("{what} exited with {}: {stderr}", output.status));
    }
    let errors = stderr.lines().filter(|l| l.starts_with("error:")).count();
    if errors != 1 {
        return Err(format!("{what}: {errors} error lines: {stderr}"));
    }
    if stdout.contains("listening on") {
        return Err(format!("{what} started serving: {stdout}"));
    }
    for (pipe, text) in [("stdout", &*stdout), ("stderr", &*stderr)] {
        if text.contains(password) {
            return Err(format!("{what}: the password is on {pipe}: {text}"));
        }
    }
    Ok(stderr)
}

#[track_caller]
fn refused_at_start(args: &[&str], env: &[(&str, &str)], password: &str) -> String {
    check_refused(args, env, password).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn start_up_refuses_a_malformed_store_url() {
    let cache = data_dir();
    let cache = cache.path().to_str().unwrap();
    let mut problems = Vec::new();
    for (password, url) in [
        (
            "Malformed-Pw-1",
            "postgres://berth:Malformed-Pw-1@127.0.0.1:notaport/berth",
        ),
        (
            "Malformed-Pw-2",
            "postgres://berth:Malformed-Pw-2@127.0.0.1:99999/berth",
        ),
        (
            "Malformed-Pw-3",
            "postgres://berth:Malformed-Pw-3@[::1/berth",
        ),
        (
            "Malformed-Pw-4",
            "mysql://berth:Malformed-Pw-4@127.0.0.1/berth",
        ),
        // Typos in the scheme's separator, and no scheme at all.
        (
            "Malformed-Pw-5",
            "postgres//berth:Malformed-Pw-5@127.0.0.1/berth",
        ),
        (
            "Malformed-Pw-6",
            "postgres:/berth:Malformed-Pw-6@127.0.0.1/berth",
        ),
        (
            "Malformed-Pw-7",
            "berth:Malformed-Pw-7@127.0.0.1:5432/berth",
        ),
    ] {
        let flag = ["--store", url, "--cache-dir", cache];
        // The same from the environment.
        let env = ["--cache-dir", cache];
        for (args, env) in [
            (&flag[..], &[][..]),
            (&env[..], &[("BERTH_STORE", url)][..]),
        ] {
            if let Err(problem) = check_refused(args, env, password) {
                problems.push(problem);
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // --data and --store name two different stores.
    let output = run_to_exit(
        &[
            "--data",
            cache,
            "--store",
            "postgres://berth@127.0.0.1/berth",
        ],
        &[],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn start_up_refuses_a_wrong_password() {
    let Some(db) = Database::fresh() else { return };
    let password = "Wrong-Pw-7b";
    let url = with_password(&db.url, password);
    let cache = data_dir();
    let stderr = refused_at_start(
        &[
            "--store",
            &url,
            "--cache-dir",
            cache.path().to_str().unwrap(),
        ],
        &[],
        password,
    );
    if let Some(real) = password_of(&db.url) {
        assert!(!stderr.contains(real), "the server's password: {stderr}");
    }
}

#[test]
fn start_up_refuses_a_schema_newer_than_it_knows() {
    let Some(db) = Database::fresh() else { return };
    let work = data_dir();
    let a = Replica::start("A", &db.url, &work.path().join("cache"), &[]);
    let status = a.berth.terminate();
    assert!(status.success(), "A exited with {status}");
    // As a newer berth would leave it: its version the highest recorded.
    db.sql(
        "UPDATE berth_schema SET version = 999 \
         WHERE version = (SELECT max(version) FROM berth_schema)",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cache = work.path().join("cache");
    let password = password_of(&db.url).unwrap_or("no password in the URL");
    let stderr = refused_at_start(
        &["--store", &db.url, "--cache-dir", cache.to_str().unwrap()],
        &[],
        password,
    );
    assert!(
        stderr.contains("schema") && stderr.contains("999"),
        "no mention of schema version 999: {stderr}"
    );
}

#[test]
fn with_a_store_berth_writes_only_to_its_cache_dir() {
    let Some(db) = Database::fresh() else { return };
    let (cwd, home, tmp, root) = (data_dir(), data_dir(), data_dir(), data_dir());
    let cache = root.path().join("cache");
    let mut command = Command::new(BERTH);
    command
        .current_dir(cwd.path())
        .env("HOME", home.path())
        .env("TMPDIR", tmp.path());
    for xdg in [
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "XDG_DATA_HOME",
        "XDG_STATE_HOME",
        "XDG_RUNTIME_DIR",
    ] {
        command.env_remove(xdg);
    }
    let a = Replica::start_in("A", command, &db.url, &cache, &[]);
    let id = created_id(&a.berth.post("/users", r#"{"name":"Ann"}"#));
    let path = format!("/users/{id}");
    assert_eq!(
        a.berth
            .send_json("PUT", &path, r#"{"name":"Annie"}"#)
            .status,
        200
    );
    let order = a.berth.post("/orders", &format!(r#"{{"user_id": {id}}}"#));
    assert_eq!(order.status, 201, "{}", body_text(&order));
    assert_eq!(a.berth.delete("/users/2").status, 204);
    let status = a.berth.terminate();
    assert!(status.success(), "berth exited with {status}");

    for (what, dir) in [
        ("the current directory", cwd.path()),
        ("HOME", home.path()),
        ("TMPDIR", tmp.path()),
    ] {
        let found = files_under(dir);
        assert!(found.is_empty(), "berth wrote to {what}: {found:?}");
    }
    let cached = files_under(&cache);
    assert!(!cached.is_empty(), "nothing in the cache dir");
    let everything: BTreeSet<_> = files_under(root.path()).into_iter().collect();
    assert!(
        everything.iter().all(|p| p.starts_with("cache")),
        "{everything:?}"
    );
}
