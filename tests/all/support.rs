//! Test support: start the real `berth` binary on port 0 and talk HTTP/1.1
//! to it over loopback with a deliberately small client, so tests can also
//! send what a well-behaved client library would refuse to.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// How long the binary may take to print its `listening on` line.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `berth serve`, killed when dropped.
pub struct Berth {
    pub addr: SocketAddr,
    pub child: Child,
    /// Kept open so the server never gets EPIPE writing to stdout.
    _stdout: BufReader<ChildStdout>,
}

impl Berth {
    /// Serve the built-in components with the store in `data`.
    pub fn start(data: &Path) -> Berth {
        Berth::start_with(data, &[])
    }

    /// Serve with extra command-line arguments.
    pub fn start_with(data: &Path, args: &[&str]) -> Berth {
        Berth::serve(data, args, Stdio::inherit())
    }

    /// `berth serve` on port 0 with `stderr`, once it says it is listening.
    fn serve(data: &Path, args: &[&str], stderr: Stdio) -> Berth {
        let mut child = Command::new(BERTH)
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning berth");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let (addr, stdout) = read_listening_line(&mut child, stdout, String::new);
        Berth {
            addr,
            child,
            _stdout: stdout,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    pub fn delete(&self, path: &str) -> Reply {
        self.request("DELETE", path, &[], b"")
    }

    /// Send `body` as JSON with the given method.
    pub fn send_json(&self, method: &str, path: &str, body: &str) -> Reply {
        self.request(
            method,
            path,
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
    }

    pub fn post(&self, path: &str, body: &str) -> Reply {
        self.send_json("POST", path, body)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        request_at(self.addr, method, path, headers, body)
    }

    /// Send raw bytes and parse whatever comes back.
    pub fn raw(&self, bytes: &[u8]) -> Reply {
        send(self.addr, bytes)
    }

    /// Stop with SIGKILL, as a crash would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send SIGTERM and wait for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {pid} failed");
        self.child.wait().expect("waiting for berth")
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response as the tests see it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Reply {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
        let head = std::str::from_utf8(&raw[..split]).expect("ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Reply {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> String {
        let body = self.json();
        body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no `error` string in {body}"))
            .to_string()
    }

    /// Assert the status and a JSON error whose message contains `needle`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, needle: &str) {
        assert_eq!(
            self.status,
            status,
            "body: {}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        let message = self.error();
        assert!(
            message.contains(needle),
            "error {message:?} does not mention {needle:?}"
        );
    }
}

/// A fresh temporary data directory.
pub fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("creating a temporary directory")
}

/// Write `text` to `dir/name` and return the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a test file");
    path
}

/// What a server started with [`Berth::start_logged`] wrote to stderr.
#[derive(Clone, Default)]
pub struct Logs(std::sync::Arc<std::sync::Mutex<String>>);

impl Logs {
    /// Collect `pipe`'s lines (echoing them to the test's stderr) on a
    /// thread of their own until it closes.
    pub fn collect(pipe: impl Read + Send + 'static) -> Logs {
        let logs = Logs::default();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                eprintln!("{line}");
                let mut text = sink.0.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        logs
    }

    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    /// Wait until a log line contains every one of `needles`; false if none
    /// has within `timeout`.
    pub fn wait_for_line(&self, needles: &[&str], timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if self
                .text()
                .lines()
                .any(|line| needles.iter().all(|n| line.contains(n)))
            {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Berth {
    /// Like [`Berth::start_with`], with the server's stderr a pipe that this
    /// side holds open and does not read until the test chooses to.
    pub fn start_with_stderr_unread(data: &Path, args: &[&str]) -> (Berth, ChildStderr) {
        let mut berth = Berth::serve(data, args, Stdio::piped());
        let stderr = berth.child.stderr.take().expect("piped stderr");
        (berth, stderr)
    }

    /// Like [`Berth::start_with`], with extra environment variables and the
    /// server's stderr captured (and still echoed) so a test can read its log.
    pub fn start_logged(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (Berth, Logs) {
        Starting::spawn(data, args, env).ready()
    }
    /// The next line the server prints on stdout, without its newline
    /// (empty once stdout is closed).
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        let _ = self._stdout.read_line(&mut line);
        line.trim_end().to_string()
    }

    /// The admin listener's address, from the line `--admin` makes berth
    /// print next on stdout.
    pub fn admin_addr(&mut self) -> SocketAddr {
        let line = self.next_line();
        line.strip_prefix("admin listening on http://")
            .unwrap_or_else(|| panic!("expected the admin line, got {line:?}"))
            .parse()
            .expect("address in the admin line")
    }
}

/// Send one request to `addr` (over a new connection) and parse the reply.
pub fn request_at(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    send(
        addr,
        &encode_request(&addr.to_string(), method, path, headers, body),
    )
}

/// One `GET path` on a kept-alive connection, read to the end of its body
/// (by `content-length`), so the next request can follow on the same one.
pub fn get_kept_alive(conn: &mut BufReader<TcpStream>, path: &str) -> Result<Reply, String> {
    conn.get_mut()
        .write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line)
            .map_err(|e| format!("read: {e}"))?;
        if line.is_empty() {
            return Err("connection closed before the end of the headers".into());
        }
        head.extend_from_slice(line.as_bytes());
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(|_| "bad content-length")?;
        }
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)
        .map_err(|e| format!("read body: {e}"))?;
    head.extend_from_slice(&body);
    Ok(Reply::parse(&head))
}

/// An HTTP/1.1 request with `connection: close` and a content length.
pub fn encode_request(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Send raw bytes over a new connection and parse whatever comes back.
fn send(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("connecting to berth");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(bytes).expect("sending request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("reading response");
    Reply::parse(&response)
}

/// Parse a raw HTTP response, as the helpers above do.
pub fn parse_reply(raw: &[u8]) -> Reply {
    Reply::parse(raw)
}

impl Berth {
    /// Send SIGTERM without waiting for the exit.
    pub fn send_sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }

    /// Wait for the process to exit, for at most `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling berth") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "berth did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A `berth serve` that may not be ready yet: its port is open (the address
/// comes from its `bound` log line) but it has not printed `listening on`.
pub struct Starting {
    child: Option<Child>,
    stdout: Option<BufReader<ChildStdout>>,
    pub logs: Logs,
}

impl Starting {
    /// Spawn `berth serve` on port 0 with its stderr captured (and echoed).
    pub fn spawn(data: &Path, args: &[&str], env: &[(&str, &str)]) -> Starting {
        Starting::run(Command::new(BERTH), "serve", Some(data), args, env)
    }

    /// `berth dev` in the project `dir` (its working directory too), on
    /// port 0 with its stderr captured, and `args` after the directory.
    pub fn spawn_dev(dir: &Path, args: &[&str]) -> Starting {
        let mut command = Command::new(BERTH);
        command.current_dir(dir);
        Starting::run(command, "dev", None, args, &[])
    }

    /// Like [`Starting::spawn`] without `--data` (for `--store`), from
    /// `command`, which runs `berth` and may set its directory or
    /// environment.
    pub fn spawn_command(command: Command, args: &[&str], env: &[(&str, &str)]) -> Starting {
        Starting::run(command, "serve", None, args, env)
    }

    /// Like [`Starting::spawn`], with `berth` started by the shell command
    /// `script` (run by bash, the berth command line in `"$@"`), so a test
    /// can set limits such as `ulimit -f` before it `exec "$@"`s.
    pub fn spawn_in_shell(
        script: &str,
        data: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Starting {
        let mut bash = Command::new("bash");
        bash.args(["-c", script, "berth", BERTH]);
        Starting::run(bash, "serve", Some(data), args, env)
    }

    /// Run `command` with the subcommand `sub` (`serve`, `dev`) and its
    /// arguments appended, stdout piped for the `listening on` line and
    /// stderr collected into [`Logs`].
    fn run(
        mut command: Command,
        sub: &str,
        data: Option<&Path>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Starting {
        command.args([sub, "--listen", "127.0.0.1:0"]);
        if let Some(data) = data {
            command.arg("--data").arg(data);
        }
        let mut child = command
            .args(args)
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning berth");
        let logs = Logs::collect(child.stderr.take().expect("piped stderr"));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Starting {
            child: Some(child),
            stdout: Some(stdout),
            logs,
        }
    }

    /// The address the server bound, read from its `bound` log line.
    pub fn bound_addr(&self) -> SocketAddr {
        assert!(
            self.logs.wait_for_line(&["bound", "addr="], START_TIMEOUT),
            "berth logged no `bound` line; stderr:\n{}",
            self.logs.text()
        );
        let text = self.logs.text();
        let line = text.lines().find(|l| l.contains("bound")).unwrap();
        let addr = line
            .split("addr=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next();
        addr.unwrap().parse().expect("address in the bound line")
    }

    /// Wait for the `listening on` line that says start-up is done.
    pub fn ready(mut self) -> (Berth, Logs) {
        let mut child = self.child.take().expect("child");
        let stdout = self.stdout.take().expect("stdout");
        let logs = self.logs.clone();
        let (addr, stdout) = read_listening_line(&mut child, stdout, || logs.text());
        let berth = Berth {
            addr,
            child,
            _stdout: stdout,
        };
        (berth, self.logs.clone())
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait for the server's first stdout line, `listening on http://ADDR`, and
/// return the address. The line is read on a thread so a silent server fails
/// the test after START_TIMEOUT instead of hanging it; `stderr` gives what
/// to show if the line is wrong.
fn read_listening_line(
    child: &mut Child,
    mut stdout: BufReader<ChildStdout>,
    stderr: impl Fn() -> String,
) -> (SocketAddr, BufReader<ChildStdout>) {
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        let _ = tx.send(line);
        stdout
    });
    let Ok(line) = rx.recv_timeout(START_TIMEOUT) else {
        let _ = child.kill();
        panic!("berth printed nothing within {START_TIMEOUT:?}");
    };
    let stdout = reader.join().expect("reader thread");
    let Some(addr) = line.trim().strip_prefix("listening on http://") else {
        let status = child.wait();
        panic!(
            "unexpected first line {line:?} from berth (exit: {status:?}); stderr:\n{}",
            stderr()
        )
    };
    (addr.parse().expect("address in the listening line"), stdout)
}

/// Where the test-only guest components are, built on first use in this
/// test process (`berth::guest_build::test_guest_dir`).
pub fn guest_dir() -> &'static Path {
    berth::guest_build::test_guest_dir().unwrap_or_else(|e| panic!("{e:#}"))
}

/// The bytes of a test-only component, such as `swap_v1`.
pub fn test_wasm_bytes(name: &str) -> Vec<u8> {
    let path = guest_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The path of a test-only component, such as `slow`.
pub fn test_wasm(name: &str) -> String {
    crate::support::guest_dir()
        .join(format!("{name}.wasm"))
        .display()
        .to_string()
}

/// Write `DIR/berth.toml`: the built-in users plus the test-only component
/// `name` on `/NAME`, its table ending with the lines in `extra`.
pub fn manifest_beside_users(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let text = format!(
        "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n\n\
         [components.{name}]\nwasm = {:?}\nroutes = [\"/{name}\"]\n{extra}",
        test_wasm(name)
    );
    write_file(dir, "berth.toml", &text)
}

/// The resident set size of process `pid` in KiB (VmRSS), or 0 once it
/// has exited.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The target of a reply's `Link: <...>; rel="next"` header, if it has one.
pub fn next_link(reply: &Reply) -> Option<String> {
    let link = reply.header("link")?;
    let target = link
        .strip_suffix(r#">; rel="next""#)
        .and_then(|l| l.strip_prefix('<'))
        .unwrap_or_else(|| panic!("malformed Link header {link:?}"));
    Some(target.to_string())
}

impl Berth {
    /// Every record of a paged list such as `/users`, following the
    /// `rel="next"` links from `first` to the last page.
    pub fn list_all(&self, first: &str) -> Vec<Value> {
        let mut records = Vec::new();
        let mut next = Some(first.to_string());
        while let Some(path) = next {
            let reply = self.get(&path);
            assert_eq!(reply.status, 200, "listing {path}");
            records.extend(
                reply
                    .json()
                    .as_array()
                    .expect("a JSON array")
                    .iter()
                    .cloned(),
            );
            next = next_link(&reply);
        }
        records
    }
}

/// Poll `check` every 50 ms until it returns `Some`, for at most `limit`.
pub fn eventually<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let started = std::time::Instant::now();
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if started.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The compile cache's entries in `DATA/compiled`, sorted.
pub fn compiled_entries(data: &Path) -> Vec<PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(data.join("compiled"))
        .map(|dir| dir.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}
