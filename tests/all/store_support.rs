//! Helpers of the store tests: created ids, and a `berth serve`
//! whose stderr is collected and whose file-size limit can be changed.

use crate::support::eventually;
use crate::support::{BERTH, Logs, Reply, parse_reply};
use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The id of a 201 reply's record.
pub fn created_id(reply: &Reply) -> u64 {
    assert_eq!(
        reply.status,
        201,
        "body: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()["id"].as_u64().expect("an id")
}

/// A `berth serve` whose stderr is collected, for the tests that watch it
/// refuse to start or wait, unready.
pub struct Server {
    pub child: Child,
    stderr: Logs,
}

impl Server {
    /// `berth serve` on port 0, run by `prefix` (a command that runs its
    /// arguments, or nothing). SIGXFSZ is ignored, as it is inherited
    /// through exec, so a file-size limit fails writes as a full disk would
    /// instead of killing the server.
    pub fn spawn(prefix: &[&str], data: &Path, args: &[&str]) -> Server {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("trap '' XFSZ; exec \"$@\"")
            .arg("sh")
            .args(prefix)
            .args([BERTH, "serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning berth");
        let stderr = Logs::collect(child.stderr.take().expect("piped stderr"));
        Server { child, stderr }
    }

    pub fn stderr(&self) -> String {
        self.stderr.text()
    }

    /// The address from the `bound` log line.
    pub fn addr(&self) -> SocketAddr {
        let line = eventually(Duration::from_secs(60), || {
            self.stderr()
                .lines()
                .find(|l| l.contains("bound") && l.contains("addr="))
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no `bound` line:\n{}", self.stderr()));
        let addr = line.split("addr=").nth(1).unwrap();
        addr.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// Set the server's soft file-size limit (`unlimited` lifts it); the
    /// hard one stays, since raising it again would take CAP_SYS_RESOURCE.
    pub fn limit_file_size(&self, limit: &str) {
        let status = Command::new("prlimit")
            .args(["--pid", &self.child.id().to_string()])
            .arg(format!("--fsize={limit}:"))
            .status()
            .expect("running prlimit");
        assert!(status.success(), "prlimit failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` with a short timeout; `None` if the server does not answer.
pub fn try_get(addr: SocketAddr, path: &str) -> Option<Reply> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    Some(parse_reply(&raw))
}
