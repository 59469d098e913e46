//! /readyz means the server can serve writes: 503 while the store's commits
//! fail, at start-up or later, and 200 again once one succeeds. A file-size
//! limit on the running server (prlimit) makes every commit fail for root
//! too, as a full disk would.

use crate::store_support::{Server, created_id, try_get};
use crate::support::{Berth, data_dir, eventually, request_at};
use std::time::Duration;

#[test]
fn readyz_is_503_while_commits_fail_and_200_once_they_work_again() {
    let dir = data_dir();
    let server = Server::spawn(&[], dir.path(), &[]);
    let addr = server.addr();
    let ready = || try_get(addr, "/readyz").map(|r| r.status);
    assert!(
        eventually(Duration::from_secs(60), || (ready() == Some(200))
            .then_some(()))
        .is_some(),
        "never ready:\n{}",
        server.stderr()
    );
    let post = || {
        request_at(
            addr,
            "POST",
            "/users",
            &[("content-type", "application/json")],
            br#"{"name":"Ann"}"#,
        )
    };
    created_id(&post());
    // The write-ahead log only grows while this few writes are made: with
    // the limit at its size, every commit fails, as on a full disk.
    let wal = std::fs::metadata(dir.path().join("berth.db-wal"))
        .unwrap()
        .len();
    server.limit_file_size(&wal.to_string());
    let refused = post();
    assert_eq!(
        refused.status,
        503,
        "{:?}",
        String::from_utf8_lossy(&refused.body)
    );
    let readyz = try_get(addr, "/readyz").unwrap();
    readyz.assert_error(503, "the store cannot commit writes");
    // Without traffic, the probe keeps it unready.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(ready(), Some(503));

    server.limit_file_size("unlimited");
    assert!(
        eventually(Duration::from_secs(10), || (ready() == Some(200))
            .then_some(()))
        .is_some(),
        "not ready again after the store recovered:\n{}",
        server.stderr()
    );
    created_id(&post());
}

#[test]
fn start_up_waits_unready_until_the_store_accepts_writes() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    created_id(&berth.post("/users", r#"{"name":"Ann"}"#));
    // A crash leaves the write-ahead log in place, so the next commit
    // appends to it.
    berth.kill();
    let wal = std::fs::metadata(dir.path().join("berth.db-wal"))
        .unwrap()
        .len();
    assert!(wal > 0);
    let limit = format!("--fsize={wal}:");
    let server = Server::spawn(&["prlimit", &limit], dir.path(), &[]);
    let addr = server.addr();
    let waiting = eventually(Duration::from_secs(60), || {
        try_get(addr, "/readyz").filter(|r| {
            r.status == 503
                && String::from_utf8_lossy(&r.body)
                    .contains("waiting for the store to accept writes")
        })
    });
    assert!(
        waiting.is_some(),
        "/readyz never said the store refuses writes; last: {:?}\n{}",
        try_get(addr, "/readyz").map(|r| String::from_utf8_lossy(&r.body).into_owned()),
        server.stderr()
    );
    assert_eq!(
        request_at(addr, "POST", "/users", &[], br#"{"name":"Bob"}"#).status,
        503
    );
    server.limit_file_size("unlimited");
    assert!(
        eventually(Duration::from_secs(10), || {
            (try_get(addr, "/readyz").map(|r| r.status) == Some(200)).then_some(())
        })
        .is_some(),
        "not ready once the store took writes:\n{}",
        server.stderr()
    );
    created_id(&request_at(
        addr,
        "POST",
        "/users",
        &[("content-type", "application/json")],
        br#"{"name":"Bob"}"#,
    ));
}
