//! `berth dev`: a project is built, served, and rebuilt and swapped on each
//! saved change, under load, with no failed request; a failed build keeps
//! the running version. The project here is a shell build that picks the
//! `swap_v1` or `swap_v2` test guest by what `src/version` says, so the
//! loop is tested without waiting on a compiler (the new-user test builds a
//! real Rust project).

use crate::support::{BERTH, Starting, test_wasm};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bound on every wait for a rebuild to be served.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(30);

/// A project whose build copies the guest `src/version` names to
/// `out/app.wasm`, failing with a compiler-like message on anything else.
fn project(version: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let guests = Path::new(&test_wasm("swap_v1"))
        .parent()
        .unwrap()
        .display()
        .to_string();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/version"), version).unwrap();
    let script = format!(
        "#!/bin/sh\nset -e\nv=$(cat src/version)\n\
         case \"$v\" in v1|v2) ;; *) echo \"error: src/version says $v; expected v1 or v2\" >&2; exit 1;; esac\n\
         mkdir -p out\ncp {guests}/swap_$v.wasm out/app.wasm.tmp\nmv out/app.wasm.tmp out/app.wasm\n"
    );
    let build = dir.path().join("build.sh");
    std::fs::write(&build, script).unwrap();
    std::fs::set_permissions(&build, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.path().join("berth.toml"),
        "[components.app]\nwasm = \"out/app.wasm\"\nroutes = [\"/swap\"]\n",
    )
    .unwrap();
    dir
}

#[test]
fn a_saved_change_is_built_and_served_without_a_failed_request() {
    let dir = project("v1");
    let (berth, logs) = Starting::spawn_dev(dir.path(), &[]).ready();
    let version = |berth: &crate::support::Berth| {
        let reply = berth.get("/swap");
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        reply.header("x-version").unwrap_or_default().to_string()
    };
    assert_eq!(version(&berth), "v1");
    assert!(logs.text().contains("dev: built in"), "{}", logs.text());

    // Load throughout, from a thread of its own.
    let berth = Arc::new(berth);
    let running = Arc::new(AtomicBool::new(true));
    let (served, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (berth, running) = (berth.clone(), running.clone());
        let (served, failed) = (served.clone(), failed.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while running.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(120) {
                let reply = berth.get("/swap");
                let counter = if reply.status == 200 {
                    &served
                } else {
                    &failed
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let saved = Instant::now();
    std::fs::write(dir.path().join("src/version"), "v2").unwrap();
    while version(&berth) != "v2" {
        assert!(
            saved.elapsed() < REBUILD_TIMEOUT,
            "v2 was not served within {REBUILD_TIMEOUT:?}; log:\n{}",
            logs.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = saved.elapsed();
    assert!(logs.wait_for_line(&["dev: src/version changed; building"], Duration::ZERO));
    assert!(logs.wait_for_line(&["swapped in a new version"], Duration::from_secs(5)));

    // A build that fails says why, and v2 keeps serving.
    std::fs::write(dir.path().join("src/version"), "v3").unwrap();
    assert!(
        logs.wait_for_line(&["src/version says v3; expected v1 or v2"], REBUILD_TIMEOUT),
        "the failed build's output was not shown; log:\n{}",
        logs.text()
    );
    assert!(logs.text().contains("the build failed (exit status: 1)"));
    assert_eq!(version(&berth), "v2");

    running.store(false, Ordering::Relaxed);
    load.join().unwrap();
    eprintln!(
        "dev: saved to served in {} ms; {} requests served during the rebuilds, {} failed",
        took.as_millis(),
        served.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(served.load(Ordering::Relaxed) > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0);
}

#[test]
fn a_first_build_that_leaves_nothing_to_serve_stops_with_its_errors() {
    let dir = project("nonsense");
    let out = std::process::Command::new(BERTH)
        .current_dir(dir.path())
        .args(["dev", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("src/version says nonsense"), "{stderr}");
    assert!(
        stderr.contains(
            "the first build (`./build.sh`) failed (exit status: 1) and left nothing to serve"
        ),
        "{stderr}"
    );
}

#[test]
fn a_project_without_a_manifest_or_a_build_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let dev = |args: &[&str]| {
        let out = std::process::Command::new(BERTH)
            .current_dir(dir.path())
            .arg("dev")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(dev(&[]).contains("there is no manifest at ./berth.toml"));
    std::fs::write(dir.path().join("berth.toml"), "").unwrap();
    assert!(dev(&[]).contains("has no Cargo.toml and no build.sh: pass --build COMMAND"));
    assert!(dev(&["no-such-dir"]).contains("no-such-dir is not a directory"));
}
