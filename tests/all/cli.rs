//! Start-up: help text, and manifests that must stop berth before it binds.

use crate::support::{BERTH, Berth, data_dir, write_file};
use std::process::Command;

/// Run `berth serve` expecting it to refuse to start; return its stderr.
fn refused(args: &[&str]) -> String {
    let dir = data_dir();
    let output = Command::new(BERTH)
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(args)
        .output()
        .expect("running berth");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "berth started: {stdout}");
    assert!(
        !stdout.contains("listening on"),
        "berth bound the port: {stdout}"
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn help_documents_every_flag() {
    let output = Command::new(BERTH)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--data",
        "--manifest",
        "--max-connections",
        "--max-in-flight",
        "--max-body-bytes",
        "--drain-timeout-secs",
    ] {
        assert!(help.contains(flag), "serve --help lacks {flag}:\n{help}");
    }
    let output = Command::new(BERTH).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("serve"));
}

#[test]
fn missing_manifest_file_is_reported() {
    let stderr = refused(&["--manifest", "/nonexistent/berth.toml"]);
    assert!(
        stderr.contains("reading manifest /nonexistent/berth.toml"),
        "{stderr}"
    );
}

#[test]
fn missing_wasm_file_is_reported() {
    let dir = data_dir();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        "[components.users]\nwasm = \"gone.wasm\"\nroutes = [\"/users\"]\n",
    );
    let stderr = refused(&["--manifest", manifest.to_str().unwrap()]);
    assert!(
        stderr.contains("component `users`: cannot read"),
        "{stderr}"
    );
    assert!(stderr.contains("gone.wasm"), "{stderr}");
}

#[test]
fn a_file_that_is_not_a_component_is_reported() {
    let dir = data_dir();
    write_file(dir.path(), "junk.wasm", "this is not wasm");
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        "[components.junk]\nwasm = \"junk.wasm\"\nroutes = [\"/junk\"]\n",
    );
    let stderr = refused(&["--manifest", manifest.to_str().unwrap()]);
    assert!(
        stderr.contains("component `junk` is not a valid WebAssembly component"),
        "{stderr}"
    );
}

#[test]
fn duplicate_routes_are_reported() {
    let dir = data_dir();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n\n[components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/users\"]\n",
    );
    let stderr = refused(&["--manifest", manifest.to_str().unwrap()]);
    assert!(
        stderr.contains("route `/users` is claimed by both `orders` and `users`"),
        "{stderr}"
    );
}

#[test]
fn a_manifest_with_relative_paths_serves() {
    let dir = data_dir();
    std::fs::write(dir.path().join("u.wasm"), berth_users_wasm()).unwrap();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        "[components.people]\nwasm = \"u.wasm\"\nroutes = [\"/users\"]\n",
    );
    let data = data_dir();
    let berth = Berth::start_with(data.path(), &["--manifest", manifest.to_str().unwrap()]);
    assert_eq!(berth.get("/users/1").json()["name"], "John");
    berth
        .get("/orders")
        .assert_error(404, "no service is routed at /orders");
}

#[test]
fn port_in_use_is_reported() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = data_dir();
    let output = Command::new(BERTH)
        .args(["serve", "--listen", &addr, "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

fn berth_users_wasm() -> &'static [u8] {
    berth::builtin::USERS
}

/// A component whose memory starts larger than its `max_memory_mb` could
/// never be instantiated: it is refused at start-up, with the size to ask
/// for, instead of failing every request with a 500. (Another component's
/// larger cap sizes the pool, so the engine alone would not refuse it.)
#[test]
fn a_component_whose_memory_starts_past_its_cap_is_refused() {
    let dir = data_dir();
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\nmax_memory_mb = 1\n\n[components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/orders\"]\nmax_memory_mb = 64\n",
    );
    let stderr = refused(&["--manifest", manifest.to_str().unwrap()]);
    assert!(
        stderr.contains("component `users` starts with")
            && stderr.contains("more than its max_memory_mb of 1: set max_memory_mb to at least 2"),
        "{stderr}"
    );
}

#[test]
fn keep_resident_is_bounded() {
    let stderr = refused(&["--keep-resident-mb", "4096"]);
    assert!(stderr.contains("--keep-resident-mb"), "{stderr}");
}

/// A component of the plain `service` world exports no event handler. It
/// serves; given `subscribes` in its manifest entry it is refused at
/// start-up, naming the missing export, instead of dead-lettering every
/// event it is sent. A `wasi:http` component cannot receive events at all.
#[test]
fn a_subscriber_without_an_event_handler_is_refused() {
    let dir = data_dir();
    let plain = crate::support::test_wasm("plain_service");
    let table = |name: &str, wasm: &str, extra: &str| {
        format!("[components.{name}]\nwasm = {wasm:?}\nroutes = [\"/{name}\"]\n{extra}")
    };
    let serving = write_file(dir.path(), "serving.toml", &table("plain", &plain, ""));
    let berth = Berth::start_with(dir.path(), &["--manifest", serving.to_str().unwrap()]);
    let reply = berth.get("/plain");
    assert_eq!((reply.status, reply.body.as_slice()), (200, &b"plain"[..]));
    drop(berth);

    let subscribing = write_file(
        dir.path(),
        "subscribing.toml",
        &table("plain", &plain, "subscribes = [\"user.deleted\"]\n"),
    );
    let stderr = refused(&["--manifest", subscribing.to_str().unwrap()]);
    assert!(
        stderr.contains("component `plain` has `subscribes`")
            && stderr.contains("does not export `berth:service/subscriber`"),
        "{stderr}"
    );

    let http = crate::support::test_wasm("http_hello");
    let http_subscribing = write_file(
        dir.path(),
        "http.toml",
        &table("hello", &http, "subscribes = [\"user.deleted\"]\n"),
    );
    let stderr = refused(&["--manifest", http_subscribing.to_str().unwrap()]);
    assert!(
        stderr.contains("component `hello` is a wasi:http component, which cannot receive events"),
        "{stderr}"
    );
}
