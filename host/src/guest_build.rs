//! Builds guest components and finds the `.wasm` each build produced:
//! `cargo build --release --target wasm32-wasip2` for a Rust crate, or any
//! command for other languages. berth-test's `TestComponent::build` runs it
//! before loading a component, and Berth's own tests build their test-only
//! guests through it once per test process, not with every build of the host.

use anyhow::{Context as _, bail};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The target every guest component is built for.
pub const TARGET: &str = "wasm32-wasip2";

/// Variables cargo sets for the build, build script or test it runs that
/// are meant for the host's build: a nested guest build must not inherit
/// them (host-target flags would break the wasm link, and a shared target
/// directory would block on the outer cargo's lock).
pub const HOST_BUILD_VARS: &[&str] = &[
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_PRIMARY_PACKAGE",
];

/// Build the Rust component crate in `crate_dir` (release, for
/// wasm32-wasip2) and return the `.wasm` it produced. The build uses the
/// crate's own target directory (its `.cargo/config.toml` or `target/`)
/// unless `target_dir` names one. The error holds the command and cargo's
/// output when the build fails.
pub fn cargo(crate_dir: &Path, target_dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "{} has no Cargo.toml: give TestComponent::build the component crate's directory",
            crate_dir.display()
        );
    }
    // Absolute, since cargo runs in the crate's directory (to read its
    // .cargo/config.toml and rust-toolchain.toml).
    let manifest = manifest
        .canonicalize()
        .with_context(|| format!("resolving {}", manifest.display()))?;
    let mut cmd = cargo_command(&manifest, target_dir);
    cmd.current_dir(manifest.parent().unwrap_or(crate_dir));
    let stdout = run(&mut cmd)?;
    let all = cdylibs(&stdout);
    let own: Vec<PathBuf> = all
        .iter()
        .filter(|(from, _)| Path::new(from).canonicalize().ok().as_deref() == Some(&manifest))
        .map(|(_, wasm)| wasm.clone())
        .collect();
    let wasm: Vec<PathBuf> = if own.is_empty() {
        all.into_iter().map(|(_, wasm)| wasm).collect()
    } else {
        own
    };
    match wasm.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "`{}` built no .wasm: is the crate a cdylib (`[lib] crate-type = [\"cdylib\"]` in {})?",
            show(&cmd),
            manifest.display()
        ),
        many => bail!(
            "`{}` built {} components ({}): give the directory of one crate",
            show(&cmd),
            many.len(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Run `command`, a build of any kind (componentize-py, jco, a script), and
/// return `output`, the `.wasm` it writes, once the command has succeeded.
pub fn command(command: &mut Command, output: &Path) -> anyhow::Result<PathBuf> {
    run(command)?;
    if !output.is_file() {
        bail!(
            "`{}` succeeded but wrote no {}",
            show(command),
            output.display()
        );
    }
    Ok(output.to_path_buf())
}

/// Where Berth's guest workspace (`components/`, with the test-only guests
/// under `tests/components/`) is built, as `NAME.wasm` (dashes become
/// underscores). Built on the first call in a process, into the target
/// directory host/build.rs builds the embedded users and orders in, so the
/// shared dependencies compile once; cargo's lock on that directory keeps
/// concurrent test processes safe. A path on the build machine: for Berth's
/// own tests, not for deployment.
#[doc(hidden)]
pub fn test_guest_dir() -> anyhow::Result<&'static Path> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../components/Cargo.toml");
        let target = Path::new(env!("BERTH_GUEST_TARGET"));
        let mut cmd = cargo_command(&source, Some(target));
        cmd.args(["--locked", "--workspace"]);
        run(&mut cmd)
            .map(|_| target.join(TARGET).join("release"))
            .map_err(|e| format!("{e:#}"))
    });
    match built {
        Ok(dir) => Ok(dir),
        Err(e) => bail!("building Berth's test guests: {e}"),
    }
}

/// The `.wasm` of test guest `name` (as in `tests/components/NAME`), built
/// first if this process has not built the guests yet.
#[doc(hidden)]
pub fn test_guest(name: &str) -> anyhow::Result<PathBuf> {
    let wasm = test_guest_dir()?.join(format!("{}.wasm", name.replace('-', "_")));
    if !wasm.is_file() {
        bail!("no test guest `{name}`: {} was not built", wasm.display());
    }
    Ok(wasm)
}

fn cargo_command(manifest: &Path, target_dir: Option<&Path>) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", TARGET])
        .arg("--message-format=json-render-diagnostics")
        .arg("--manifest-path")
        .arg(manifest);
    if let Some(dir) = target_dir {
        cmd.arg("--target-dir").arg(dir);
    }
    for var in HOST_BUILD_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `cmd` to the end and returns its stdout; on failure, an error with
/// the command line, its exit status and what it wrote to stderr.
fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let output = cmd
        .output()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        // cargo's JSON lines on stdout carry nothing the rendered
        // diagnostics on stderr do not; another tool's stdout may.
        let mut said = stderr.trim_end().to_string();
        let stdout = stdout.trim();
        if !stdout.lines().all(|l| l.starts_with('{')) {
            said = format!("{said}\n{stdout}").trim().to_string();
        }
        let failed = format!("`{}` failed ({})", show(cmd), output.status);
        if said.is_empty() {
            bail!("{failed}, saying nothing");
        }
        bail!("{failed}:\n{said}");
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The `(manifest_path, wasm)` of every cdylib in cargo's JSON messages.
fn cdylibs(messages: &str) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    for line in messages.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = msg["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !is_cdylib {
            continue;
        }
        let from = msg["manifest_path"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for file in msg["filenames"].as_array().into_iter().flatten() {
            if let Some(file) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                found.push((from.clone(), PathBuf::from(file)));
            }
        }
    }
    found
}

/// The command line as a person would type it, for error messages.
fn show(cmd: &Command) -> String {
    let mut line = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    if let Some(dir) = cmd.get_current_dir() {
        line = format!("{line}` in `{}", dir.display());
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_cdylib_wasm_artifacts() {
        let messages = concat!(
            r#"{"reason":"compiler-artifact","manifest_path":"/a/sdk/Cargo.toml","target":{"kind":["lib"]},"filenames":["/t/libsdk.rlib"]}"#,
            "\n",
            r#"{"reason":"compiler-artifact","manifest_path":"/a/p/Cargo.toml","target":{"kind":["cdylib"]},"filenames":["/t/p.wasm"]}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\nnot json\n"
        );
        assert_eq!(
            cdylibs(messages),
            vec![("/a/p/Cargo.toml".to_string(), PathBuf::from("/t/p.wasm"))]
        );
    }
}
