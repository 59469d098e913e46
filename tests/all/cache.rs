//! The compile cache: a restart loads compiled components from
//! `DATA/compiled` instead of compiling again, and a damaged entry is
//! ignored, not trusted; `berth compile` fills it ahead of time.

use crate::support::{BERTH, Berth, compiled_entries, data_dir};
use std::process::Command;

#[test]
fn a_restart_reuses_compiled_components_and_ignores_damaged_ones() {
    let dir = data_dir();
    let berth = Berth::start(dir.path());
    assert_eq!(berth.get("/users/1").status, 200);
    assert_eq!(berth.terminate().code(), Some(0));
    let cached = compiled_entries(dir.path());
    assert_eq!(
        cached.len(),
        2,
        "one entry each for users and orders: {cached:?}"
    );
    let written: Vec<_> = cached
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();

    // Unchanged entries are loaded, not rewritten.
    let berth = Berth::start(dir.path());
    assert_eq!(berth.get("/users/1").json()["name"], "John");
    assert_eq!(berth.terminate().code(), Some(0));
    let again: Vec<_> = cached
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert_eq!(written, again, "a cache hit rewrote its entry");

    // Flip one byte of compiled code: the entry fails its checksum, so the
    // component is compiled afresh (and the entry rewritten) instead.
    let mut damaged = std::fs::read(&cached[0]).unwrap();
    let last = damaged.len() - 1;
    damaged[last] ^= 0xff;
    std::fs::write(&cached[0], &damaged).unwrap();
    let berth = Berth::start(dir.path());
    assert_eq!(berth.get("/users/1").json()["name"], "John");
    assert_eq!(berth.get("/orders/1").status, 200);
    assert_eq!(berth.terminate().code(), Some(0));
    assert_ne!(
        std::fs::read(&cached[0]).unwrap(),
        damaged,
        "the damaged entry was kept"
    );
    assert_eq!(compiled_entries(dir.path()), cached);
}

/// `berth compile` writes what `berth serve` then loads without compiling:
/// the server rewrites no entry and adds none.
#[test]
fn berth_compile_fills_the_cache_a_server_then_uses() {
    let dir = data_dir();
    let cache = dir.path().join("compiled");
    let out = Command::new(BERTH)
        .args(["compile", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("orders: "), "{stdout}");
    assert!(stdout.contains("users: "), "{stdout}");
    assert!(stdout.contains("compiled 2 component(s)"), "{stdout}");
    let compiled = compiled_entries(dir.path());
    assert_eq!(compiled.len(), 2, "{compiled:?}");
    let written: Vec<_> = compiled
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();

    // A server with other pool flags than `compile`'s defaults still hits.
    let berth = Berth::start_with(dir.path(), &["--max-in-flight", "7"]);
    assert_eq!(berth.get("/users/1").json()["name"], "John");
    assert_eq!(berth.terminate().code(), Some(0));
    assert_eq!(
        compiled_entries(dir.path()),
        compiled,
        "the server compiled anew"
    );
    let again: Vec<_> = compiled
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect();
    assert_eq!(
        written, again,
        "the server rewrote an entry it should have loaded"
    );

    // A manifest naming a file that is not a component: exit 1, one line
    // naming it, and nothing cached for it.
    let manifest = dir.path().join("bad.toml");
    std::fs::write(dir.path().join("junk.wasm"), b"not wasm").unwrap();
    std::fs::write(
        &manifest,
        "[components.junk]\nwasm = \"junk.wasm\"\nroutes = [\"/junk\"]\n",
    )
    .unwrap();
    let out = Command::new(BERTH)
        .args(["compile", "--manifest"])
        .arg(&manifest)
        .arg("--cache-dir")
        .arg(&cache)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("component `junk`"), "{stderr}");
    assert_eq!(compiled_entries(dir.path()), compiled);
}
