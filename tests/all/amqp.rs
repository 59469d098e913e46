//! Support of the broker tests: a fresh virtual host per test on the
//! RabbitMQ node `BERTH_TEST_RABBITMQ_DIR` holds (tests/rabbitmq/broker.sh
//! made it), so parallel tests never share a queue; a private node for a
//! test that stops the broker; and counts read from `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// What a test prints when there is no broker to run against.
const SKIP: &str = "skipped: BERTH_TEST_RABBITMQ_DIR is not set \
                    (tests/rabbitmq/broker.sh starts a node; test.sh does it for you)";

/// The directory of the test node, or `None` (after saying the test is
/// skipped). With `BERTH_REQUIRE_RABBITMQ=1` a missing node fails the test
/// instead, so a CI run cannot pass by skipping.
fn node_dir() -> Option<PathBuf> {
    match std::env::var("BERTH_TEST_RABBITMQ_DIR") {
        Ok(dir) if !dir.trim().is_empty() => Some(PathBuf::from(dir.trim())),
        _ if std::env::var("BERTH_REQUIRE_RABBITMQ").as_deref() == Ok("1") => {
            panic!("BERTH_REQUIRE_RABBITMQ=1 but {SKIP}")
        }
        _ => {
            eprintln!("{SKIP}");
            None
        }
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/rabbitmq/broker.sh")
}

/// `broker.sh ARGS...`; its output, or a panic with its error.
fn broker_sh(args: &[&str]) -> String {
    let output = Command::new("bash")
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running tests/rabbitmq/broker.sh");
    assert!(
        output.status.success(),
        "tests/rabbitmq/broker.sh {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

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
        let url = broker_sh(&["vhost", node.to_str().unwrap(), &name]);
        Some(Vhost { url, name, node })
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["drop-vhost", self.node.to_str().unwrap(), &self.name])
            .stdin(Stdio::null())
            .output();
    }
}

/// A RabbitMQ node of the test's own, for a test that stops and restarts
/// the broker; stopped and removed at the end.
pub struct PrivateBroker {
    pub url: String,
    dir: tempfile::TempDir,
}

impl PrivateBroker {
    /// `None` when broker tests are to be skipped.
    pub fn start() -> Option<PrivateBroker> {
        node_dir()?;
        let dir = tempfile::tempdir().expect("a directory for the node");
        let url = broker_sh(&["start", dir.path().to_str().unwrap()]);
        Some(PrivateBroker { url, dir })
    }

    pub fn stop(&self) {
        broker_sh(&["stop", self.dir.path().to_str().unwrap()]);
    }

    pub fn resume(&self) {
        broker_sh(&["resume", self.dir.path().to_str().unwrap()]);
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", self.dir.path().to_str().unwrap()])
            .stdin(Stdio::null())
            .output();
    }
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
