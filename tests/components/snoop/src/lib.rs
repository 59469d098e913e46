//! A test-only component that tries everything the sandbox must deny: other
//! components' keys, the filesystem, environment variables, arguments,
//! sockets, calls and events it was not granted. `GET /snoop?port=N` answers
//! a JSON report of what it managed; clocks are allowed and reported too.

use berth_sdk::http;
use berth_sdk::{Handler, Request, Response, events, kv, services};
use serde_json::{Value, json};

struct Snoop;

/// The key under which the users component keeps user 1.
const USERS_KEY: &str = "user/00000000000000000001";

impl Handler for Snoop {
    fn handle(request: Request) -> Response {
        let port = request
            .query_param("port")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(80);
        let report = json!({
            "kv": kv_report(),
            "fs": fs_report(),
            "env": env_report(),
            "net": net_report(port),
            "services": services_report(),
            "events": events_report(),
            "clock": clock_report(),
        });
        http::json(200, &report)
    }
}

berth_sdk::export!(Snoop);

fn kv_report() -> Value {
    let keys = |prefix: &str| match kv::list_keys(prefix, None, 1000) {
        Ok(keys) => json!(keys),
        Err(e) => json!(format!("error: {e:?}")),
    };
    // Read users' key by its plain name and by names that would escape a
    // naive namespace prefix.
    let read = |key: &str| match kv::get(key) {
        Ok(Some(value)) => json!(String::from_utf8_lossy(&value)),
        Ok(None) => Value::Null,
        Err(e) => json!(format!("error: {e:?}")),
    };
    // Everything is read before the write below, which would shadow it.
    let mut report = json!({
        "users_key": read(USERS_KEY),
        "escaped_key": read(&format!("../users/{USERS_KEY}")),
        "nul_key": read(&format!("users\0{USERS_KEY}")),
        "keys_before_write": keys(""),
    });
    // Written in snoop's own namespace: must not touch users' record.
    let wrote = kv::set(USERS_KEY, br#"{"id":1,"name":"Mallory"}"#).is_ok();
    report["wrote_own_copy"] = json!(wrote);
    report
}

fn fs_report() -> Value {
    let root = match std::fs::read_dir("/") {
        Ok(entries) => json!(
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        ),
        Err(e) => json!(format!("error: {e}")),
    };
    let passwd = match std::fs::read("/etc/passwd") {
        Ok(bytes) => json!(format!("read {} bytes", bytes.len())),
        Err(e) => json!(format!("error: {e}")),
    };
    let dot = match std::fs::read_dir(".") {
        Ok(entries) => json!(format!("listed {} entries", entries.count())),
        Err(e) => json!(format!("error: {e}")),
    };
    let write = match std::fs::write("/tmp/snoop", b"x") {
        Ok(()) => json!("wrote /tmp/snoop"),
        Err(e) => json!(format!("error: {e}")),
    };
    json!({ "read_dir_root": root, "read_passwd": passwd, "read_dir_cwd": dot, "write_tmp": write })
}

fn env_report() -> Value {
    json!({
        "vars": std::env::vars().map(|(k, _)| k).collect::<Vec<_>>(),
        "args": std::env::args().collect::<Vec<_>>(),
        "cwd": std::env::current_dir().map(|d| d.display().to_string()).ok(),
    })
}

fn net_report(port: u16) -> Value {
    let connect = match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(_) => json!(format!("connected to 127.0.0.1:{port}")),
        Err(e) => json!(format!("error: {e}")),
    };
    let bind = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => json!(format!("bound {:?}", l.local_addr().ok())),
        Err(e) => json!(format!("error: {e}")),
    };
    let udp = match std::net::UdpSocket::bind("127.0.0.1:0") {
        Ok(s) => json!(format!("bound {:?}", s.local_addr().ok())),
        Err(e) => json!(format!("error: {e}")),
    };
    let lookup = match std::net::ToSocketAddrs::to_socket_addrs(&("localhost", port)) {
        Ok(addrs) => json!(format!("resolved {} addresses", addrs.count())),
        Err(e) => json!(format!("error: {e}")),
    };
    json!({ "connect": connect, "bind": bind, "udp": udp, "lookup": lookup })
}

fn services_report() -> Value {
    let request = Request::new("GET", "/users/1");
    match services::call("users", &request) {
        Ok(response) => json!(format!("answered {}", response.status)),
        Err(e) => json!(format!("error: {e:?}")),
    }
}

fn events_report() -> Value {
    match events::publish("user.deleted", r#"{"id":1}"#) {
        Ok(()) => json!("published"),
        Err(e) => json!(format!("error: {e:?}")),
    }
}

fn clock_report() -> Value {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let monotonic = std::time::Instant::now().elapsed().as_nanos() < 1_000_000_000;
    json!({ "unix_secs": since_epoch, "monotonic": monotonic })
}
