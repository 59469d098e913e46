//! Damage is caught, not run: a compile-cache entry swapped with another is
//! compiled again, a damaged database page stops start-up with a message,
//! and the store's files are the owner's alone.

use crate::store_support::{Server, created_id};
use crate::support::{Berth, compiled_entries, data_dir, eventually};
use std::time::Duration;

#[test]
fn a_compile_cache_entry_swapped_with_another_is_compiled_again() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    assert_eq!(berth.get("/users/1").json()["name"], "John");
    assert_eq!(berth.terminate().code(), Some(0));
    let cached = compiled_entries(dir.path());
    assert_eq!(cached.len(), 2, "users and orders: {cached:?}");
    // Swap the two files whole: each keeps a valid checksum.
    let (a, b) = (&cached[0], &cached[1]);
    let aside = a.with_extension("aside");
    std::fs::rename(a, &aside).unwrap();
    std::fs::rename(b, a).unwrap();
    std::fs::rename(&aside, b).unwrap();

    let (berth, logs) = Berth::start_logged(dir.path(), &[], &[]);
    let john = berth.get("/users/1");
    assert_eq!(
        john.status,
        200,
        "/users runs other code: {}",
        String::from_utf8_lossy(&john.body)
    );
    assert_eq!(john.json()["name"], "John");
    assert_eq!(berth.get("/orders/1").json()["user_id"], 1);
    assert!(
        logs.text().contains("made for another wasm or engine"),
        "no warning about the swapped entries:\n{}",
        logs.text()
    );
}

#[test]
fn a_damaged_database_page_stops_start_up_with_a_message() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    let name = "x".repeat(1000);
    for _ in 0..300 {
        created_id(&berth.post("/users", &format!(r#"{{"name":"{name}"}}"#)));
    }
    assert_eq!(berth.terminate().code(), Some(0));
    // Move every page into berth.db, so the damage below is what is read.
    let db = dir.path().join("berth.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    // Overwrite one page in the middle of the file, full of user rows.
    let mut bytes = std::fs::read(&db).unwrap();
    let pages = bytes.len() / 4096;
    assert!(pages > 50, "only {pages} pages");
    let middle = pages / 2 * 4096;
    bytes[middle..middle + 4096].fill(0xA5);
    std::fs::write(&db, &bytes).unwrap();

    let mut server = Server::spawn(&[], dir.path(), &[]);
    let status = eventually(Duration::from_secs(60), || server.child.try_wait().unwrap())
        .unwrap_or_else(|| {
            panic!(
                "berth kept running on a damaged store:\n{}",
                server.stderr()
            )
        });
    assert_eq!(status.code(), Some(1), "{}", server.stderr());
    // The reader thread may still be copying the last lines once the
    // process has exited.
    let said = |s: &str| s.contains("is damaged") && s.contains("integrity check failed");
    let stderr = eventually(Duration::from_secs(10), || {
        Some(server.stderr()).filter(|s| said(s))
    })
    .unwrap_or_else(|| server.stderr());
    assert!(
        said(&stderr),
        "stderr does not say what is wrong:\n{stderr}"
    );
}

#[cfg(unix)]
#[test]
fn the_store_files_are_the_owners_alone_and_a_shared_directory_is_reported() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = data_dir();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (berth, logs) = Berth::start_logged(&data, &[], &[]);
    created_id(&berth.post("/users", r#"{"name":"Ann"}"#));
    for file in ["berth.db", "berth.db-wal", "berth.db-shm"] {
        let mode = std::fs::metadata(data.join(file))
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{file} has mode {mode:o}");
    }
    assert!(
        logs.wait_for_line(
            &["WARN", "writable by others", "chmod go-w"],
            Duration::from_secs(5)
        ),
        "no warning about the data directory:\n{}",
        logs.text()
    );
    drop(berth);

    // A directory only its owner may write gets no warning.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (berth, logs) = Berth::start_logged(&data, &[], &[]);
    assert_eq!(berth.get("/users/1").status, 200);
    assert!(!logs.text().contains("writable by"), "{}", logs.text());
}
