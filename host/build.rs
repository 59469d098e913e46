//! Builds the built-in users and orders components (of the guest workspace
//! `components/`) for wasm32-wasip2 and copies them into OUT_DIR, where
//! `builtin.rs` embeds them. Only those two: the test-only guests are built
//! by the tests that use them (`guest_build::test_guest_dir`, told the target
//! directory through `BERTH_GUEST_TARGET`), so a crate depending on `berth`
//! or `berth-test` never pays for them. The guests get their own target
//! directory, so the host's build graph never compiles them for the host.

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";
const COMPONENTS: &[&str] = &["users", "orders"];

fn main() {
    let root = PathBuf::from(env("CARGO_MANIFEST_DIR")).join("..");
    let guests = root.join("components");
    for watched in [
        "wit",
        "components/Cargo.toml",
        "components/Cargo.lock",
        "components/sdk",
        "components/users",
        "components/orders",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let out_dir = PathBuf::from(env("OUT_DIR"));
    let target_dir = out_dir.join("guest-target");
    build_guests(&guests.join("Cargo.toml"), &target_dir);
    let built_dir = target_dir.join(TARGET).join("release");
    println!(
        "cargo:rustc-env=BERTH_GUEST_TARGET={}",
        target_dir.display()
    );
    for name in COMPONENTS {
        let built = built_dir.join(format!("{name}.wasm"));
        let dest = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&built, &dest)
            .unwrap_or_else(|e| panic!("copying {} to {}: {e}", built.display(), dest.display()));
    }
}

fn build_guests(manifest: &Path, target_dir: &Path) {
    let cargo = env("CARGO");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--locked", "--target", TARGET])
        .args(COMPONENTS.iter().flat_map(|name| ["--package", name]))
        .arg("--manifest-path")
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    // Flags meant for the host build must not leak into the guest build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build the guest components: {e}"));
    if !status.success() {
        panic!(
            "building the guest components in {} failed (see above). If the `{TARGET}` target is missing, run `rustup target add {TARGET}` or `rustup toolchain install` in the repository root",
            manifest.display()
        );
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}
