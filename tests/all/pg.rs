//! Support of the scale-out tests: a fresh PostgreSQL database per test on
//! the server named by `BERTH_TEST_POSTGRES`, a private throw-away cluster
//! for tests that stop the server, `berth serve --store` replicas, and
//! requests and load that report failures instead of panicking.

use crate::support::{BERTH, Berth, Logs, Reply, Starting, eventually, parse_reply};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// The admin token every replica is started with.
pub const TOKEN: &str = "replica-admin-token";

/// What a test prints when there is no server to run against.
const SKIP: &str = "skipped: BERTH_TEST_POSTGRES is not set \
                    (tests/pg/cluster.sh starts a server; test.sh does it for you)";

/// The server URL from `BERTH_TEST_POSTGRES`, or `None` (after saying the
/// test is skipped). With `BERTH_REQUIRE_POSTGRES=1` a missing URL fails
/// the test instead, so a CI run cannot pass by skipping.
pub fn server_url() -> Option<String> {
    match std::env::var("BERTH_TEST_POSTGRES") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ if std::env::var("BERTH_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("BERTH_REQUIRE_POSTGRES=1 but {SKIP}")
        }
        _ => {
            eprintln!("{SKIP}");
            None
        }
    }
}

/// A database of its own for one test, dropped at the end.
pub struct Database {
    /// The URL berth is given: the server's, naming this database.
    pub url: String,
    name: String,
    /// The URL of the database it was created from, to drop it from.
    server: String,
}

impl Database {
    /// A new database on the `BERTH_TEST_POSTGRES` server; `None` when the
    /// test is to be skipped.
    pub fn fresh() -> Option<Database> {
        server_url().map(|server| Database::create_on(&server))
    }

    /// `CREATE DATABASE berth_e2e_<unique>` on the server of `server`.
    pub fn create_on(server: &str) -> Database {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "berth_e2e_{}_{}_{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        psql(server, &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        Database {
            url: with_database(server, &name),
            name,
            server: server.to_string(),
        }
    }

    /// Run `sql` in this database; its output, unaligned, without headers.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        psql(&self.url, sql)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // FORCE ends the sessions of replicas a failed test left running.
        let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.server, &drop) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// Run one SQL command with `psql` against `url`; its output (unaligned,
/// tuples only) or what went wrong.
pub fn psql(url: &str, sql: &str) -> Result<String, String> {
    let output = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running psql (is the PostgreSQL client installed?): {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(format!(
            "psql {sql:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// `url` with its database (the path) replaced by `name`, query kept.
pub fn with_database(url: &str, name: &str) -> String {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let base = match base[authority..].find('/') {
        Some(slash) => &base[..authority + slash],
        None => base,
    };
    format!("{base}/{name}{query}")
}

/// `url` with its password replaced by `password`.
pub fn with_password(url: &str, password: &str) -> String {
    let authority = url.find("://").expect("a URL with a scheme") + 3;
    let at = authority + url[authority..].find('@').expect("a URL with a user");
    let user_end = url[authority..at].find(':').map_or(at, |c| authority + c);
    format!("{}:{password}{}", &url[..user_end], &url[at..])
}

/// The password in `url`, if it has one.
pub fn password_of(url: &str) -> Option<&str> {
    let authority = url.find("://")? + 3;
    let at = authority + url[authority..].find('@')?;
    let user_info = &url[authority..at];
    user_info.split_once(':').map(|(_, password)| password)
}

/// A throw-away PostgreSQL cluster of one test's own, from
/// `tests/pg/cluster.sh`, so the test can stop and restart it without
/// disturbing the others. Stopped when dropped.
pub struct Cluster {
    pub url: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pg/cluster.sh")
    }

    /// `cluster.sh ACTION DIR` (`bindir` takes no DIR); its output.
    fn run(&self, action: &str) -> String {
        let mut command = Command::new("bash");
        command.arg(Cluster::script()).arg(action);
        if action != "bindir" {
            command.arg(self.dir.path());
        }
        let output = command
            .stdin(Stdio::null())
            .output()
            .expect("running tests/pg/cluster.sh");
        assert!(
            output.status.success(),
            "tests/pg/cluster.sh {action} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        let mut cluster = Cluster {
            url: String::new(),
            dir,
        };
        cluster.run("start");
        cluster.url = cluster.written_url();
        cluster
    }

    /// The URL the script wrote to DIR/url.
    fn written_url(&self) -> String {
        let path = self.dir.path().join("url");
        let url = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        url.trim().to_string()
    }

    pub fn stop(&self) {
        self.run("stop");
    }

    /// Start the stopped cluster again, on the same port. The script makes
    /// a new cluster each time, so this runs its `pg_ctl` directly, as the
    /// user the script runs the server as.
    pub fn restart(&self) {
        let bindir = self.run("bindir");
        let port = self
            .url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .expect("a port in the cluster's URL");
        let dir = self.dir.path();
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        let mut command = if root {
            let mut runuser = Command::new("runuser");
            runuser.args(["-u", "postgres", "--"]);
            runuser
        } else {
            Command::new("env")
        };
        let output = command
            .arg(Path::new(bindir.trim()).join("pg_ctl"))
            .args(["start", "-w", "-t", "30", "-D"])
            .arg(dir.join("data"))
            .arg("-l")
            .arg(dir.join("server.log"))
            .arg("-o")
            .arg(format!("-p {port}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .output()
            .expect("running pg_ctl");
        assert!(
            output.status.success(),
            "pg_ctl start failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(Cluster::script())
            .arg("stop")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .output();
    }
}

/// A `berth serve --store` with the admin API, killed when dropped.
pub struct Replica {
    pub berth: Berth,
    pub admin: SocketAddr,
    pub logs: Logs,
    pub name: &'static str,
}

impl Replica {
    /// Start replica `name` on the store `url` with compile cache `cache`
    /// and the built-in components (or `extra`'s `--manifest`), and wait
    /// until it is ready.
    pub fn start(name: &'static str, url: &str, cache: &Path, extra: &[&str]) -> Replica {
        Replica::start_in(name, Command::new(BERTH), url, cache, extra)
    }

    /// Like [`Replica::start`], running `command` (which may set the
    /// directory and environment).
    pub fn start_in(
        name: &'static str,
        command: Command,
        url: &str,
        cache: &Path,
        extra: &[&str],
    ) -> Replica {
        let mut args = vec![
            "--store",
            url,
            "--cache-dir",
            cache.to_str().unwrap(),
            "--admin",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let (mut berth, logs) =
            Starting::spawn_command(command, &args, &[("BERTH_ADMIN_TOKEN", TOKEN)]).ready();
        let admin = berth.admin_addr();
        Replica {
            berth,
            admin,
            logs,
            name,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.berth.addr
    }

    /// A request to the admin API, with the token.
    pub fn admin(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        try_request(
            self.admin,
            method,
            path,
            &[("authorization", &auth)],
            body,
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{}: admin {method} {path}: {e}", self.name))
    }

    /// The admin API's entry for component `name`.
    pub fn component(&self, name: &str) -> serde_json::Value {
        let reply = self.admin("GET", "/components", b"");
        assert_eq!(reply.status, 200, "{}: {}", self.name, body_text(&reply));
        reply
            .json()
            .as_array()
            .expect("a JSON array of components")
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{}: no `{name}` in {}", self.name, body_text(&reply)))
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.berth.child.try_wait(), Ok(None))
    }
}

pub fn body_text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// One request over a new connection, bounded by `timeout`; `Err` says
/// what went wrong (refused, reset, timed out, cut short) instead of
/// panicking, for servers that may be killed or stalled.
pub fn try_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Reply, String> {
    let raw = crate::support::encode_request(&addr.to_string(), method, path, headers, body);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream.write_all(&raw).map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    if !response.windows(4).any(|w| w == b"\r\n\r\n") {
        return Err(format!(
            "incomplete response {:?}",
            String::from_utf8_lossy(&response)
        ));
    }
    Ok(parse_reply(&response))
}

/// POST a JSON body with a 10 s bound.
pub fn try_post(addr: SocketAddr, path: &str, body: &str) -> Result<Reply, String> {
    try_request(
        addr,
        "POST",
        path,
        &[("content-type", "application/json")],
        body.as_bytes(),
        Duration::from_secs(10),
    )
}

/// GET with a 10 s bound.
pub fn try_get(addr: SocketAddr, path: &str) -> Result<Reply, String> {
    try_request(addr, "GET", path, &[], b"", Duration::from_secs(10))
}

/// Wait until `addr`'s `/readyz` answers `status`, for at most `limit`.
pub fn wait_ready_status(addr: SocketAddr, status: u16, limit: Duration) -> bool {
    eventually(limit, || {
        try_get(addr, "/readyz")
            .ok()
            .filter(|r| r.status == status)
            .map(|_| ())
    })
    .is_some()
}

/// Threads that repeat a request until stopped (or a deadline passes,
/// should the test panic before stopping them), counting what they saw.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pub tally: Arc<Tally>,
}

/// What a [`Load`] saw: successes and every failure, described.
#[derive(Default)]
pub struct Tally {
    pub ok: Mutex<Vec<String>>,
    pub failures: Mutex<Vec<String>>,
}

impl Tally {
    pub fn ok_count(&self) -> usize {
        self.ok.lock().unwrap().len()
    }
}

impl Load {
    /// `threads` threads, each calling `step(thread, iteration)`: `Ok` with
    /// a note of what succeeded or `Err` with what failed.
    pub fn start<F>(threads: usize, limit: Duration, step: F) -> Load
    where
        F: Fn(usize, usize) -> Result<String, String> + Send + Sync + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Tally::default());
        let step = Arc::new(step);
        let deadline = Instant::now() + limit;
        let threads = (0..threads)
            .map(|t| {
                let (stop, tally, step) = (stop.clone(), tally.clone(), step.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match step(t, n) {
                            Ok(note) => tally.ok.lock().unwrap().push(note),
                            Err(e) => {
                                tally.failures.lock().unwrap().push(e);
                                // No busy loop against a server that is down.
                                std::thread::sleep(Duration::from_millis(10));
                            }
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load {
            stop,
            threads,
            tally,
        }
    }

    /// Wait until at least `n` steps succeeded, for at most `limit`.
    pub fn wait_for_ok(&self, n: usize, limit: Duration) -> bool {
        eventually(limit, || (self.tally.ok_count() >= n).then_some(())).is_some()
    }

    /// Stop the threads and return the tally.
    pub fn stop(mut self) -> Arc<Tally> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in std::mem::take(&mut self.threads) {
            thread.join().expect("a load thread panicked");
        }
        self.tally.clone()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Run `berth serve --listen 127.0.0.1:0 ARGS` with `env` expecting it to
/// exit within `limit`; its output. Killed (and the test failed) if it
/// keeps running.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let child = Command::new(BERTH)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning berth");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(output) => output.expect("waiting for berth"),
        Err(_) => {
            // Not reaped yet, so the pid is still berth's.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            let output = rx.recv_timeout(Duration::from_secs(10));
            let stderr = output
                .ok()
                .and_then(Result::ok)
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default();
            panic!("berth {args:?} was still running after {limit:?}; stderr:\n{stderr}");
        }
    }
}

/// Every file under `dir`, recursively, relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            found.push(path.strip_prefix(root).unwrap().to_path_buf());
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(root, &path, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found);
    found.sort();
    found
}
