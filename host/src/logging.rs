//! Where log lines go: stderr, through a buffer that a background thread
//! writes out every [`FLUSH_EVERY`]. A request's log line costs a copy into
//! memory, not a system call, and wakes no thread; the write itself happens
//! on the background thread, outside the lock, so no request waits on it. The
//! price: a process killed with SIGKILL may lose its last lines (one flush
//! interval's worth); a normal exit writes everything.
//!
//! Nor does a request wait when stderr stops taking lines (a log shipper
//! that stalls, a pipe nobody reads, a disk that is slow to take the write):
//! once [`MAX_BUFFERED`] bytes wait, further lines are dropped and counted,
//! the count is logged as a warning when stderr takes lines again, and
//! `berth_log_lines_dropped_total` holds the total. Writing them from the
//! request's thread instead, as this module once did, stopped every request
//! behind the stuck write: the server stopped answering.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a log line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// At most this many bytes wait to be written; lines past it are dropped.
const MAX_BUFFERED: usize = 1024 * 1024;

/// Buffered stderr, shared by every thread that logs.
#[derive(Clone)]
pub struct BufferedStderr(Arc<Shared>);

struct Shared {
    lines: Mutex<Vec<u8>>,
    /// Held while writing to stderr, so buffers go out in the order they filled.
    out: Mutex<()>,
    /// Lines refused because the buffer was full, not yet reported.
    dropped: AtomicU64,
}

impl BufferedStderr {
    /// The buffer, and the thread that writes it out.
    pub fn start() -> BufferedStderr {
        let shared = BufferedStderr::unstarted();
        let flusher = shared.clone();
        // If the thread cannot start, lines still go out at exit (and the
        // rest, past the buffer, are counted as dropped).
        let _ = std::thread::Builder::new()
            .name("berth-log".into())
            .spawn(move || {
                let mut spare = Vec::with_capacity(64 * 1024);
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flusher.write_out(&mut spare);
                    flusher.report_dropped();
                }
            });
        shared
    }

    /// The buffer alone, with no thread writing it out.
    fn unstarted() -> BufferedStderr {
        BufferedStderr(Arc::new(Shared {
            lines: Mutex::new(Vec::with_capacity(64 * 1024)),
            out: Mutex::new(()),
            dropped: AtomicU64::new(0),
        }))
    }

    /// Log, once stderr has taken what was buffered, how many lines were
    /// dropped meanwhile. The warning goes through this same buffer.
    fn report_dropped(&self) {
        let dropped = self.0.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            crate::metrics::metrics().log_lines_dropped.inc_by(dropped);
            tracing::warn!(
                dropped,
                "log lines dropped: stderr took lines more slowly than they came, and {} KiB were waiting",
                MAX_BUFFERED / 1024
            );
        }
    }

    /// Write out whatever is buffered.
    pub fn flush_now(&self) {
        self.write_out(&mut Vec::new());
    }

    /// Swap the buffer for `spare` under the lock, then write it without.
    fn write_out(&self, spare: &mut Vec<u8>) {
        let _out = self.0.out.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *self.lock(), spare);
        if !spare.is_empty() {
            let _ = std::io::stderr().write_all(spare);
            spare.clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for BufferedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// One lock per line, so lines from different threads never interleave.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.push(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_now();
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedStderr {
    type Writer = BufferedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl BufferedStderr {
    /// Append one whole line (or several) to the buffer, or count it as
    /// dropped if the buffer is full. Never writes, so never blocks on stderr.
    fn push(&self, line: &[u8]) {
        let mut buffer = self.lock();
        if buffer.len() + line.len() > MAX_BUFFERED {
            drop(buffer);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        buffer.extend_from_slice(line);
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `tracing_subscriber`'s default text lines.
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// Where request lines go, once the binary has set up its logging.
static REQUEST_LOG: OnceLock<(BufferedStderr, Format)> = OnceLock::new();

/// Write request lines straight to `out` in `format` (the same format the
/// `tracing` subscriber writes every other line in), rather than through
/// `tracing`'s formatter: one line per request is the only log line on the
/// hot path, and the generic formatter cost 8 % of a small request.
/// `tracing`'s filter still decides whether the line is written.
pub fn install_request_log(out: BufferedStderr, format: Format) {
    let _ = REQUEST_LOG.set((out, format));
}

/// The log line of one HTTP request.
pub struct RequestLine<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// The component that answered, if one did.
    pub component: Option<&'a str>,
    pub status: u16,
    pub duration_us: u64,
    pub request_id: &'a str,
    /// For a failed request: the level to log it at and what went wrong
    /// (trap details included), so the failure takes no line of its own.
    pub failure: Option<(tracing::Level, &'a str)>,
}

impl RequestLine<'_> {
    fn level(&self) -> tracing::Level {
        self.failure
            .map_or(tracing::Level::INFO, |(level, _)| level)
    }
}

/// Log one request with the target `request`: at INFO, or at its failure's
/// level with an `error` field.
pub fn request(line: &RequestLine<'_>) {
    // `enabled!` needs its level as a constant.
    let enabled = match line.level() {
        tracing::Level::ERROR => tracing::enabled!(target: "request", tracing::Level::ERROR),
        tracing::Level::WARN => tracing::enabled!(target: "request", tracing::Level::WARN),
        _ => tracing::enabled!(target: "request", tracing::Level::INFO),
    };
    if !enabled {
        return;
    }
    let Some((out, format)) = REQUEST_LOG.get() else {
        // A library user with its own subscriber: go through tracing.
        let error = line.failure.map(|(_, message)| message);
        macro_rules! log_at {
            ($macro:ident) => {
                tracing::$macro!(
                    target: "request",
                    method = line.method,
                    path = line.path,
                    component = line.component.unwrap_or("-"),
                    status = line.status,
                    duration_us = line.duration_us,
                    request_id = line.request_id,
                    error,
                    "request"
                )
            };
        }
        match line.level() {
            tracing::Level::ERROR => log_at!(error),
            tracing::Level::WARN => log_at!(warn),
            _ => log_at!(info),
        }
        return;
    };
    let mut text = String::with_capacity(192);
    match format {
        Format::Text => write_text(&mut text, line, SystemTime::now()),
        Format::Json => write_json(&mut text, line, SystemTime::now()),
    }
    out.push(text.as_bytes());
}

fn write_text(out: &mut String, line: &RequestLine<'_>, now: SystemTime) {
    use std::fmt::Write as _;
    write_rfc3339(out, now, true);
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        " {:>5} request: request method={} path={} component={} status={} duration_us={} request_id={}",
        line.level().as_str(),
        line.method,
        line.path,
        line.component.unwrap_or("-"),
        line.status,
        line.duration_us,
        line.request_id,
    );
    // Quoted and escaped, as tracing writes a `?` field: trap details span
    // several lines, and the log keeps one line per request.
    if let Some((_, error)) = line.failure {
        let _ = write!(out, " error={error:?}");
    }
    out.push('\n');
}

fn write_json(out: &mut String, line: &RequestLine<'_>, now: SystemTime) {
    use std::fmt::Write as _;
    out.push_str("{\"timestamp\":\"");
    write_rfc3339(out, now, true);
    let _ = write!(
        out,
        "\",\"level\":\"{}\",\"message\":\"request\",\"method\":",
        line.level().as_str()
    );
    json_string(out, line.method);
    out.push_str(",\"path\":");
    json_string(out, line.path);
    out.push_str(",\"component\":");
    json_string(out, line.component.unwrap_or("-"));
    let _ = write!(
        out,
        ",\"status\":{},\"duration_us\":{},\"request_id\":",
        line.status, line.duration_us
    );
    json_string(out, line.request_id);
    if let Some((_, error)) = line.failure {
        out.push_str(",\"error\":");
        json_string(out, error);
    }
    out.push_str(",\"target\":\"request\"}\n");
}

/// Logs an error that may repeat for every request (a full disk fails every
/// commit) at most once per [`Throttle::EVERY`], saying how many were not
/// logged since, so a persistent failure cannot flood the log.
pub struct Throttle {
    state: Mutex<ThrottleState>,
}

struct ThrottleState {
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl Throttle {
    /// At most one line per this interval.
    pub const EVERY: Duration = Duration::from_secs(10);

    pub const fn new() -> Throttle {
        Throttle {
            state: Mutex::new(ThrottleState {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` if a line may be written now, `n` being how many were
    /// suppressed since the last one; `None` if this one should be dropped.
    pub fn allow(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if state
            .last
            .is_some_and(|last| now.duration_since(last) < Self::EVERY)
        {
            state.suppressed += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.suppressed))
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

/// `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    // Serialising a string cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

/// `time` in RFC 3339, UTC, to the second (`2026-11-27T07:13:46Z`) or, with
/// `micros`, to the microsecond (`2026-11-27T07:13:46.123456Z`).
pub(crate) fn write_rfc3339(out: &mut String, time: SystemTime, micros: bool) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    push_digits(out, year, 4);
    out.push('-');
    push_digits(out, month, 2);
    out.push('-');
    push_digits(out, day, 2);
    out.push('T');
    push_digits(out, of_day / 3600, 2);
    out.push(':');
    push_digits(out, of_day / 60 % 60, 2);
    out.push(':');
    push_digits(out, of_day % 60, 2);
    if micros {
        out.push('.');
        push_digits(out, u64::from(since.subsec_micros()), 6);
    }
    out.push('Z');
}

/// The last `width` decimal digits of `value`, zero-padded.
fn push_digits(out: &mut String, value: u64, width: u32) {
    let mut divisor = 10u64.pow(width - 1);
    while divisor > 0 {
        let digit = (value / divisor % 10) as u8;
        out.push(char::from(b'0' + digit));
        divisor /= 10;
    }
}

/// The Gregorian date `days` after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
    }

    #[test]
    fn a_full_buffer_drops_and_counts_lines_instead_of_writing_them() {
        let out = BufferedStderr::unstarted();
        let line = [b'x'; 100];
        let fit = MAX_BUFFERED / line.len();
        for _ in 0..fit + 250 {
            out.push(&line);
        }
        assert_eq!(out.lock().len(), fit * line.len());
        assert_eq!(out.0.dropped.load(Ordering::Relaxed), 250);
        // Once the buffer is taken (written out), lines fit again, and the
        // report resets the count.
        std::mem::take(&mut *out.lock());
        out.push(&line);
        assert_eq!(out.lock().len(), line.len());
        out.report_dropped();
        assert_eq!(out.0.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut s = String::new();
        write_rfc3339(&mut s, at(0, 0), true);
        assert_eq!(s, "1970-01-01T00:00:00.000000Z");
        s.clear();
        // 2024-02-29 (a leap day) 23:59:59.999999
        write_rfc3339(&mut s, at(1_709_251_199, 999_999), true);
        assert_eq!(s, "2024-02-29T23:59:59.999999Z");
        s.clear();
        write_rfc3339(&mut s, at(1_798_348_426, 5), true);
        assert_eq!(s, "2026-12-27T05:13:46.000005Z");
    }

    fn line() -> RequestLine<'static> {
        RequestLine {
            method: "POST",
            path: "/users/a\"b\\c",
            component: Some("users"),
            status: 201,
            duration_us: 1234,
            request_id: "id-\u{1}",
            failure: None,
        }
    }

    #[test]
    fn text_lines_read_like_tracing_s() {
        let mut s = String::new();
        write_text(&mut s, &line(), at(0, 0));
        assert_eq!(
            s,
            "1970-01-01T00:00:00.000000Z  INFO request: request method=POST path=/users/a\"b\\c \
             component=users status=201 duration_us=1234 request_id=id-\u{1}\n"
        );
    }

    #[test]
    fn json_lines_parse_with_every_field() {
        let mut s = String::new();
        write_json(&mut s, &line(), at(0, 0));
        assert!(s.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "request");
        assert_eq!(v["message"], "request");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["path"], "/users/a\"b\\c");
        assert_eq!(v["component"], "users");
        assert_eq!(v["status"], 201);
        assert_eq!(v["duration_us"], 1234);
        assert_eq!(v["request_id"], "id-\u{1}");
    }

    #[test]
    fn a_failed_request_is_one_line_at_its_level_with_the_details() {
        let mut failed = line();
        failed.failure = Some((tracing::Level::ERROR, "component trapped: boom\nbacktrace"));
        let mut s = String::new();
        write_text(&mut s, &failed, at(0, 0));
        assert_eq!(s.lines().count(), 1, "{s}");
        assert!(s.starts_with("1970-01-01T00:00:00.000000Z ERROR request: request "));
        assert!(
            s.ends_with(" error=\"component trapped: boom\\nbacktrace\"\n"),
            "{s}"
        );
        s.clear();
        write_json(&mut s, &failed, at(0, 0));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["error"], "component trapped: boom\nbacktrace");
    }

    #[test]
    fn a_throttle_lets_one_through_then_counts_the_rest() {
        let throttle = Throttle::new();
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(), None);
        }
        throttle.state.lock().unwrap().last = Some(std::time::Instant::now() - Throttle::EVERY);
        assert_eq!(throttle.allow(), Some(5));
    }
}
