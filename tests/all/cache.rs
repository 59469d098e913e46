//! The compile cache: a restart loads compiled components from
//! `DATA/compiled` instead of compiling again, and a damaged entry is
//! ignored, not trusted.

use crate::support::{Berth, compiled_entries, data_dir};

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
