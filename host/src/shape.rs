//! What a component is, read from its binary without compiling it: which
//! kind Berth would run it as (by its exports) and whether Berth provides
//! every package it imports. Compiling an interpreter component takes many
//! seconds, so a component Berth cannot run is refused before that, and
//! the message names what is missing.

use crate::executor::Kind;
use anyhow::bail;
use wasmparser::{Encoding, Parser, Payload};

/// Packages each kind may import; WASI ones at any 0.2.x version, which
/// wasmtime's linker matches to the 0.2 release it implements.
const WASI: &[&str] = &[
    "wasi:io",
    "wasi:clocks",
    "wasi:random",
    "wasi:cli",
    "wasi:filesystem",
    "wasi:sockets",
];

/// The kind of component `wasm` is, if Berth can run it.
pub fn check(name: &str, wasm: &[u8]) -> anyhow::Result<Kind> {
    let (imports, exports) = match top_level(wasm) {
        Ok(names) => names,
        Err(e) => bail!("component `{name}` is not a valid WebAssembly component: {e}"),
    };
    let kind = if exports
        .iter()
        .any(|e| e.starts_with("wasi:http/incoming-handler@0.2."))
    {
        Kind::WasiHttp
    } else if exports
        .iter()
        .any(|e| e.split('@').next() == Some("berth:service/handler"))
    {
        Kind::Service
    } else {
        bail!(
            "component `{name}` is neither kind Berth runs: it does not export `berth:service/handler` (Berth's `service` world) nor `wasi:http/incoming-handler@0.2.x` (the `wasi:http/proxy` world); it exports: {}",
            list(&exports)
        );
    };
    for import in &imports {
        if !provided(kind, import) {
            bail!(
                "component `{name}` imports `{import}`, which Berth does not provide to a {} component; it provides {}",
                kind.as_str(),
                match kind {
                    Kind::Service =>
                        "berth:service and WASI 0.2 (wasi:io, wasi:clocks, wasi:random, wasi:cli, wasi:filesystem, wasi:sockets)",
                    Kind::WasiHttp =>
                        "wasi:http, wasi:config@0.2.0-rc.1, wasi:keyvalue@0.2.0-draft (store, atomics, batch) and WASI 0.2 (wasi:io, wasi:clocks, wasi:random, wasi:cli, wasi:filesystem, wasi:sockets)",
                }
            );
        }
    }
    Ok(kind)
}

/// Whether the linker for `kind` has something by the name `import`
/// (`package/interface@version`). The linker itself checks the types.
fn provided(kind: Kind, import: &str) -> bool {
    let (path, version) = import.split_once('@').unwrap_or((import, ""));
    let package = path.split('/').next().unwrap_or(path);
    let wasi_02 = version.starts_with("0.2.");
    match package {
        "berth:service" => kind == Kind::Service,
        "wasi:http" => kind == Kind::WasiHttp && wasi_02,
        // The draft wasmtime-wasi-config implements; pre-releases match exactly.
        "wasi:config" => kind == Kind::WasiHttp && version == "0.2.0-rc.1",
        // The draft wasmtime-wasi-keyvalue 48 and Spin use; Berth's own
        // host (`wasi_http::keyvalue`) implements store, atomics and batch.
        "wasi:keyvalue" => {
            kind == Kind::WasiHttp
                && version == "0.2.0-draft"
                && matches!(
                    path,
                    "wasi:keyvalue/store" | "wasi:keyvalue/atomics" | "wasi:keyvalue/batch"
                )
        }
        _ => WASI.contains(&package) && wasi_02,
    }
}

/// The names of the component's own imports and exports (not those of the
/// modules and components nested inside it).
fn top_level(wasm: &[u8]) -> Result<(Vec<String>, Vec<String>), String> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    if !wasm.starts_with(b"\0asm") {
        // wasmparser's own message dumps the expected and actual bytes over
        // several lines.
        return Err(match wasm.len() {
            0 => "it is empty".into(),
            _ => "it does not start with the WebAssembly magic bytes `\\0asm`: upload the .wasm file itself".into(),
        });
    }
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| one_line(&e.to_string()))? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err("it is a core module, not a component; build it for wasm32-wasip2 or run `wasm-tools component new` on it".into());
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(
                        import
                            .map_err(|e| one_line(&e.to_string()))?
                            .name
                            .name
                            .to_string(),
                    );
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(
                        export
                            .map_err(|e| one_line(&e.to_string()))?
                            .name
                            .name
                            .to_string(),
                    );
                }
            }
            _ => {}
        }
    }
    if depth != 0 || (imports.is_empty() && exports.is_empty() && wasm.len() < 8) {
        return Err("the binary ends early".into());
    }
    Ok((imports, exports))
}

/// What one instance of a component takes from the instance pool: core
/// instances, and the linear memories and tables its core modules define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub core_instances: u32,
    pub memories: u32,
    pub tables: u32,
}

impl Needs {
    /// The larger of each count.
    pub fn max(self, other: Needs) -> Needs {
        Needs {
            core_instances: self.core_instances.max(other.core_instances),
            memories: self.memories.max(other.memories),
            tables: self.tables.max(other.tables),
        }
    }
}

/// Count what an instance of `wasm` takes from the pool: every core module
/// instantiation, and the memories and tables of every core module, at any
/// depth. (A module instantiated twice counts its memories once; wasmtime
/// checks the real counts when it compiles, and refuses a component that
/// exceeds them.)
pub fn needs(wasm: &[u8]) -> Result<Needs, String> {
    let mut needs = Needs {
        core_instances: 0,
        memories: 0,
        tables: 0,
    };
    for payload in Parser::new(0).parse_all(wasm) {
        match payload.map_err(|e| e.to_string())? {
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    if let wasmparser::Instance::Instantiate { .. } =
                        instance.map_err(|e| e.to_string())?
                    {
                        needs.core_instances += 1;
                    }
                }
            }
            Payload::MemorySection(reader) => needs.memories += reader.count(),
            Payload::TableSection(reader) => needs.tables += reader.count(),
            _ => {}
        }
    }
    Ok(needs)
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "nothing".into();
    }
    names.join(", ")
}

/// `text` on one line: a client reads an error as one line of JSON, and
/// the parser's messages may span several.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Rust component's counts, read from the wasm, match what the
    /// engine finds when it compiles it, and fit the pool's defaults.
    #[test]
    fn needs_counts_what_the_engine_finds() {
        let needs = needs(crate::builtin::USERS).unwrap();
        let engine = wasmtime::Engine::default();
        let component =
            wasmtime::component::Component::new(&engine, crate::builtin::USERS).unwrap();
        let found = component.resources_required().unwrap();
        assert_eq!(needs.memories, found.num_memories, "{needs:?}");
        assert_eq!(needs.tables, found.num_tables, "{needs:?}");
        assert!(needs.core_instances >= 2, "{needs:?}");
        assert_eq!(
            needs.max(crate::runtime::PER_INSTANCE),
            crate::runtime::PER_INSTANCE
        );
    }

    #[test]
    fn imports_are_matched_by_package_and_version() {
        for (kind, import, expected) in [
            (Kind::WasiHttp, "wasi:http/types@0.2.3", true),
            (Kind::WasiHttp, "wasi:io/streams@0.2.0", true),
            (Kind::WasiHttp, "wasi:keyvalue/store@0.2.0-draft", true),
            (Kind::WasiHttp, "wasi:keyvalue/atomics@0.2.0-draft", true),
            (Kind::WasiHttp, "wasi:keyvalue/batch@0.2.0-draft", true),
            (Kind::WasiHttp, "wasi:keyvalue/watcher@0.2.0-draft", false),
            (Kind::WasiHttp, "wasi:keyvalue/store@0.2.0-draft2", false),
            (Kind::Service, "wasi:keyvalue/store@0.2.0-draft", false),
            (Kind::WasiHttp, "wasi:config/store@0.2.0-rc.1", true),
            (Kind::WasiHttp, "wasi:config/store@0.2.0-draft", false),
            (Kind::Service, "wasi:config/store@0.2.0-rc.1", false),
            (Kind::WasiHttp, "berth:service/kv@0.1.0", false),
            (Kind::Service, "berth:service/kv@0.1.0", true),
            (Kind::Service, "wasi:http/types@0.2.3", false),
            (Kind::Service, "wasi:cli/stderr@0.2.12", true),
            (Kind::Service, "wasi:cli/stderr@0.3.0", false),
        ] {
            assert_eq!(
                provided(kind, import),
                expected,
                "{kind:?} importing {import}"
            );
        }
    }

    #[test]
    fn what_is_not_a_component_is_refused_in_one_line() {
        for (wasm, why) in [
            (&b""[..], "it is empty"),
            (
                b"not wasm",
                "does not start with the WebAssembly magic bytes",
            ),
            (b"\0asm\x01\0\0\0", "it is a core module, not a component"),
            // A component header and then a truncated section.
            (b"\0asm\x0d\0\x01\0\x0a\x05", "unexpected end"),
        ] {
            let e = check("x", wasm).unwrap_err().to_string();
            assert!(
                e.starts_with("component `x` is not a valid WebAssembly component: ")
                    && e.contains(why)
                    && !e.contains('\n'),
                "{e}"
            );
        }
    }
}
