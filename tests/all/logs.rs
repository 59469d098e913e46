//! The log writer under a stderr that stops taking lines: requests must go
//! on being answered, and the lines that did not fit are counted.

use crate::support::{Berth, Logs, data_dir};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One GET on a kept-alive connection; the status code, or why there is none.
fn get(reader: &mut BufReader<TcpStream>, path: &str) -> Result<u16, String> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: berth\r\n\r\n");
    reader
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut status = String::new();
    reader.read_line(&mut status).map_err(|e| e.to_string())?;
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line: {status:?}"))?;
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).map_err(|e| e.to_string())?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(|_| "bad content-length")?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(code)
}

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
        match get(&mut reader, "/users/1") {
            Ok(200) => {}
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
    assert_eq!(get(&mut reader, "/users/1"), Ok(200));
}
