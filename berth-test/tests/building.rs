//! Building before loading: `TestComponent::build` and `build_with` run the
//! build, load what it produced, and turn a failed build into an error that
//! names the command and holds its output.

use berth_test::TestComponent;
use std::path::PathBuf;
use std::process::Command;

/// A fresh directory under the system's temporary one, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("berth-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_compile_error_is_an_error_with_the_command_and_the_diagnostic() {
    let scratch = Scratch::new("broken");
    let krate = scratch.0.join("broken");
    std::fs::create_dir_all(krate.join("src")).unwrap();
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"broken\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(
        krate.join("src/lib.rs"),
        "pub fn f() -> u32 { \"not a number\" }\n",
    )
    .unwrap();
    let err = format!(
        "{:#}",
        TestComponent::build(&krate).err().expect("a failed build")
    );
    assert!(
        err.contains("cargo build --release --target wasm32-wasip2"),
        "the command is not named: {err}"
    );
    assert!(err.contains("mismatched types"), "no diagnostic: {err}");
    assert!(err.contains("src/lib.rs"), "no location: {err}");
}

#[test]
fn a_directory_without_a_crate_is_refused() {
    let scratch = Scratch::new("empty");
    let err = TestComponent::build(&scratch.0).err().expect("no crate");
    assert!(err.to_string().contains("has no Cargo.toml"), "{err}");
}

#[test]
fn build_with_runs_the_command_and_loads_its_output() {
    let scratch = Scratch::new("copy");
    let built = berth::guest_build::test_guest("misbehave").unwrap();
    let out = scratch.0.join("out.wasm");
    let mut copy = Command::new("cp");
    copy.arg(&built).arg(&out);
    let component = TestComponent::build_with(copy, &out).unwrap();
    assert_eq!(component.get("/misbehave/ok").send().unwrap().status, 200);

    let err = TestComponent::build_with(Command::new("false"), scratch.0.join("none.wasm"))
        .err()
        .expect("a failed command");
    assert!(
        err.to_string()
            .starts_with("`false` failed (exit status: 1)"),
        "{err}"
    );

    let err = TestComponent::build_with(Command::new("true"), scratch.0.join("none.wasm"))
        .err()
        .expect("no output");
    assert!(err.to_string().contains("succeeded but wrote no"), "{err}");
}
