//! Numeric flags of `berth serve` out of their range are refused, naming the
//! flag and the range, rather than quietly changed.

use crate::support::{BERTH, Berth, data_dir};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run `berth serve` with `flag value`; return its exit code and stderr. A
/// server that starts instead is killed after a few seconds (code `None`).
fn run(flag: &str, value: &str) -> (Option<i32>, String) {
    let dir = data_dir();
    let mut child = Command::new(BERTH)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args([flag, value])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running berth");
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.code();
        }
        if started.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (code, stderr)
}

#[test]
fn flags_out_of_range_are_refused_with_the_range() {
    let cases = [
        ("--max-header-bytes", "10", "1024..=1048576"),
        ("--max-connections", "0", "1..=1000000"),
        ("--max-in-flight", "0", "1..=100000"),
        ("--max-body-bytes", "2000000000", "0..=1073741824"),
        ("--max-response-bytes", "0", "1..=1073741824"),
        ("--header-timeout-secs", "0", "1..=3600"),
        ("--body-timeout-secs", "0", "1..=3600"),
        ("--write-timeout-secs", "3601", "1..=3600"),
        ("--drain-timeout-secs", "86400", "0..=3600"),
        ("--shutdown-delay-secs", "3601", "0..=3600"),
        ("--max-call-depth", "65", "0..=64"),
        ("--event-max-attempts", "0", "1..=1000"),
        ("--event-backoff-ms", "3600001", "0..=3600000"),
        ("--event-poll-ms", "0", "1..=60000"),
        ("--admin-max-wasm-bytes", "0", "1..=1073741824"),
    ];
    let runs: Vec<_> = cases
        .iter()
        .map(|&(flag, value, _)| std::thread::spawn(move || run(flag, value)))
        .collect();
    for ((flag, value, range), handle) in cases.iter().zip(runs) {
        let (code, stderr) = handle.join().unwrap();
        assert_eq!(code, Some(2), "{flag} {value} was not refused: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(&format!("{value} is not in {range}")),
            "{flag} {value}: {stderr}"
        );
    }
}

#[test]
fn the_ends_of_each_range_are_accepted() {
    let dir = data_dir();
    let berth = Berth::start_with(
        dir.path(),
        &[
            "--max-header-bytes",
            "1024",
            "--max-in-flight",
            "100000",
            "--max-call-depth",
            "64",
            "--max-body-bytes",
            "0",
            "--event-poll-ms",
            "1",
            "--drain-timeout-secs",
            "0",
        ],
    );
    assert_eq!(berth.get("/users/1").status, 200);
    assert_eq!(berth.post("/orders", r#"{"user_id": 1}"#).status, 413);
}
