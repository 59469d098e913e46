//! `berth new` as a new user runs it: a project in a temporary directory
//! outside the repository, built with its own commands, its generated test
//! run with `cargo test`, and the component served by the real binary. Also
//! the SDK package, which must carry its WIT to work outside the repository.

use crate::support::{BERTH, Starting, data_dir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

/// Run `berth new ARGS` from `cwd`.
fn berth_new(cwd: &Path, args: &[&str]) -> Output {
    Command::new(BERTH)
        .current_dir(cwd)
        .arg("new")
        .args(args)
        .output()
        .expect("running berth new")
}

/// `berth new ARGS` must exit 1 with one line naming the problem.
fn refused(cwd: &Path, args: &[&str], needle: &str) {
    let output = berth_new(cwd, args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "berth new {args:?}: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains(needle), "`{needle}` not in: {stderr}");
}

#[test]
fn new_refuses_bad_names_languages_and_directories() {
    let tmp = data_dir();
    let cwd = tmp.path();
    refused(
        cwd,
        &["Bad_Name"],
        "component name `Bad_Name` is invalid: use 1 to 64 lower-case letters",
    );
    refused(
        cwd,
        &["ok", "--lang", "go"],
        "unknown language `go`: choose one of rust, python, js",
    );
    refused(cwd, &["test"], "`test` cannot name a Rust crate");
    refused(
        cwd,
        &["ok", "--berth-src", "/nonexistent"],
        "--berth-src /nonexistent is not a Berth checkout",
    );
    std::fs::create_dir(cwd.join("taken")).unwrap();
    std::fs::write(cwd.join("taken/keep.txt"), "mine").unwrap();
    refused(cwd, &["taken"], "taken exists and is not empty");
    refused(
        cwd,
        &["other", "--dir", "taken"],
        "taken exists and is not empty",
    );
    // Nothing was written anywhere.
    let mut left: Vec<_> = std::fs::read_dir(cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["taken"]);
    assert_eq!(
        std::fs::read_to_string(cwd.join("taken/keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn sdk_package_carries_its_wit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sdk = root.join("components/sdk");
    let listed = cargo(&sdk)
        .args(["package", "--list", "--offline", "--allow-dirty"])
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(
        files.lines().any(|l| l == "wit/service.wit"),
        "the SDK package lacks its WIT:\n{files}"
    );
    // The packaged file holds the contract itself (the link is followed),
    // byte for byte the host's.
    let target = tempfile::tempdir().unwrap();
    let packaged = cargo(&sdk)
        .args(["package", "--no-verify", "--offline", "--allow-dirty"])
        .arg("--target-dir")
        .arg(target.path())
        .output()
        .unwrap();
    assert!(packaged.status.success(), "{}", stderr(&packaged));
    let crate_file = std::fs::read_dir(target.path().join("package"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "crate"))
        .expect("a .crate file");
    let unpacked = Command::new("tar")
        .arg("-xzOf")
        .arg(&crate_file)
        .arg(format!(
            "{}/wit/service.wit",
            crate_file.file_stem().unwrap().to_string_lossy()
        ))
        .output()
        .unwrap();
    assert!(unpacked.status.success(), "{}", stderr(&unpacked));
    assert_eq!(
        unpacked.stdout,
        std::fs::read(root.join("wit/service.wit")).unwrap(),
        "the packaged WIT differs from wit/service.wit"
    );
}

#[test]
#[ignore = "builds whole projects: test.sh runs these on their own, after the rest"]
fn new_rust_project_builds_tests_and_serves() {
    let tmp = data_dir();
    let created = berth_new(tmp.path(), &["products"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let stdout = String::from_utf8_lossy(&created.stdout);
    assert!(stdout.contains("cargo build --release"), "{stdout}");
    let project = tmp.path().join("products");
    for file in [
        "Cargo.toml",
        ".cargo/config.toml",
        "rust-toolchain.toml",
        "src/lib.rs",
        "berth.toml",
        "README.md",
        "tests/Cargo.toml",
        "tests/.cargo/config.toml",
        "tests/products.rs",
    ] {
        assert!(project.join(file).is_file(), "berth new wrote no {file}");
    }

    // The README's three commands: a plain build makes the wasm...
    let started = Instant::now();
    run(cargo(&project).args(["build", "--release"]), "cargo build");
    eprintln!("scaffold: rust cargo build took {:?}", started.elapsed());
    let wasm = project.join("target/wasm32-wasip2/release/products.wasm");
    assert!(wasm.is_file(), "no {}", wasm.display());

    // ...the generated test passes...
    test_package(&project, "rust");

    // ...and the manifest serves it.
    let data = data_dir();
    let manifest = project.join("berth.toml");
    let (berth, _logs) = Starting::spawn(
        data.path(),
        &["--manifest", manifest.to_str().unwrap()],
        &[],
    )
    .ready();
    let created = berth.post("/products", r#"{"name": "Tea"}"#);
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(created.json(), serde_json::json!({"id": 1, "name": "Tea"}));
    let listed = berth.get("/products");
    assert_eq!(listed.json(), serde_json::json!([{"id": 1, "name": "Tea"}]));
    assert_eq!(berth.get("/users/1").status, 200);
}

#[test]
#[ignore = "builds whole projects: test.sh runs these on their own, after the rest"]
fn new_python_project_builds_and_tests() {
    let ready = shell_ok("python3 -c 'import ensurepip, venv'");
    other_language("python", ready, "python3 with venv");
}

#[test]
#[ignore = "builds whole projects: test.sh runs these on their own, after the rest"]
fn new_js_project_builds_and_tests() {
    let ready = shell_ok(
        "command -v npm && node -e 'process.exit(+process.versions.node.split(`.`)[0] < 20)'",
    );
    other_language("js", ready, "node 20 or later and npm");
}

fn shell_ok(script: &str) -> bool {
    Command::new("bash")
        .args(["-c", script])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Generate a project in `lang`, run its build.sh, its Rust test package,
/// and serve it. Skipped, saying why, unless the machine is `ready` (has
/// what it `needs`) or BERTH_REQUIRE_EXAMPLES=1. build.sh installs the
/// componentize tool itself into the examples' cache, as the examples do.
fn other_language(lang: &str, ready: bool, needs: &str) {
    if !ready {
        let why = format!("berth new --lang {lang}: needs {needs}");
        if std::env::var("BERTH_REQUIRE_EXAMPLES").as_deref() == Ok("1") {
            panic!("{why}, and BERTH_REQUIRE_EXAMPLES=1");
        }
        eprintln!("skipped {why}");
        return;
    }
    let tmp = data_dir();
    let created = berth_new(tmp.path(), &["--lang", lang, "notes", "--dir", "svc"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let project = tmp.path().join("svc");
    assert!(project.join("wit/service.wit").is_file());
    // The tests build with Berth's Rust, not whatever is the default.
    let toolchain = std::fs::read_to_string(project.join("tests/rust-toolchain.toml"))
        .expect("berth new wrote no tests/rust-toolchain.toml");
    let root_toolchain = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../rust-toolchain.toml"),
    )
    .unwrap();
    let channel = |text: &str| {
        text.lines()
            .find(|line| line.starts_with("channel"))
            .map(str::to_string)
    };
    assert_eq!(channel(&toolchain), channel(&root_toolchain), "{toolchain}");

    let started = Instant::now();
    run(&mut Command::new(project.join("build.sh")), "build.sh");
    eprintln!("scaffold: {lang} build.sh took {:?}", started.elapsed());
    assert!(project.join("build/notes.wasm").is_file());

    test_package(&project, lang);

    let data = data_dir();
    let manifest = project.join("berth.toml");
    let (berth, _logs) = Starting::spawn(
        data.path(),
        &["--manifest", manifest.to_str().unwrap()],
        &[],
    )
    .ready();
    let created = berth.post("/notes", r#"{"name": "first"}"#);
    assert_eq!(
        created.status,
        201,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    assert_eq!(
        berth.get("/notes/1").json(),
        serde_json::json!({"id": 1, "name": "first"})
    );
}

/// `cargo test` in the project's tests/ package, as its README says, into
/// a target directory kept across runs beside this build's, which the
/// guide's run (tests/guide/run.py) shares: wasmtime compiles once.
fn test_package(project: &Path, lang: &str) {
    let started = Instant::now();
    let output = run(
        cargo(&project.join("tests"))
            .arg("test")
            .env("CARGO_TARGET_DIR", scaffold_target()),
        "cargo test",
    );
    eprintln!("scaffold: {lang} cargo test took {:?}", started.elapsed());
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains("test result: ok. 2 passed"),
        "the generated tests did not both pass:\n{out}"
    );
}

/// Where generated test packages build: `scaffold/` in the target directory
/// this test binary was built in.
fn scaffold_target() -> PathBuf {
    let release = Path::new(BERTH).parent().expect("target/release");
    release.parent().expect("target").join("scaffold")
}

/// `cargo` in `dir` as a user's shell would run it: none of the variables
/// the outer `cargo test` set for this process.
fn cargo(dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir);
    for var in berth::guest_build::HOST_BUILD_VARS {
        cmd.env_remove(var);
    }
    cmd
}

fn run(cmd: &mut Command, what: &str) -> Output {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        stderr(&output)
    );
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}
