//! Manifest reload: `berth serve --manifest F` re-reads F on SIGHUP (and
//! under `--watch` when it changes), checks it whole, and swaps routes,
//! grants, limits and components in at once; a bad manifest changes
//! nothing. Also `/openapi.json`, which follows the manifest.

use crate::support::{BERTH, Berth, Logs, Reply, data_dir, request_at, write_file};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

const TOKEN: &str = "correct-horse-battery-staple";

/// Bound on every wait for a reload to show.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);

fn guest(name: &str) -> Vec<u8> {
    crate::support::test_wasm_bytes(name)
}

const USERS: &str = "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n";
const SWAPPER: &str = "[components.swapper]\nwasm = \"v1.wasm\"\nroutes = [\"/swap\"]\n";

/// A server on a manifest file in a scratch folder holding `v1.wasm` and
/// `v2.wasm` (the swap test guests), with the admin API on port 0.
struct Served {
    berth: Berth,
    admin: SocketAddr,
    logs: Logs,
    manifest: PathBuf,
    dir: tempfile::TempDir,
}

fn serve(manifest: &str, extra: &[&str]) -> Served {
    let dir = data_dir();
    std::fs::write(dir.path().join("v1.wasm"), guest("swap_v1")).unwrap();
    std::fs::write(dir.path().join("v2.wasm"), guest("swap_v2")).unwrap();
    let path = write_file(dir.path(), "berth.toml", manifest);
    let token = write_file(dir.path(), "token", &format!("{TOKEN}\n"));
    let mut args = vec![
        "--manifest",
        path.to_str().unwrap(),
        "--admin",
        "127.0.0.1:0",
        "--admin-token-file",
        token.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let (mut berth, logs) = Berth::start_logged(&dir.path().join("data"), &args, &[]);
    let admin = berth.admin_addr();
    Served {
        berth,
        admin,
        logs,
        manifest: path,
        dir,
    }
}

impl Served {
    fn admin(&self, method: &str, path: &str, body: &[u8]) -> Reply {
        let auth = format!("Bearer {TOKEN}");
        request_at(self.admin, method, path, &[("authorization", &auth)], body)
    }

    /// Lines saying a SIGHUP reload was applied or rejected.
    fn reloads(&self) -> Vec<String> {
        self.logs
            .text()
            .lines()
            .filter(|l| l.contains("on SIGHUP"))
            .map(str::to_string)
            .collect()
    }

    /// Write the manifest, send SIGHUP and return the reload's log line.
    #[track_caller]
    fn reload(&self, manifest: &str) -> String {
        std::fs::write(&self.manifest, manifest).unwrap();
        let before = self.reloads().len();
        let status = Command::new("kill")
            .args(["-HUP", &self.berth.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success());
        crate::support::eventually(RELOAD_TIMEOUT, || self.reloads().get(before).cloned())
            .unwrap_or_else(|| panic!("no reload line; log:\n{}", self.logs.text()))
    }

    fn version(&self, path: &str) -> String {
        let reply = self.berth.get(path);
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.header("x-version").expect("x-version").to_string()
    }

    /// The admin API's components, by name.
    fn listing(&self) -> Vec<serde_json::Value> {
        let reply = self.admin("GET", "/components", b"");
        assert_eq!(reply.status, 200);
        reply.json().as_array().unwrap().clone()
    }

    fn openapi_paths(&self) -> Vec<String> {
        let reply = self.berth.get("/openapi.json");
        assert_eq!(reply.status, 200);
        let mut paths: Vec<String> = reply.json()["paths"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        paths.sort();
        paths
    }
}

#[test]
fn a_grant_added_by_sighup_lets_a_refused_call_through_under_load() {
    let orders = "[components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/orders\"]\n";
    let s = serve(&format!("{USERS}\n{orders}"), &[]);
    s.berth.post("/orders", r#"{"user_id": 1}"#).assert_error(
        503,
        "component `orders` may not call `users`; add it to `calls` in the manifest",
    );
    // Load that must never fail, before, during and after the reload.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, addr) = (stop.clone(), ok.clone(), s.berth.addr);
            std::thread::spawn(move || {
                let path = if i % 2 == 0 { "/users/1" } else { "/orders" };
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let reply = request_at(addr, "GET", path, &[], b"");
                    if reply.status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failures.push(format!("{path}: {}", reply.status));
                    }
                }
                failures
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let line = s.reload(&format!("{USERS}\n{orders}calls = [\"users\"]\n"));
    assert!(
        line.contains("reloaded on SIGHUP: grants: orders"),
        "{line}"
    );
    assert_eq!(s.berth.post("/orders", r#"{"user_id": 1}"#).status, 201);
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    assert!(failures.is_empty(), "failed under reload: {failures:?}");
    assert!(
        ok.load(Ordering::Relaxed) > 20,
        "too little load to prove anything"
    );
    // And taken away again.
    s.reload(&format!("{USERS}\n{orders}"));
    assert_eq!(s.berth.post("/orders", r#"{"user_id": 1}"#).status, 503);
}

#[test]
fn routes_and_components_are_added_and_removed() {
    let s = serve(&format!("{USERS}\n{SWAPPER}"), &[]);
    let addr = s.berth.addr;
    let slow = std::thread::spawn(move || request_at(addr, "GET", "/swap/slow?ms=3000", &[], b""));
    assert!(
        s.logs
            .wait_for_line(&["slow request started on v1"], RELOAD_TIMEOUT),
        "the slow request did not start"
    );
    let line = s.reload(
        "[components.swapper]\nwasm = \"v1.wasm\"\nroutes = [\"/moved\"]\n\n\
         [components.second]\nwasm = \"v2.wasm\"\nroutes = [\"/second\"]\n",
    );
    assert!(
        line.contains("reloaded on SIGHUP: added: second; removed: users; routes: swapper"),
        "{line}"
    );
    assert!(
        !slow.is_finished(),
        "the slow request ended before the reload"
    );
    let reply = slow.join().unwrap();
    assert_eq!(
        reply.status, 200,
        "a request running across the reload finishes"
    );
    assert_eq!(s.berth.get("/swap").status, 404);
    assert_eq!(s.berth.get("/users/1").status, 404);
    assert_eq!(s.version("/moved"), "v1");
    assert_eq!(s.version("/second"), "v2");
    let names: Vec<_> = s.listing().iter().map(|c| c["name"].clone()).collect();
    assert_eq!(names, ["second", "swapper"]);
    assert_eq!(
        s.listing()[1]["routes"],
        serde_json::json!(["/moved"]),
        "the admin API shows the new routes"
    );
    assert_eq!(
        s.openapi_paths(),
        ["/healthz", "/moved", "/openapi.json", "/readyz", "/second"]
    );
}

#[test]
fn a_bad_manifest_changes_nothing() {
    let good = format!("{USERS}\n{SWAPPER}");
    let s = serve(&good, &[]);
    std::fs::write(s.dir.path().join("module.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(s.dir.path().join("http.wasm"), guest("http_hello")).unwrap();
    let cases = [
        (format!("{good}[components.x\n"), "invalid manifest"),
        (
            format!("{good}\n[components.extra]\nwasm = \"missing.wasm\"\nroutes = [\"/extra\"]\n"),
            "component `extra`: cannot read",
        ),
        (
            format!("{good}\n[components.extra]\nwasm = \"module.wasm\"\nroutes = [\"/extra\"]\n"),
            "component `extra`",
        ),
        (
            // A wasi:http component cannot subscribe: it fails to link.
            format!(
                "{good}\n[components.extra]\nwasm = \"http.wasm\"\nroutes = [\"/extra\"]\nsubscribes = [\"x.y\"]\n"
            ),
            "component `extra` is a wasi:http component, which cannot receive events",
        ),
        (
            format!("{USERS}max_memory_mb = 4000\n{SWAPPER}"),
            "this change needs a restart",
        ),
        (
            format!("{USERS}openapi = \"nothing.json\"\n{SWAPPER}"),
            "component `users`: openapi document",
        ),
    ];
    for (manifest, needle) in cases {
        // Alongside each bad change, one the bad one must hold back.
        let manifest = manifest.replace("routes = [\"/swap\"]", "routes = [\"/swap\", \"/new\"]");
        let line = s.reload(&manifest);
        assert!(
            line.contains("rejected on SIGHUP; the old one keeps serving") && line.contains(needle),
            "expected a rejection naming {needle:?}: {line}"
        );
        assert_eq!(s.version("/swap"), "v1");
        assert_eq!(s.berth.get("/users/1").status, 200);
        assert_eq!(
            s.berth.get("/new").status,
            404,
            "part of a bad manifest was applied"
        );
        assert_eq!(s.berth.get("/extra").status, 404);
        assert_eq!(s.listing().len(), 2);
    }
    // The good one still applies afterwards.
    let line =
        s.reload(&format!("{USERS}\n{SWAPPER}").replace("\"/swap\"]", "\"/swap\", \"/new\"]"));
    assert!(line.contains("routes: swapper"), "{line}");
    assert_eq!(s.version("/new"), "v1");
}

#[test]
fn an_uploaded_version_survives_a_reload() {
    let s = serve(&format!("{USERS}\n{SWAPPER}"), &[]);
    assert_eq!(
        s.admin("PUT", "/components/swapper", &guest("swap_v2"))
            .status,
        200
    );
    assert_eq!(s.version("/swap"), "v2");
    // Another component changes; swapper's slot is kept as it is.
    let line = s.reload(&format!("{USERS}timeout_ms = 5000\n{SWAPPER}"));
    assert!(line.contains("limits: users"), "{line}");
    assert_eq!(s.version("/swap"), "v2");
    // swapper's own limits change: both versions are linked again.
    let line = s.reload(&format!(
        "{USERS}timeout_ms = 5000\n{SWAPPER}timeout_ms = 2000\n"
    ));
    assert!(line.contains("limits: swapper"), "{line}");
    assert_eq!(s.version("/swap"), "v2");
    assert_eq!(
        s.admin("POST", "/components/swapper/rollback", b"").status,
        200
    );
    assert_eq!(s.version("/swap"), "v1", "the previous version was kept");
    // A new wasm entry is a new component version: the manifest's.
    let line = s.reload(&format!(
        "{USERS}\n{}",
        SWAPPER.replace("v1.wasm", "v2.wasm")
    ));
    assert!(line.contains("new wasm: swapper"), "{line}");
    assert_eq!(s.version("/swap"), "v2");
}

#[test]
fn watch_picks_up_a_manifest_edit() {
    let s = serve(&format!("{USERS}\n{SWAPPER}"), &["--watch"]);
    assert!(
        s.logs
            .wait_for_line(&["watching the manifest"], RELOAD_TIMEOUT)
    );
    let tmp = s.manifest.with_extension("tmp");
    std::fs::write(
        &tmp,
        format!(
            "{USERS}\n{}",
            SWAPPER.replace("\"/swap\"", "\"/swap\", \"/edited\"")
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, &s.manifest).unwrap();
    assert!(
        s.logs
            .wait_for_line(&["reloaded on --watch: routes: swapper"], RELOAD_TIMEOUT),
        "no reload; log:\n{}",
        s.logs.text()
    );
    assert_eq!(s.version("/edited"), "v1");
    // The watched wasm files follow the manifest: a newly named one is
    // watched, and swapping its content shows.
    let line_count = s.logs.text().lines().count();
    std::fs::write(
        &tmp,
        format!("{USERS}\n[components.swapper]\nwasm = \"copy.wasm\"\nroutes = [\"/swap\"]\n"),
    )
    .unwrap();
    std::fs::write(s.dir.path().join("copy.wasm"), guest("swap_v1")).unwrap();
    std::fs::rename(&tmp, &s.manifest).unwrap();
    assert!(s.logs.wait_for_line(&["new wasm: swapper"], RELOAD_TIMEOUT));
    assert!(s.logs.text().lines().count() > line_count);
    std::fs::write(s.dir.path().join("copy.tmp"), guest("swap_v2")).unwrap();
    std::fs::rename(
        s.dir.path().join("copy.tmp"),
        s.dir.path().join("copy.wasm"),
    )
    .unwrap();
    let swapped = crate::support::eventually(RELOAD_TIMEOUT, || {
        (s.version("/swap") == "v2").then_some(())
    });
    assert!(
        swapped.is_some(),
        "the new file was not watched; log:\n{}",
        s.logs.text()
    );
}

#[test]
fn openapi_describes_what_is_served() {
    let dir = data_dir();
    std::fs::write(dir.path().join("v1.wasm"), guest("swap_v1")).unwrap();
    let doc = serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "swapper", "version": "1"},
        "paths": {"/": {"get": {"operationId": "version", "responses": {"200": {"description": "The version."}}}}}
    });
    write_file(dir.path(), "swapper.json", &doc.to_string());
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        &format!(
            "{USERS}\n[components.swapper]\nwasm = \"v1.wasm\"\nroutes = [\"/swap\"]\nstrip_prefix = true\nopenapi = \"swapper.json\"\n\n\
             [components.plain]\nwasm = \"v1.wasm\"\nroutes = [\"/plain\"]\n"
        ),
    );
    let berth = Berth::start_with(
        &dir.path().join("data"),
        &["--manifest", manifest.to_str().unwrap()],
    );
    let doc = berth.get("/openapi.json").json();
    let mut paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/healthz",
            "/openapi.json",
            "/plain",
            "/readyz",
            "/swap",
            "/users",
            "/users/{id}"
        ]
    );
    assert_eq!(doc["paths"]["/swap"]["get"]["operationId"], "version");
    assert!(
        doc["paths"]["/plain"]["summary"]
            .as_str()
            .unwrap()
            .contains("undocumented")
    );
    assert!(
        doc["components"]["schemas"].get("Order").is_none(),
        "orders is not served"
    );
    // The default manifest serves the document schemathesis checks in CI.
    let dir = data_dir();
    let default = Berth::start(dir.path());
    let served = default.get("/openapi.json").json();
    let checked_in: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/openapi.json")).unwrap();
    assert_eq!(served, checked_in);
}

#[test]
fn a_bad_openapi_document_is_refused_at_start_with_one_line() {
    let dir = data_dir();
    write_file(dir.path(), "users.json", r#"{"openapi": "3.0.3"}"#);
    let manifest = write_file(
        dir.path(),
        "berth.toml",
        &format!("{USERS}openapi = \"users.json\"\n"),
    );
    let output = Command::new(BERTH)
        .args(["serve", "--listen", "127.0.0.1:0", "--manifest"])
        .arg(&manifest)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = format!(
        "component `users`: openapi document {}: it has no `paths` object",
        dir.path().join("users.json").display()
    );
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("openapi document"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains(&expected), "{stderr}");
}

#[test]
fn event_subscriptions_follow_a_reload() {
    let users = format!("{USERS}publishes = [\"user.deleted\"]\n");
    let orders = "[components.orders]\nwasm = \"builtin:orders\"\nroutes = [\"/orders\"]\ncalls = [\"users\"]\n";
    let s = serve(&format!("{users}\n{orders}"), &[]);
    let pending_order_of = |name: &str| {
        let user = s
            .berth
            .post("/users", &format!(r#"{{"name":"{name}"}}"#))
            .json()["id"]
            .as_u64()
            .unwrap();
        let body = format!(r#"{{"user_id": {user}}}"#);
        let order = s.berth.post("/orders", &body).json()["id"]
            .as_u64()
            .unwrap();
        assert_eq!(s.berth.delete(&format!("/users/{user}")).status, 204);
        order
    };
    let status = |order: u64| {
        s.berth.get(&format!("/orders/{order}")).json()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // Nobody subscribes: the event reaches no one.
    let ann = pending_order_of("Ann");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(status(ann), "pending");
    let line = s.reload(&format!(
        "{users}\n{orders}subscribes = [\"user.deleted\"]\n"
    ));
    assert!(line.contains("grants: orders"), "{line}");
    let bob = pending_order_of("Bob");
    let cancelled = crate::support::eventually(RELOAD_TIMEOUT, || {
        (status(bob) == "cancelled").then_some(())
    });
    assert!(
        cancelled.is_some(),
        "the new subscriber got no event; log:\n{}",
        s.logs.text()
    );
    assert_eq!(
        status(ann),
        "pending",
        "an event published before it subscribed"
    );
}
