//! Support of the broker tests: the RabbitMQ node `BERTH_TEST_RABBITMQ`
//! names, a virtual host of its own per test on it (so tests running side
//! by side never share a queue), private throw-away nodes from
//! `tests/rabbitmq/broker.sh` for tests that stop and resume the broker
//! without disturbing the others, and counts read from `/metrics`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// What a test prints when there is no shared node to run against.
const SKIP: &str = "skipped: BERTH_TEST_RABBITMQ is not set (test.sh sets it when RabbitMQ \
                    is installed; or run tests/rabbitmq/broker.sh start DIR and export the \
                    URL it prints)";

/// What a test prints when it cannot start a node of its own.
const SKIP_PRIVATE: &str = "skipped: RabbitMQ is not installed (apt-get install rabbitmq-server)";

/// Whether a test without a broker must fail rather than skip, so a CI run
/// cannot pass by skipping.
fn required() -> bool {
    std::env::var("BERTH_REQUIRE_RABBITMQ").as_deref() == Ok("1")
}

/// The shared node's URL from `BERTH_TEST_RABBITMQ`, or `None` (after saying
/// the test is skipped). With `BERTH_REQUIRE_RABBITMQ=1` a missing URL fails
/// the test instead. Tests sharing it must not stop it: use [`Broker`].
pub fn broker_url() -> Option<String> {
    match std::env::var("BERTH_TEST_RABBITMQ") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_string()),
        _ if required() => panic!("BERTH_REQUIRE_RABBITMQ=1 but {SKIP}"),
        _ => {
            eprintln!("{SKIP}");
            None
        }
    }
}

/// The directory of the shared node (`BERTH_TEST_RABBITMQ_DIR`, which
/// test.sh sets beside the URL), where vhosts are made; `None` (after
/// saying the test is skipped) without it, unless
/// `BERTH_REQUIRE_RABBITMQ=1`.
fn node_dir() -> Option<PathBuf> {
    match std::env::var("BERTH_TEST_RABBITMQ_DIR") {
        Ok(dir) if !dir.trim().is_empty() => Some(PathBuf::from(dir.trim())),
        _ if required() => panic!("BERTH_REQUIRE_RABBITMQ=1 but {SKIP_DIR}"),
        _ => {
            eprintln!("{SKIP_DIR}");
            None
        }
    }
}

/// What a test that needs a vhost of its own prints without the node's
/// directory.
const SKIP_DIR: &str = "skipped: BERTH_TEST_RABBITMQ_DIR is not set (test.sh sets it when \
                        RabbitMQ is installed: the directory tests/rabbitmq/broker.sh start made)";

/// A virtual host of its own for one test, deleted at the end.
pub struct Vhost {
    /// The URL berth is given: the node's, naming this vhost.
    pub url: String,
    name: String,
    node: PathBuf,
}

impl Vhost {
    /// A new vhost on the test node; `None` when the test is to be skipped.
    pub fn fresh() -> Option<Vhost> {
        let node = node_dir()?;
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "berth-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let url = Broker::run(&["vhost".as_ref(), node.as_os_str(), name.as_ref()])
            .unwrap_or_else(|e| panic!("{e}"));
        Some(Vhost { url, name, node })
    }
}

impl Vhost {
    /// `rabbitmqctl ARGS` on the node, in this vhost (`-p NAME` is added
    /// after the command); its output.
    pub fn ctl(&self, command: &str, args: &[&str]) -> String {
        let mut script_args: Vec<&std::ffi::OsStr> = vec![
            "ctl".as_ref(),
            self.node.as_os_str(),
            command.as_ref(),
            "-p".as_ref(),
            self.name.as_ref(),
        ];
        script_args.extend(args.iter().map(std::ffi::OsStr::new));
        Broker::run(&script_args).unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Broker::run(&[
            "drop-vhost".as_ref(),
            self.node.as_os_str(),
            self.name.as_ref(),
        ]);
    }
}

/// A throw-away RabbitMQ node of one test's own, so the test can stop and
/// resume it (same port, user and durable queues). Stopped when dropped.
pub struct Broker {
    /// `amqp://berth:PASSWORD@127.0.0.1:PORT/berth`.
    pub url: String,
    dir: tempfile::TempDir,
}

impl Broker {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/rabbitmq/broker.sh")
    }

    /// `broker.sh ACTION DIR`; its output, or why it failed.
    fn run(script_args: &[&std::ffi::OsStr]) -> Result<String, String> {
        let output = Command::new("bash")
            .arg(Broker::script())
            .args(script_args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running tests/rabbitmq/broker.sh: {e}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(format!(
                "tests/rabbitmq/broker.sh {:?} failed ({}):\n{}{}",
                script_args,
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }

    fn action(&self, action: &str) -> String {
        Broker::run(&[action.as_ref(), self.dir.path().as_os_str()])
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A new node, started; `None` (after saying the test is skipped) when
    /// RabbitMQ is not installed, unless `BERTH_REQUIRE_RABBITMQ=1`.
    pub fn start() -> Option<Broker> {
        if let Err(why) = Broker::run(&["bindir".as_ref()]) {
            assert!(!required(), "BERTH_REQUIRE_RABBITMQ=1 but {why}");
            eprintln!("{SKIP_PRIVATE}");
            return None;
        }
        let dir = tempfile::tempdir().expect("a directory for the broker");
        let mut broker = Broker {
            url: String::new(),
            dir,
        };
        broker.url = broker.action("start");
        Some(broker)
    }

    /// Stop the node and wait until it has exited.
    pub fn stop(&self) {
        self.action("stop");
    }

    /// Start the stopped node again; it keeps its URL.
    pub fn resume(&self) {
        let url = self.action("resume");
        assert_eq!(url, self.url, "a resumed node must keep its URL");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Broker::run(&["stop".as_ref(), self.dir.path().as_os_str()]);
    }
}

/// How an AMQP 0-9-1 login with the URL's user and password went, spoken
/// by hand (the protocol header, then `connection.start-ok` with PLAIN) so
/// the harness is checked without the client under test.
#[derive(Debug, PartialEq)]
pub enum Login {
    /// The broker went on to `connection.tune`: the credentials are good.
    Accepted,
    /// The broker closed the connection: the credentials are not.
    Refused,
}

pub fn amqp_login(url: &str) -> Result<Login, String> {
    let rest = url.strip_prefix("amqp://").ok_or("not an amqp:// URL")?;
    let (userinfo, hostpath) = rest.split_once('@').ok_or("no user in the URL")?;
    let (user, password) = userinfo.split_once(':').ok_or("no password in the URL")?;
    let host = hostpath.split('/').next().unwrap_or_default();
    let mut s = TcpStream::connect(host).map_err(|e| format!("connecting to {host}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"AMQP\x00\x00\x09\x01")
        .map_err(|e| e.to_string())?;
    let start = read_method(&mut s)?.ok_or("the broker closed before connection.start")?;
    if start != (10, 10) {
        return Err(format!("expected connection.start (10, 10), got {start:?}"));
    }

    let mut args = Vec::new();
    args.extend_from_slice(&0u32.to_be_bytes()); // client-properties: an empty table
    short_str(&mut args, "PLAIN");
    let response = format!("\0{user}\0{password}");
    args.extend_from_slice(&(response.len() as u32).to_be_bytes());
    args.extend_from_slice(response.as_bytes());
    short_str(&mut args, "en_US");
    let mut payload = vec![0, 10, 0, 11]; // connection.start-ok
    payload.extend_from_slice(&args);
    let mut frame = vec![1, 0, 0];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    s.write_all(&frame).map_err(|e| e.to_string())?;

    // RabbitMQ answers bad credentials by closing the socket (after a
    // connection.close where the client asked for it; this one did not).
    match read_method(&mut s)? {
        Some((10, 30)) => Ok(Login::Accepted),
        None | Some((10, 50)) => Ok(Login::Refused),
        Some(other) => Err(format!("unexpected method {other:?} after start-ok")),
    }
}

fn short_str(out: &mut Vec<u8>, s: &str) {
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
}

/// The (class, method) of the next method frame, or `None` if the broker
/// closed the connection.
fn read_method(s: &mut TcpStream) -> Result<Option<(u16, u16)>, String> {
    let mut header = [0u8; 7];
    match s.read_exact(&mut header) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(format!("reading a frame: {e}")),
    }
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
    let mut payload = vec![0u8; size + 1];
    s.read_exact(&mut payload)
        .map_err(|e| format!("reading a frame's payload: {e}"))?;
    if header[0] != 1 || size < 4 {
        return Err(format!("expected a method frame, got type {}", header[0]));
    }
    Ok(Some((
        u16::from_be_bytes([payload[0], payload[1]]),
        u16::from_be_bytes([payload[2], payload[3]]),
    )))
}

fn with_password(url: &str, password: &str) -> String {
    let (scheme_user, rest) = url.split_once('@').expect("a user in the URL");
    let (scheme_user, _) = scheme_user.rsplit_once(':').expect("a password in the URL");
    format!("{scheme_user}:{password}@{rest}")
}

/// The shared node lets the URL's user in, and nobody with another password.
#[test]
fn the_shared_broker_takes_its_urls_credentials_only() {
    let Some(url) = broker_url() else { return };
    assert_eq!(amqp_login(&url), Ok(Login::Accepted));
    assert_eq!(
        amqp_login(&with_password(&url, "not-the-password")),
        Ok(Login::Refused)
    );
}

/// A private node stopped refuses connections; resumed, it takes the same
/// URL's credentials again.
#[test]
fn a_private_broker_stops_and_resumes_on_the_same_url() {
    let Some(broker) = Broker::start() else {
        return;
    };
    assert_eq!(amqp_login(&broker.url), Ok(Login::Accepted));
    broker.stop();
    let refused = amqp_login(&broker.url).expect_err("a stopped broker must refuse connections");
    assert!(refused.contains("connecting to"), "{refused}");
    broker.resume();
    assert_eq!(amqp_login(&broker.url), Ok(Login::Accepted));
}

/// The sum of the `/metrics` samples of `family` whose labels contain every
/// one of `labels` (each `name="value"`).
pub fn metric(addr: SocketAddr, family: &str, labels: &[&str]) -> u64 {
    let Ok(reply) = crate::pg::try_get(addr, "/metrics") else {
        return 0;
    };
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    text.lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter(|line| labels.iter().all(|label| line.contains(label)))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

/// How events travel in a test: delivered by the process itself, or
/// through a RabbitMQ vhost of the test's own (`--broker`). The event tests
/// run both ways, so the two transports keep the same guarantees.
pub enum Transport {
    InProcess,
    Broker(Vhost),
}

impl Transport {
    /// Through a fresh vhost; `None` when broker tests are to be skipped.
    pub fn broker() -> Option<Transport> {
        Vhost::fresh().map(Transport::Broker)
    }

    /// `berth serve` flags for this transport.
    pub fn serve_args(&self) -> Vec<&str> {
        match self {
            Transport::InProcess => vec![],
            Transport::Broker(vhost) => vec!["--broker", &vhost.url],
        }
    }

    /// `berth dead-letters` flags naming where the dead letters are: the
    /// store in `data`, or the broker's queues of `manifest`'s subscribers.
    pub fn dead_letter_args<'a>(
        &'a self,
        data: &'a Path,
        manifest: &'a Path,
    ) -> Vec<&'a std::ffi::OsStr> {
        match self {
            Transport::InProcess => vec!["--data".as_ref(), data.as_os_str()],
            Transport::Broker(vhost) => vec![
                "--broker".as_ref(),
                vhost.url.as_ref(),
                "--manifest".as_ref(),
                manifest.as_os_str(),
            ],
        }
    }

    /// A well-formed dead letter id that names none.
    pub fn unknown_dead_letter(&self) -> &'static str {
        match self {
            Transport::InProcess => "999999",
            Transport::Broker(_) => "flaky/evt-unknown",
        }
    }
}
