//! The log writer under a stderr that stops taking lines: requests must go
//! on being answered, and the lines that did not fit are counted.

use crate::support::{Berth, Logs, data_dir, get_kept_alive};
use std::io::BufReader;
use std::net::TcpStream;
use std::time::Duration;

#[test]
fn a_stderr_that_takes_nothing_drops_log_lines_but_every_request_is_answered() {
    let data = data_dir();
    let (berth, stderr) = Berth::start_with_stderr_unread(data.path(), &[]);
    let stream = TcpStream::connect(berth.addr).unwrap();
    // A stuck stderr shows as a read that never returns: fail instead.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    // Each request logs a line of about 150 bytes: 12,000 of them are more
    // than the pipe (64 KiB) and the log buffer (1 MiB) can hold together.
    for i in 0..12_000 {
        match get_kept_alive(&mut reader, "/users/1") {
            Ok(reply) if reply.status == 200 => {}
            other => panic!("request {i} with stderr not read: {other:?}"),
        }
    }
    // Reading stderr again lets the buffer out, and then the count.
    let logs = Logs::collect(stderr);
    assert!(
        logs.wait_for_line(&["log lines dropped", "dropped="], Duration::from_secs(10)),
        "no warning about dropped lines; stderr:\n{}",
        logs.text()
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let metrics = String::from_utf8_lossy(&berth.get("/metrics").body).into_owned();
    let dropped = metrics
        .lines()
        .find_map(|line| line.strip_prefix("berth_log_lines_dropped_total "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no berth_log_lines_dropped_total in:\n{metrics}"));
    assert!(dropped > 0, "dropped lines counted: {dropped}");
    // And the server still answers, and logs, normally.
    assert_eq!(
        get_kept_alive(&mut reader, "/users/1").map(|r| r.status),
        Ok(200)
    );
}
