//! Hot swap: new versions arrive through `--watch` or the admin API while
//! the server keeps serving; bad ones are rejected and the old version stays.
//! The `swap-v1` and `swap-v2` test guests answer with `x-version: v1`/`v2`.

use crate::support::{Berth, Logs, Reply, data_dir, get_kept_alive, request_at, write_file};
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TOKEN: &str = "correct-horse-battery-staple";

/// Bound on every wait for a swap to show.
const SWAP_TIMEOUT: Duration = Duration::from_secs(30);

fn guest(name: &str) -> Vec<u8> {
    crate::support::test_wasm_bytes(name)
}

fn v1() -> Vec<u8> {
    guest("swap_v1")
}

fn v2() -> Vec<u8> {
    guest("swap_v2")
}

/// A core module, not a component: the smallest valid one.
const CORE_MODULE: &[u8] = b"\0asm\x01\0\0\0";

/// A server with component `swapper` (v1, from a file) on `/swap`, users
/// built in, and the admin API on port 0.
struct Swappable {
    berth: Berth,
    admin: SocketAddr,
    logs: Logs,
    /// The file `swapper` was loaded from (and `--watch` watches).
    wasm: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(extra: &[&str]) -> Swappable {
    let dir = data_dir();
    let wasm = dir.path().join("swapper.wasm");
    std::fs::write(&wasm, v1()).unwrap();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        "[components.swapper]\nwasm = \"swapper.wasm\"\nroutes = [\"/swap\"]\n\n\
         [components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n",
    );
    let token = write_file(dir.path(), "token", &format!("{TOKEN}\n"));
    let mut args = vec![
        "--manifest",
        manifest.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
        "--admin-token-file",
        token.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (mut berth, logs) = Berth::start_logged(&dir.path().join("data"), &args, &[]);
    let admin = berth.admin_addr();
    Swappable {
        berth,
        admin,
        logs,
        wasm,
        _dir: dir,
    }
}

impl Swappable {
    fn admin(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        request_at(self.admin, method, path, &[("authorization", &auth)], body)
    }

    /// Which version answers `GET /swap` now.
    fn version(&self) -> String {
        let reply = self.berth.get("/swap");
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let header = reply.header("x-version").expect("x-version").to_string();
        assert_eq!(reply.json()["version"], header.as_str());
        header
    }

    /// Poll until `version` answers; fail after [`SWAP_TIMEOUT`].
    #[track_caller]
    fn wait_for_version(&self, version: &str) -> Duration {
        let started = Instant::now();
        while started.elapsed() < SWAP_TIMEOUT {
            if self.version() == version {
                return started.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{version} was not swapped in within {SWAP_TIMEOUT:?}; log:\n{}",
            self.logs.text()
        );
    }

    /// The admin API's entry for `swapper`.
    fn listing(&self) -> serde_json::Value {
        let reply = self.admin("GET", "/components", b"");
        assert_eq!(reply.status, 200);
        let all = reply.json();
        all.as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "swapper")
            .cloned()
            .expect("swapper in the listing")
    }

    /// Replace the watched file the way an atomic writer does.
    fn rename_into_place(&self, bytes: &[u8]) {
        let tmp = self.wasm.with_extension("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, &self.wasm).unwrap();
    }

    /// Count of log lines saying `swapper` was rejected.
    fn rejections(&self) -> usize {
        self.logs
            .text()
            .lines()
            .filter(|l| l.contains("swapper") && l.contains("rejected"))
            .count()
    }
}

fn sha256(bytes: &[u8]) -> String {
    berth::app::sha256_hex(bytes)
}

#[test]
fn watch_swaps_in_new_builds_including_half_written_ones() {
    let s = start(&["--watch"]);
    assert_eq!(s.version(), "v1");
    // Overwritten in place, as `cp` does.
    std::fs::copy(crate::support::guest_dir().join("swap_v2.wasm"), &s.wasm).unwrap();
    s.wait_for_version("v2");
    assert!(
        s.logs
            .wait_for_line(&["swapper", "swapped in a new version"], SWAP_TIMEOUT)
    );
    assert_eq!(s.listing()["version"], sha256(&v2()));

    // Replaced by rename, as editors and linkers do.
    s.rename_into_place(&v1());
    s.wait_for_version("v1");

    // Written in two halves with a pause between: the first half must not
    // take the service down, the completed file must be swapped in.
    let wasm = v2();
    let (first, rest) = wasm.split_at(wasm.len() / 2);
    let mut file = std::fs::File::create(&s.wasm).unwrap();
    file.write_all(first).unwrap();
    file.flush().unwrap();
    let pause = Instant::now();
    while pause.elapsed() < Duration::from_millis(700) {
        assert_eq!(s.version(), "v1", "a half-written file was swapped in");
        std::thread::sleep(Duration::from_millis(20));
    }
    file.write_all(rest).unwrap();
    drop(file);
    s.wait_for_version("v2");
    assert_eq!(s.listing()["version"], sha256(&v2()));

    // The admin API rolls a watched component back too.
    let reply = s.admin("POST", "/components/swapper/rollback", b"");
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["version"], sha256(&v1()));
    assert_eq!(s.version(), "v1");
}

#[test]
fn admin_uploads_a_version_and_rolls_back_keeping_the_data() {
    let s = start(&[]);
    // The data a version writes is there for the next one.
    let reply = s
        .berth
        .request("PUT", "/swap/note", &[], b"kept across swaps");
    assert_eq!(reply.status, 200);

    let listed = s.listing();
    assert_eq!(listed["version"], sha256(&v1()));
    assert_eq!(listed["routes"], serde_json::json!(["/swap"]));
    assert_eq!(listed["can_roll_back"], false);
    assert!(listed["loaded_at"].as_str().unwrap().ends_with('Z'));
    s.admin("POST", "/components/swapper/rollback", b"")
        .assert_error(409, "no previous version");

    let reply = s.admin("PUT", "/components/swapper", &v2());
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    // The upload answers in the shape `GET /components` lists, and says
    // whether the live version changed.
    let mut uploaded = reply.json();
    assert_eq!(uploaded["swapped"], true);
    uploaded.as_object_mut().unwrap().remove("swapped");
    assert_eq!(uploaded, s.listing());
    assert_eq!(uploaded["version"], sha256(&v2()));
    // Swapped before the upload's 200: the very next request gets v2.
    assert_eq!(s.version(), "v2");
    let note = s.berth.get("/swap/note").json();
    assert_eq!(note["version"], "v2");
    assert_eq!(note["note"], "kept across swaps");
    let listed = s.listing();
    assert_eq!(listed["version"], sha256(&v2()));
    assert_eq!(listed["can_roll_back"], true);
    assert_eq!(listed["previous"]["version"], sha256(&v1()));

    let reply = s.admin("POST", "/components/swapper/rollback", b"");
    assert_eq!(reply.status, 200);
    assert_eq!(s.version(), "v1");
    assert_eq!(s.listing()["version"], sha256(&v1()));
    // The same shape again.
    let mut rolled_back = reply.json();
    assert_eq!(rolled_back["swapped"], true);
    rolled_back.as_object_mut().unwrap().remove("swapped");
    assert_eq!(rolled_back, s.listing());
    assert_eq!(rolled_back["previous"]["version"], sha256(&v2()));
    assert_eq!(
        s.berth.get("/swap/note").json()["note"],
        "kept across swaps"
    );
    // A second rollback undoes the first.
    assert_eq!(
        s.admin("POST", "/components/swapper/rollback", b"").status,
        200
    );
    assert_eq!(s.version(), "v2");

    // Uploading the live version changes nothing.
    let reply = s.admin("PUT", "/components/swapper", &v2());
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["swapped"], false);

    // Other components are untouched.
    assert_eq!(s.berth.get("/users/1").status, 200);
    s.admin("PUT", "/components/nope", &v2())
        .assert_error(404, "no component `nope`");
    s.admin("POST", "/components/nope/rollback", b"")
        .assert_error(404, "no component `nope`");
    let reply = s.admin("DELETE", "/components", b"");
    reply.assert_error(405, "not allowed");
    assert_eq!(reply.header("allow"), Some("GET"));
    let reply = s.admin("GET", "/components/swapper", b"");
    reply.assert_error(405, "not allowed");
    assert_eq!(reply.header("allow"), Some("PUT"));
    s.admin("GET", "/nothing", b"")
        .assert_error(404, "no admin route");
}

/// Files that are not components of the `service` world: what each is,
/// its bytes, and what the rejection must say.
fn not_service_components() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let v2 = v2();
    vec![
        (
            "truncated",
            v2[..v2.len() / 2].to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "core module",
            CORE_MODULE.to_vec(),
            "not a valid WebAssembly component",
        ),
        (
            "other world",
            guest("swap_otherworld"),
            "does not export `berth:service/handler`",
        ),
    ]
}

#[test]
fn admin_rejects_what_is_not_a_service_component() {
    let s = start(&[]);
    let mut cases = not_service_components();
    cases.push(("empty", Vec::new(), "not a valid WebAssembly component"));
    for (what, wasm, reason) in cases {
        let reply = s.admin("PUT", "/components/swapper", &wasm);
        assert_eq!(
            reply.status,
            422,
            "{what}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        let message = reply.error();
        assert!(message.contains(reason), "{what}: {message:?}");
        assert!(message.contains("swapper"), "{what}: {message:?}");
        assert_eq!(s.version(), "v1", "{what}");
    }
    let listed = s.listing();
    assert_eq!(listed["version"], sha256(&v1()));
    assert_eq!(listed["can_roll_back"], false);
    assert!(
        s.logs
            .wait_for_line(&["swapper", "rejected an uploaded version"], SWAP_TIMEOUT)
    );
}

#[test]
fn watch_rejects_bad_files_and_the_old_version_keeps_serving() {
    let s = start(&["--watch"]);
    for (n, (what, wasm, reason)) in not_service_components().into_iter().enumerate() {
        s.rename_into_place(&wasm);
        let started = Instant::now();
        while s.rejections() <= n {
            assert!(
                started.elapsed() < SWAP_TIMEOUT,
                "{what} was not rejected; log:\n{}",
                s.logs.text()
            );
            assert_eq!(s.version(), "v1", "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            s.logs
                .wait_for_line(&["swapper", "rejected", reason], SWAP_TIMEOUT),
            "{what}: log:\n{}",
            s.logs.text()
        );
        assert_eq!(s.version(), "v1", "{what}");
    }
    assert_eq!(s.listing()["version"], sha256(&v1()));
    // The watcher is not stuck: a good build still goes in.
    s.rename_into_place(&v2());
    s.wait_for_version("v2");
}

#[test]
fn a_running_request_finishes_on_the_version_it_started_with() {
    let s = start(&[]);
    let addr = s.berth.addr;
    let slow = std::thread::spawn(move || request_at(addr, "GET", "/swap/slow?ms=5000", &[], b""));
    assert!(
        s.logs
            .wait_for_line(&["swapper", "slow request started on v1"], SWAP_TIMEOUT),
        "the slow request did not start"
    );
    let reply = s.admin("PUT", "/components/swapper", &v2());
    assert_eq!(reply.status, 200);
    assert_eq!(s.version(), "v2");
    assert!(
        !slow.is_finished(),
        "the slow request ended before the swap; the test proves nothing"
    );
    let slow = slow.join().unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(slow.header("x-version"), Some("v1"));
}

#[test]
fn admin_needs_the_right_token_and_is_not_on_the_public_port() {
    let dir = data_dir();
    let (mut berth, _logs) = Berth::start_logged(
        dir.path(),
        &["--admin", "127.0.0.1:0", "--admin-max-wasm-bytes", "1024"],
        &[("BERTH_ADMIN_TOKEN", TOKEN)],
    );
    let admin = berth.admin_addr();
    let unauthorized = |headers: &[(&str, &str)]| {
        let reply = request_at(admin, "GET", "/components", headers, b"");
        reply.assert_error(401, "Authorization: Bearer");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    };
    unauthorized(&[]);
    unauthorized(&[("authorization", "Bearer wrong")]);
    unauthorized(&[("authorization", &format!("Bearer {TOKEN}x"))]);
    unauthorized(&[("authorization", &format!("Basic {TOKEN}"))]);
    unauthorized(&[("authorization", TOKEN)]);
    // An upload is refused before its body is read.
    let reply = send_tolerant(admin, "PUT", "/components/users", &[], &[0; 4096]);
    assert_eq!(reply.status, 401);

    let auth = format!("Bearer {TOKEN}");
    let good = [("authorization", auth.as_str())];
    let reply = request_at(admin, "GET", "/components", &good, b"");
    assert_eq!(reply.status, 200);
    let names: Vec<_> = reply
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].clone())
        .collect();
    assert_eq!(names, ["orders", "users"]);

    // Over --admin-max-wasm-bytes: refused by Content-Length, and while
    // reading a chunked body whose size is not declared.
    send_tolerant(admin, "PUT", "/components/users", &good, &[0; 2048])
        .assert_error(413, "upload limit of 1024 bytes");
    let chunk = vec![b'a'; 1500];
    let mut raw = format!(
        "PUT /components/users HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: {auth}\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n",
        chunk.len()
    )
    .into_bytes();
    raw.extend_from_slice(&chunk);
    raw.extend_from_slice(b"\r\n0\r\n\r\n");
    raw_request(admin, &raw).assert_error(413, "upload limit");

    // The public port has no admin routes, token or not.
    berth
        .get("/components")
        .assert_error(404, "no service is routed at /components");
    let reply = berth.request("PUT", "/components/users", &good, b"x");
    assert_eq!(reply.status, 404);
    assert_eq!(berth.get("/users/1").status, 200);
}

#[test]
fn sigterm_stops_the_admin_listener_and_the_watcher_too() {
    let s = start(&["--watch"]);
    // An idle kept-alive admin connection must not hold up the exit.
    let mut idle = TcpStream::connect(s.admin).unwrap();
    idle.write_all(
        format!("GET /components HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let Swappable { berth, _dir, .. } = s;
    let started = Instant::now();
    let status = berth.terminate();
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        started.elapsed()
    );
}

#[test]
fn admin_start_up_is_refused_without_a_token_or_on_a_public_address() {
    let dir = data_dir();
    let check = |args: &[&str], env: Option<&str>, needle: &str| {
        let mut cmd = std::process::Command::new(crate::support::BERTH);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(dir.path())
            .args(args)
            .env_remove("BERTH_ADMIN_TOKEN")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(token) = env {
            cmd.env("BERTH_ADMIN_TOKEN", token);
        }
        let mut child = cmd.spawn().unwrap();
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("berth {args:?} kept running");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
    };
    check(
        &["--admin", "127.0.0.1:0"],
        None,
        "--admin needs a token: set BERTH_ADMIN_TOKEN or pass --admin-token-file FILE",
    );
    check(
        &["--admin", "127.0.0.1:0"],
        Some("  "),
        "the admin token is empty",
    );
    check(
        &["--admin", "0.0.0.0:0"],
        Some(TOKEN),
        "not a loopback address",
    );
    let missing = dir.path().join("no-such-token");
    check(
        &[
            "--admin",
            "127.0.0.1:0",
            "--admin-token-file",
            missing.to_str().unwrap(),
        ],
        Some(TOKEN),
        "cannot read the admin token file",
    );
}

/// Like [`request_at`], for a server that may answer before reading the body.
fn send_tolerant(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    raw_request(
        addr,
        &crate::support::encode_request("x", method, path, headers, body),
    )
}

fn raw_request(addr: SocketAddr, bytes: &[u8]) -> Reply {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // The server may answer and close before reading everything.
    let _ = stream.write_all(bytes);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    crate::support::parse_reply(&response)
}

/// What the load generator saw.
#[derive(Default)]
struct Tally {
    v1: AtomicU64,
    v2: AtomicU64,
    /// Responses that were not a 200 from v1 or v2, and connection errors.
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, outcome: Result<(u16, Option<String>), String>) {
        match outcome {
            Ok((200, Some(v))) if v == "v1" => {
                self.v1.fetch_add(1, Ordering::Relaxed);
            }
            Ok((200, Some(v))) if v == "v2" => {
                self.v2.fetch_add(1, Ordering::Relaxed);
            }
            other => self.failures.lock().unwrap().push(format!("{other:?}")),
        }
    }
}

/// One `GET /swap` on a kept-alive connection: the status and `x-version`.
fn get_keep_alive(conn: &mut BufReader<TcpStream>) -> Result<(u16, Option<String>), String> {
    let reply = get_kept_alive(conn, "/swap")?;
    Ok((reply.status, reply.header("x-version").map(str::to_string)))
}

#[test]
fn swaps_under_load_fail_no_request() {
    let s = start(&[]);
    let addr = s.berth.addr;
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Bounded whatever happens: clients stop after this even if the test
    // body panics before setting `stop`.
    let limit = Instant::now() + Duration::from_secs(120);
    let clients: Vec<_> = (0..8)
        .map(|i| {
            let (tally, stop) = (tally.clone(), stop.clone());
            std::thread::spawn(move || {
                let keep_alive = i % 2 == 0;
                let mut conn = None;
                while !stop.load(Ordering::Relaxed) && Instant::now() < limit {
                    let outcome = if keep_alive {
                        let conn = conn.get_or_insert_with(|| {
                            let stream = TcpStream::connect(addr).expect("connecting");
                            stream
                                .set_read_timeout(Some(Duration::from_secs(30)))
                                .unwrap();
                            BufReader::new(stream)
                        });
                        get_keep_alive(conn)
                    } else {
                        // A new connection per request.
                        let reply = request_at(addr, "GET", "/swap", &[], b"");
                        Ok((reply.status, reply.header("x-version").map(str::to_string)))
                    };
                    tally.record(outcome);
                }
            })
        })
        .collect();
    let (v1, v2) = (v1(), v2());
    let mut swaps = 0;
    for round in 0..12 {
        let (wasm, version) = if round % 2 == 0 {
            (&v2, "v2")
        } else {
            (&v1, "v1")
        };
        if round % 4 == 3 {
            // Some swaps are rollbacks, which install a kept version.
            let reply = s.admin("POST", "/components/swapper/rollback", b"");
            assert_eq!(
                reply.status,
                200,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
        } else {
            let reply = s.admin("PUT", "/components/swapper", wasm);
            assert_eq!(
                reply.status,
                200,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
            assert_eq!(reply.json()["swapped"], true);
        }
        swaps += 1;
        assert_eq!(s.version(), version);
        // Let the clients run on this version for a while: at least 400 ms
        // and 50 answers (bounded), so the run lasts several seconds.
        let total = || tally.v1.load(Ordering::Relaxed) + tally.v2.load(Ordering::Relaxed);
        let before = total();
        let wait = Instant::now();
        while (total() < before + 50 || wait.elapsed() < Duration::from_millis(400))
            && wait.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let failures = tally.failures.lock().unwrap();
    let (n1, n2) = (
        tally.v1.load(Ordering::Relaxed),
        tally.v2.load(Ordering::Relaxed),
    );
    eprintln!("{swaps} swaps under load: {n1} answers from v1, {n2} from v2");
    assert!(
        failures.is_empty(),
        "{} failed requests, first: {:?}",
        failures.len(),
        failures.first()
    );
    assert!(swaps >= 10);
    assert!(n1 > 100 && n2 > 100, "v1: {n1}, v2: {n2}");
}

/// `berth push` and `berth rollback`, as an author deploys from a shell:
/// each prints what is live now and what it replaced, and every refusal is
/// one line naming the admin API's status and reason.
#[test]
fn push_and_rollback_from_the_command_line() {
    let s = start(&[]);
    let url = format!("http://{}", s.admin);
    let dir = data_dir();
    let v2_file = write_file(dir.path(), "v2.wasm", "");
    std::fs::write(&v2_file, v2()).unwrap();
    let run = |args: &[&str], token: &str| {
        let output = std::process::Command::new(crate::support::BERTH)
            .args(args)
            .env("BERTH_ADMIN_TOKEN", token)
            .env_remove("BERTH_ADMIN")
            .output()
            .expect("running berth");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let short = |wasm: &[u8]| sha256(wasm)[..12].to_string();

    let push = [
        "push",
        "swapper",
        v2_file.to_str().unwrap(),
        "--admin",
        &url,
    ];
    let (ok, stdout, stderr) = run(&push, TOKEN);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "swapper: version {} is live, replacing {}",
            short(&v2()),
            short(&v1())
        )) && stdout.contains(&format!("berth rollback swapper --admin {url}")),
        "{stdout}"
    );
    assert_eq!(s.version(), "v2");
    let (ok, stdout, _) = run(&push, TOKEN);
    assert!(
        ok && stdout.contains("was live already; nothing changed"),
        "{stdout}"
    );

    let (ok, stdout, stderr) = run(&["rollback", "swapper", "--admin", &url], TOKEN);
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "swapper: rolled back; version {} is live, {} is kept",
            short(&v1()),
            short(&v2())
        )),
        "{stdout}"
    );
    assert_eq!(s.version(), "v1");

    let refused = |args: &[&str], token: &str, needles: &[&str]| {
        let (ok, stdout, stderr) = run(args, token);
        assert!(!ok, "{stdout}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} in {stderr}");
        }
    };
    refused(&push, "wrong-token", &["401", "Bearer"]);
    let not_wasm = write_file(dir.path(), "notes.txt", "not wasm");
    refused(
        &[
            "push",
            "swapper",
            not_wasm.to_str().unwrap(),
            "--admin",
            &url,
        ],
        TOKEN,
        &["422", "magic bytes"],
    );
    refused(
        &["push", "nope", v2_file.to_str().unwrap(), "--admin", &url],
        TOKEN,
        &["404", "no component `nope`"],
    );
    refused(
        &["rollback", "swapper", "--admin", "https://127.0.0.1:1"],
        TOKEN,
        &["not an http:// URL"],
    );
    // Nothing listens on the admin port once berth is gone.
    drop(s);
    refused(
        &["rollback", "swapper", "--admin", &url],
        TOKEN,
        &["cannot reach the admin API"],
    );
}
