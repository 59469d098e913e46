//! `berth new`: writes a ready component project (Rust, Python or
//! JavaScript) from the templates under `host/templates/LANG/`, which are
//! embedded in the binary, with the project's name and the path of the Berth
//! source its SDK and `berth-test` dependencies come from filled in.

use anyhow::{Context as _, bail};
use std::path::{Path, PathBuf};

/// The languages `berth new --lang` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    pub const NAMES: &[&str] = &["rust", "python", "js"];

    /// The language named `name`, as `--lang` takes it.
    pub fn parse(name: &str) -> anyhow::Result<Lang> {
        match name {
            "rust" => Ok(Lang::Rust),
            "python" => Ok(Lang::Python),
            "js" => Ok(Lang::Js),
            _ => bail!(
                "unknown language `{name}`: choose one of {}",
                Lang::NAMES.join(", ")
            ),
        }
    }

    fn templates(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => RUST,
            Lang::Python => PYTHON,
            Lang::Js => JS,
        }
    }
}

/// What `berth new` was asked for.
#[derive(Debug)]
pub struct Options {
    /// The component's name, as in the manifest.
    pub name: String,
    pub lang: Lang,
    /// Where to write the project; it must be absent or empty.
    pub dir: PathBuf,
    /// The Berth source the generated dependencies point to; without it,
    /// the one this binary was built from.
    pub berth_src: Option<PathBuf>,
}

/// The Berth source this binary was built from (holds `berth-test/`).
pub const BUILT_FROM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Write the project `options` describe and return its directory. Nothing
/// is written unless the name, the directory and the Berth source are all
/// acceptable.
pub fn create(options: &Options) -> anyhow::Result<PathBuf> {
    let name = options.name.as_str();
    crate::manifest::check_name(name)?;
    if options.lang == Lang::Rust && RESERVED_CRATE_NAMES.contains(&name) {
        bail!("`{name}` cannot name a Rust crate (cargo reserves it): choose another name");
    }
    let dir = &options.dir;
    check_empty(dir)?;
    let berth_src = berth_source(options.berth_src.as_deref())?;
    let src = berth_src
        .to_str()
        .filter(|s| !s.contains(['"', '\\', '\n']));
    let Some(src) = src else {
        bail!(
            "the Berth source path {} holds a character a Cargo.toml path cannot: move it or pass --berth-src",
            berth_src.display()
        );
    };
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{berth_src}}", src)
    };

    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (path, text) in options.lang.templates() {
        let contents = fill(text);
        write(&dir.join(fill(path)), contents.as_bytes())?;
    }
    match options.lang {
        // Start from the versions Berth itself is locked to, so the first
        // build needs no resolution and reuses what is already downloaded.
        Lang::Rust => {
            seed_lock(
                &berth_src.join("components/Cargo.lock"),
                &dir.join("Cargo.lock"),
            )?;
            seed_lock(&berth_src.join("Cargo.lock"), &dir.join("tests/Cargo.lock"))?;
        }
        // The contract the component is built against, from this binary.
        Lang::Python | Lang::Js => {
            write(&dir.join("wit/service.wit"), SERVICE_WIT.as_bytes())?;
            seed_lock(&berth_src.join("Cargo.lock"), &dir.join("tests/Cargo.lock"))?;
        }
    }
    #[cfg(unix)]
    if options.lang != Lang::Rust {
        use std::os::unix::fs::PermissionsExt as _;
        let script = dir.join("build.sh");
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", script.display()))?;
    }
    Ok(dir.clone())
}

/// The commands to run next, as the generated README gives them.
pub fn next_steps(lang: Lang) -> &'static [&'static str] {
    match lang {
        Lang::Rust => &[
            "cargo build --release",
            "(cd tests && cargo test)",
            "berth dev",
        ],
        Lang::Python | Lang::Js => &["./build.sh", "(cd tests && cargo test)", "berth dev"],
    }
}

/// Names cargo refuses for a package (`cargo new` checks the same).
const RESERVED_CRATE_NAMES: &[&str] = &["test", "core", "std", "alloc", "proc-macro", "self"];

/// Berth's WIT contract, for the projects whose toolchains read it as files.
const SERVICE_WIT: &str = include_str!("../../wit/service.wit");

macro_rules! templates {
    ($lang:literal: $($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!("../templates/", $lang, "/", $path)))),*]
    };
}

const RUST: &[(&str, &str)] = templates!("rust":
    "Cargo.toml",
    ".cargo/config.toml",
    "rust-toolchain.toml",
    ".gitignore",
    "src/lib.rs",
    "berth.toml",
    "README.md",
    "tests/Cargo.toml",
    "tests/.cargo/config.toml",
    "tests/{{crate}}.rs",
);

const PYTHON: &[(&str, &str)] = templates!("python":
    "app.py",
    "build.sh",
    "requirements.txt",
    ".gitignore",
    "berth.toml",
    "README.md",
    "tests/Cargo.toml",
    "tests/.cargo/config.toml",
    "tests/rust-toolchain.toml",
    "tests/{{crate}}.rs",
);

const JS: &[(&str, &str)] = templates!("js":
    "src/app.js",
    "build.sh",
    "tools/package.json",
    "tools/package-lock.json",
    ".gitignore",
    "berth.toml",
    "README.md",
    "tests/Cargo.toml",
    "tests/.cargo/config.toml",
    "tests/rust-toolchain.toml",
    "tests/{{crate}}.rs",
);

fn check_empty(dir: &Path) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                bail!(
                    "{} exists and is not empty: choose another --dir, or remove it",
                    dir.display()
                );
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) if dir.exists() => bail!(
            "{} exists and is not a directory: choose another --dir",
            dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// The Berth checkout to depend on: `given`, or the one this binary was
/// built from. Either must hold the SDK and berth-test.
fn berth_source(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (src, how) = match given {
        Some(path) => (path, "--berth-src"),
        None => (
            Path::new(BUILT_FROM),
            "the Berth source this berth was built from",
        ),
    };
    let complete = src.join("components/sdk/Cargo.toml").is_file()
        && src.join("berth-test/Cargo.toml").is_file();
    if !complete {
        if given.is_none() {
            bail!(
                "{how}, {}, is gone: pass --berth-src PATH, a checkout of Berth (the SDK and berth-test are not published yet)",
                src.display()
            );
        }
        bail!(
            "{how} {} is not a Berth checkout: it has no components/sdk/Cargo.toml and berth-test/Cargo.toml",
            src.display()
        );
    }
    src.canonicalize()
        .with_context(|| format!("resolving {}", src.display()))
}

fn seed_lock(from: &Path, to: &Path) -> anyhow::Result<()> {
    match std::fs::read(from) {
        Ok(lock) => write(to, &lock),
        // Without one cargo resolves the versions itself.
        Err(_) => Ok(()),
    }
}

fn write(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_names_only_known_placeholders() {
        for lang in [Lang::Rust, Lang::Python, Lang::Js] {
            for (path, text) in lang.templates() {
                let filled = text
                    .replace("{{name}}", "")
                    .replace("{{crate}}", "")
                    .replace("{{berth_src}}", "");
                assert!(!filled.contains("{{"), "{path} has an unknown placeholder");
            }
        }
    }

    #[test]
    fn refuses_unknown_languages() {
        assert_eq!(
            Lang::parse("go").unwrap_err().to_string(),
            "unknown language `go`: choose one of rust, python, js"
        );
        assert_eq!(Lang::parse("js").unwrap(), Lang::Js);
    }
}
