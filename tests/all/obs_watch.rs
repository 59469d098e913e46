//! `--watch` on a hostile path: a FIFO, a link to a device that never ends,
//! an oversized file. Each is refused with one log line, without reading it
//! (no memory taken), and the server keeps serving and stops promptly.

use crate::support::{Berth, Logs, data_dir, rss_kib, write_file};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Serve users from `DIR/users.wasm` with `--watch`; return the server, its
/// log and the watched path.
fn start(dir: &Path) -> (Berth, Logs, PathBuf) {
    let wasm = dir.join("users.wasm");
    std::fs::write(&wasm, berth::builtin::USERS).unwrap();
    let manifest = write_file(
        dir,
        "berth.toml",
        "[components.users]\nwasm = \"users.wasm\"\nroutes = [\"/users\"]\n",
    );
    let (berth, logs) = Berth::start_logged(
        &dir.join("data"),
        &["--manifest", manifest.to_str().unwrap(), "--watch"],
        &[],
    );
    (berth, logs, wasm)
}

/// Wait for the watcher to refuse the file, saying `why`, while sampling the
/// server's RSS; return the highest RSS seen, in MiB. Fails at once if RSS
/// passes `limit_mib`, so a server that reads the file is stopped early.
fn refused(berth: &Berth, logs: &Logs, why: &str, limit_mib: u64) -> u64 {
    let started = Instant::now();
    let mut peak = 0;
    loop {
        let rss = rss_kib(berth.child.id()) / 1024;
        peak = peak.max(rss);
        assert!(rss < limit_mib, "RSS reached {rss} MiB");
        if logs
            .text()
            .lines()
            .any(|l| l.contains("not loading") && l.contains(why))
        {
            return peak;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no refusal saying {why:?} within 10 s (peak RSS {peak} MiB):\n{}",
            logs.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many lines say the watched file was not loaded.
fn refusals(logs: &Logs) -> usize {
    logs.text()
        .lines()
        .filter(|l| l.contains("not loading"))
        .count()
}

#[test]
fn a_fifo_at_the_watched_path_is_refused_and_sigterm_stops_promptly() {
    let dir = data_dir();
    let (berth, logs, wasm) = start(dir.path());
    std::fs::remove_file(&wasm).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&wasm)
        .status()
        .expect("running mkfifo");
    assert!(made.success());
    refused(&berth, &logs, "not a regular file", 512);
    for _ in 0..20 {
        assert_eq!(berth.get("/users/1").status, 200);
    }
    // Once per change, not once per poll.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(refusals(&logs), 1, "{}", logs.text());
    berth.send_sigterm();
    let status = berth.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_device_or_an_oversized_file_is_refused_without_being_read() {
    let dir = data_dir();
    let (berth, logs, wasm) = start(dir.path());
    let baseline = rss_kib(berth.child.id()) / 1024;
    // 600 MB, sparse: it costs the disk nothing, but reading it would cost
    // the server 600 MB; the cap (--admin-max-wasm-bytes) is 64 MiB.
    let big = dir.path().join("big.wasm");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(600 * 1024 * 1024)
        .unwrap();
    std::fs::rename(&big, &wasm).unwrap();
    let peak = refused(&berth, &logs, "the limit is 67108864", baseline + 128);
    assert!(
        peak < baseline + 128,
        "RSS went from {baseline} to {peak} MiB"
    );
    // A link to a device that never ends.
    std::fs::remove_file(&wasm).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &wasm).unwrap();
    let peak = refused(&berth, &logs, "not a regular file", baseline + 128);
    assert!(
        peak < baseline + 128,
        "RSS went from {baseline} to {peak} MiB"
    );
    assert_eq!(berth.get("/users/1").status, 200);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(refusals(&logs), 2, "{}", logs.text());
}
