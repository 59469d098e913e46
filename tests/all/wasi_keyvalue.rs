//! `wasi:keyvalue` for standard `wasi:http` components (the `http-counter`
//! test guest): what a request wrote survives a SIGKILL of the real binary
//! once its response was acknowledged, before or after its headers left;
//! a trapped request's writes are discarded; two components' keys are
//! separate; and a bucket other than the component's own is refused with
//! `no-such-store`.

use crate::support::{Berth, Reply, data_dir, test_wasm, write_file};
use std::path::Path;

/// Serve two components of the `http-counter` guest, `tally` and `other`,
/// each at its own prefix, with the store in `dir/data`.
fn start(dir: &Path) -> Berth {
    let mut manifest = String::new();
    for name in ["tally", "other"] {
        manifest.push_str(&format!(
            "[components.{name}]\nwasm = {:?}\nroutes = [\"/{name}\"]\nstrip_prefix = true\n\n",
            test_wasm("http_counter")
        ));
    }
    let path = write_file(dir, "berth.toml", &manifest);
    Berth::start_with(&dir.join("data"), &["--manifest", path.to_str().unwrap()])
}

fn text(reply: &Reply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// GET `path` and expect a 200 with exactly `body`.
fn expect(berth: &Berth, path: &str, body: &str) {
    let reply = berth.get(path);
    assert_eq!(
        (reply.status, text(&reply).as_str()),
        (200, body),
        "GET {path}"
    );
}

#[test]
fn writes_survive_sigkill_and_components_keep_their_own_keys() {
    let dir = data_dir();
    let berth = start(dir.path());
    for n in 1..=3 {
        expect(&berth, "/tally/count", &n.to_string());
    }
    expect(&berth, "/other/count", "1");
    expect(&berth, "/tally/hits", "1");
    expect(&berth, "/tally/hits", "2");
    // A write made after the response was set is durable once the body
    // ends. (Which of the two commits takes it depends on when the host
    // sees the response, so this does not single out the second one.)
    let late = berth.get("/tally/late");
    assert_eq!(late.status, 200);
    // Chunked: whole only if its last chunk came, which the host sends
    // once the handler has returned and its writes are committed.
    let body = text(&late);
    assert!(
        body.contains("written") && body.ends_with("\r\n0\r\n\r\n"),
        "the late body: {body:?}"
    );
    berth.kill();

    let berth = start(dir.path());
    expect(&berth, "/tally/count", "4");
    expect(&berth, "/other/count", "2");
    expect(&berth, "/tally/hits", "3");
    expect(&berth, "/tally/get?key=late", "written");
    // A request that trapped after writing committed nothing.
    assert_eq!(berth.get("/tally/trap").status, 500);
    expect(&berth, "/tally/get?key=count", "4");
    // Each component lists only its own keys.
    expect(&berth, "/tally/keys", "count\nhits\nlate");
    expect(&berth, "/other/keys", "count");
    assert_eq!(berth.get("/other/get?key=late").status, 404);
}

#[test]
fn only_the_components_own_bucket_opens() {
    let dir = data_dir();
    let berth = start(dir.path());
    expect(&berth, "/tally/open?bucket=", "opened");
    expect(&berth, "/tally/open?bucket=tally", "opened");
    for bucket in ["other", "elsewhere"] {
        let reply = berth.get(&format!("/tally/open?bucket={bucket}"));
        assert_eq!(
            (reply.status, text(&reply).as_str()),
            (404, "no-such-store"),
            "opening bucket {bucket:?}"
        );
    }
}
