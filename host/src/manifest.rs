//! The manifest: which components to serve, where their wasm is, which route
//! prefixes they own and their limits. Parsing is pure ([`Manifest::from_str`]);
//! [`Manifest::from_file`] only adds reading the file and resolving paths.
//!
//! ```toml
//! [components.users]
//! wasm = "target/wasm32-wasip2/release/users.wasm"  # relative to this file
//! routes = ["/users"]
//! timeout_ms = 5000
//! max_memory_mb = 32
//! max_concurrency = 128
//! # Optional: keep instances for up to 1000 requests each, idle at most 10 s.
//! reuse = 1000
//! reuse_idle_ms = 10000
//!
//! [components.hello]                      # a wasi:http component
//! wasm = "hello.wasm"
//! routes = ["/hello"]
//! strip_prefix = true                     # it sees `/` for `/hello`
//! outbound = ["https://api.example.com", "http://127.0.0.1:*"]
//! openapi = "hello.openapi.json"          # merged into /openapi.json
//!
//! [components.hello.config]               # read through wasi:config
//! greeting = "hello"
//! ```

use crate::reuse::Reuse;
use crate::wasi_http::outbound::Origin;
use anyhow::{Context as _, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// Paths the host answers itself; no component may claim them.
pub const RESERVED_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// The manifest `berth serve` uses when given none: the built-in services.
pub const DEFAULT_MANIFEST: &str = r#"
[components.users]
wasm = "builtin:users"
routes = ["/users"]
publishes = ["user.deleted"]

[components.orders]
wasm = "builtin:orders"
routes = ["/orders"]
calls = ["users"]
subscribes = ["user.deleted"]
"#;

const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const MAX_TIMEOUT_MS: u64 = 600_000;
const DEFAULT_MEMORY_MB: u64 = 32;
const MAX_MEMORY_MB: u64 = 4096;
/// Half the host's default in-flight cap, so one component alone can never
/// take every request slot.
const DEFAULT_CONCURRENCY: usize = 128;
const MAX_CONCURRENCY: usize = 65_536;
const MAX_REUSE: u32 = 1_000_000;
const DEFAULT_REUSE_IDLE_MS: u64 = 10_000;
const MAX_REUSE_IDLE_MS: u64 = 3_600_000;

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Components by name, in name order.
    pub components: BTreeMap<String, ComponentSpec>,
}

/// One component as the manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSpec {
    pub wasm: WasmSource,
    pub routes: Vec<String>,
    pub timeout: Duration,
    pub max_memory_bytes: usize,
    /// Calls of this component running at once; more get 503.
    pub max_concurrency: usize,
    /// Components this one may call through `berth:service/services`.
    pub calls: Vec<String>,
    /// Topics this one may publish on.
    pub publishes: Vec<String>,
    /// Topics delivered to this one's event handler.
    pub subscribes: Vec<String>,
    /// Serve the component a request's path without the route prefix it
    /// matched, so a component written for `/` can live under a prefix.
    pub strip_prefix: bool,
    /// Origins a `wasi:http` component may send requests to.
    pub outbound: Vec<Origin>,
    /// What a `wasi:http` component reads through `wasi:config/store`.
    pub config: BTreeMap<String, String>,
    /// Instances kept across requests (`reuse = N`); `None`, the default,
    /// gives every request a fresh instance.
    pub reuse: Option<Reuse>,
    /// The component's OpenAPI 3.x document (JSON), merged into the one
    /// the host serves at `/openapi.json`; relative to the manifest.
    pub openapi: Option<PathBuf>,
}

/// Where a component's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WasmSource {
    /// A component compiled into the `berth` binary, such as `builtin:users`.
    Builtin(String),
    /// A `.wasm` file; relative paths are resolved against the manifest's folder.
    File(PathBuf),
}

/// The manifest file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    /// `[components.NAME]` tables.
    #[serde(default)]
    components: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    /// Path to the component's wasm file, or `builtin:NAME`.
    wasm: String,
    /// Path prefixes this component serves, such as `["/users"]`.
    routes: Vec<String>,
    /// Milliseconds the component may run per request before it gets a 504.
    timeout_ms: Option<u64>,
    /// Largest linear memory of one instance, in MiB.
    max_memory_mb: Option<u64>,
    /// Requests (and calls from other components) it may run at once.
    max_concurrency: Option<usize>,
    /// Components this one may call, such as `["users"]`.
    #[serde(default)]
    calls: Vec<String>,
    /// Topics this one may publish on, such as `["user.deleted"]`.
    #[serde(default)]
    publishes: Vec<String>,
    /// Topics whose events are delivered to this one's event handler.
    #[serde(default)]
    subscribes: Vec<String>,
    /// Strip the matched route prefix from the path the component sees:
    /// with `routes = ["/hello"]`, `/hello/x` reaches it as `/x`.
    #[serde(default)]
    strip_prefix: bool,
    /// Origins a `wasi:http` component may send requests to, such as
    /// `["https://api.example.com", "http://127.0.0.1:*"]` (`*`: any port).
    #[serde(default)]
    outbound: Vec<String>,
    /// `[components.NAME.config]`: string values a `wasi:http` component
    /// reads through `wasi:config/store`, such as `greeting = "hello"`.
    #[serde(default)]
    config: BTreeMap<String, String>,
    /// Requests one instance serves before it is dropped, such as `1000`:
    /// memory and globals then survive between requests. Off if absent.
    reuse: Option<u32>,
    /// Milliseconds an instance kept by `reuse` may wait idle before it is
    /// dropped (default 10000).
    reuse_idle_ms: Option<u64>,
    /// Path to the component's OpenAPI 3.x document, a `.json` file such
    /// as `"products.openapi.json"` (relative to this file), merged into
    /// `/openapi.json` under the component's routes.
    openapi: Option<String>,
}

impl std::str::FromStr for Manifest {
    type Err = anyhow::Error;

    /// Parse and validate manifest text. Relative wasm paths stay relative.
    fn from_str(text: &str) -> anyhow::Result<Manifest> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        if raw.components.is_empty() {
            bail!("the manifest declares no components; add a [components.NAME] table");
        }
        let mut owners: BTreeMap<String, String> = BTreeMap::new();
        let mut components = BTreeMap::new();
        for (name, raw) in raw.components {
            check_name(&name)?;
            if raw.routes.is_empty() {
                bail!(
                    "component `{name}` has no routes; give it at least one, such as [\"/{name}\"]"
                );
            }
            for route in &raw.routes {
                check_route(&name, route)?;
                if let Some(other) = owners.insert(route.clone(), name.clone()) {
                    bail!("route `{route}` is claimed by both `{other}` and `{name}`");
                }
            }
            let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
            if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
                bail!(
                    "component `{name}`: timeout_ms must be between 1 and {MAX_TIMEOUT_MS}, got {timeout_ms}"
                );
            }
            let memory_mb = raw.max_memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
            if !(1..=MAX_MEMORY_MB).contains(&memory_mb) {
                bail!(
                    "component `{name}`: max_memory_mb must be between 1 and {MAX_MEMORY_MB}, got {memory_mb}"
                );
            }
            let max_concurrency = raw.max_concurrency.unwrap_or(DEFAULT_CONCURRENCY);
            if !(1..=MAX_CONCURRENCY).contains(&max_concurrency) {
                bail!(
                    "component `{name}`: max_concurrency must be between 1 and {MAX_CONCURRENCY}, got {max_concurrency}"
                );
            }
            let reuse = check_reuse(&name, raw.reuse, raw.reuse_idle_ms, max_concurrency)?;
            let wasm = match raw.wasm.strip_prefix("builtin:") {
                Some(builtin) => WasmSource::Builtin(builtin.to_string()),
                None if raw.wasm.is_empty() => {
                    bail!("component `{name}`: `wasm` must not be empty")
                }
                None => WasmSource::File(PathBuf::from(raw.wasm)),
            };
            let spec = ComponentSpec {
                wasm,
                routes: raw.routes,
                timeout: Duration::from_millis(timeout_ms),
                max_memory_bytes: usize::try_from(memory_mb * 1024 * 1024).unwrap_or(usize::MAX),
                max_concurrency,
                calls: raw.calls,
                publishes: raw.publishes,
                subscribes: raw.subscribes,
                strip_prefix: raw.strip_prefix,
                outbound: raw
                    .outbound
                    .iter()
                    .map(|origin| Origin::parse(origin))
                    .collect::<Result<_, _>>()
                    .map_err(|e| anyhow::anyhow!("component `{name}`: {e}"))?,
                config: raw.config,
                reuse,
                openapi: raw
                    .openapi
                    .map(|path| check_openapi_path(&name, path))
                    .transpose()?,
            };
            for topic in spec.publishes.iter().chain(&spec.subscribes) {
                if let Err(e) = crate::capabilities::services::check_topic(topic) {
                    bail!("component `{name}`: {e}");
                }
            }
            components.insert(name, spec);
        }
        for (name, spec) in &components {
            if let Some(unknown) = spec.calls.iter().find(|c| !components.contains_key(*c)) {
                bail!("component `{name}` calls `{unknown}`, which the manifest does not declare");
            }
        }
        Ok(Manifest { components })
    }
}

impl Manifest {
    /// Read, parse and validate a manifest file, resolving wasm paths
    /// against the folder that holds it.
    pub fn from_file(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
        let mut manifest = Manifest::from_str(&text)
            .with_context(|| format!("invalid manifest {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for spec in manifest.components.values_mut() {
            if let WasmSource::File(file) = &mut spec.wasm {
                *file = base.join(&*file);
            }
            if let Some(openapi) = &mut spec.openapi {
                *openapi = base.join(&*openapi);
            }
        }
        Ok(manifest)
    }

    /// The components that subscribe to at least one topic, by name.
    pub fn subscribers(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .components
            .iter()
            .filter(|(_, spec)| !spec.subscribes.is_empty())
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        names
    }

    /// The manifest of the built-in users and orders services.
    pub fn builtin() -> Manifest {
        Manifest::from_str(DEFAULT_MANIFEST).expect("the built-in manifest is valid")
    }
}

/// The reuse settings of component `name`, if it asks for reuse.
fn check_reuse(
    name: &str,
    reuse: Option<u32>,
    idle_ms: Option<u64>,
    max_concurrency: usize,
) -> anyhow::Result<Option<Reuse>> {
    let Some(max_uses) = reuse else {
        if idle_ms.is_some() {
            bail!(
                "component `{name}`: reuse_idle_ms applies only to reused instances; set reuse = N as well, or remove reuse_idle_ms"
            );
        }
        return Ok(None);
    };
    if !(1..=MAX_REUSE).contains(&max_uses) {
        bail!(
            "component `{name}`: reuse must be between 1 and {MAX_REUSE} requests per instance, got {max_uses}; remove it for a fresh instance per request"
        );
    }
    let idle_ms = idle_ms.unwrap_or(DEFAULT_REUSE_IDLE_MS);
    if !(1..=MAX_REUSE_IDLE_MS).contains(&idle_ms) {
        bail!(
            "component `{name}`: reuse_idle_ms must be between 1 and {MAX_REUSE_IDLE_MS}, got {idle_ms}"
        );
    }
    Ok(Some(Reuse {
        max_uses,
        idle: Duration::from_millis(idle_ms),
        max_idle: max_concurrency,
    }))
}

/// An `openapi` entry names a JSON file: YAML is not read.
fn check_openapi_path(name: &str, path: String) -> anyhow::Result<PathBuf> {
    if !path.ends_with(".json") {
        bail!(
            "component `{name}`: openapi must name a .json file, got `{path}`; convert a YAML document to JSON"
        );
    }
    Ok(PathBuf::from(path))
}

/// Whether `name` may name a component: the rule `berth new` applies too.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        bail!(
            "component name `{name}` is invalid: use 1 to 64 lower-case letters, digits and dashes, starting with a letter"
        );
    }
    Ok(())
}

fn check_route(name: &str, route: &str) -> anyhow::Result<()> {
    let valid_chars = route
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c));
    if !route.starts_with('/')
        || !valid_chars
        || route.contains("//")
        || (route.len() > 1 && route.ends_with('/'))
    {
        bail!(
            "component `{name}`: route `{route}` is invalid: it must start with `/`, not end with `/`, and use only letters, digits and `-._~` between single slashes"
        );
    }
    for reserved in RESERVED_PATHS {
        if crate::router::covers(reserved, route) {
            bail!(
                "component `{name}`: route `{route}` overlaps `{reserved}`, which the host reserves"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parse `text`, expecting an error with exactly `expected` as its message.
    fn check_err(text: &str, expected: &str) {
        match Manifest::from_str(text) {
            Ok(m) => panic!("accepted {text:?} as {m:?}"),
            Err(e) => assert_eq!(format!("{e:#}"), expected, "for manifest {text:?}"),
        }
    }

    fn component(name: &str, routes: &str) -> String {
        format!("[components.{name}]\nwasm = \"{name}.wasm\"\nroutes = {routes}\n")
    }

    #[test]
    fn builtin_manifest_parses() {
        let m = Manifest::builtin();
        assert_eq!(m.components.len(), 2);
        let users = &m.components["users"];
        assert_eq!(users.wasm, WasmSource::Builtin("users".into()));
        assert_eq!(users.routes, vec!["/users"]);
        assert_eq!(users.timeout, Duration::from_millis(DEFAULT_TIMEOUT_MS));
        assert_eq!(users.max_memory_bytes, 32 * 1024 * 1024);
    }

    #[test]
    fn limits_are_read() {
        let m = Manifest::from_str(
            "[components.a]\nwasm = \"a.wasm\"\nroutes = [\"/a\", \"/b/c\"]\ntimeout_ms = 250\nmax_memory_mb = 8\nmax_concurrency = 3\n",
        )
        .unwrap();
        let a = &m.components["a"];
        assert_eq!(a.wasm, WasmSource::File("a.wasm".into()));
        assert_eq!(a.timeout, Duration::from_millis(250));
        assert_eq!(a.max_memory_bytes, 8 * 1024 * 1024);
        assert_eq!(a.max_concurrency, 3);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        check_err(
            "[components.a]\nwasm = \"a.wasm\"\nroutes = [\"/a\"]\nroute = \"/b\"\n",
            "unknown field `route`, expected one of `wasm`, `routes`, `timeout_ms`, `max_memory_mb`, `max_concurrency`, `calls`, `publishes`, `subscribes`, `strip_prefix`, `outbound`, `config`, `reuse`, `reuse_idle_ms`, `openapi`",
        );
        check_err(
            "colour = 1\n",
            "unknown field `colour`, expected `components`",
        );
    }

    #[test]
    fn missing_fields_are_named() {
        check_err(
            "[components.a]\nroutes = [\"/a\"]\n",
            "missing field `wasm`",
        );
        check_err(
            "[components.a]\nwasm = \"a.wasm\"\n",
            "missing field `routes`",
        );
    }

    #[test]
    fn empty_manifest_is_rejected() {
        check_err(
            "",
            "the manifest declares no components; add a [components.NAME] table",
        );
    }

    #[test]
    fn bad_names_are_rejected() {
        check_err(
            &component("Users", "[\"/u\"]"),
            "component name `Users` is invalid: use 1 to 64 lower-case letters, digits and dashes, starting with a letter",
        );
        check_err(
            "[components.1x]\nwasm = \"x.wasm\"\nroutes = [\"/u\"]\n",
            "component name `1x` is invalid: use 1 to 64 lower-case letters, digits and dashes, starting with a letter",
        );
    }

    #[test]
    fn bad_routes_are_rejected() {
        let invalid = |route: &str| {
            format!(
                "component `a`: route `{route}` is invalid: it must start with `/`, not end with `/`, and use only letters, digits and `-._~` between single slashes"
            )
        };
        for route in ["users", "/users/", "/a//b", "/a?b", "/a b", ""] {
            check_err(&component("a", &format!("[{route:?}]")), &invalid(route));
        }
        check_err(
            &component("a", "[]"),
            "component `a` has no routes; give it at least one, such as [\"/a\"]",
        );
    }

    #[test]
    fn reserved_paths_cannot_be_claimed() {
        check_err(
            &component("a", "[\"/healthz\"]"),
            "component `a`: route `/healthz` overlaps `/healthz`, which the host reserves",
        );
        check_err(
            &component("a", "[\"/metrics/x\"]"),
            "component `a`: route `/metrics/x` overlaps `/metrics`, which the host reserves",
        );
        assert!(
            Manifest::from_str(&component("a", "[\"/\"]")).is_ok(),
            "`/` may catch the rest"
        );
        assert!(Manifest::from_str(&component("a", "[\"/healthzone\"]")).is_ok());
    }

    #[test]
    fn duplicate_routes_are_rejected() {
        let text = format!(
            "{}{}",
            component("a", "[\"/x\"]"),
            component("b", "[\"/y\", \"/x\"]")
        );
        check_err(&text, "route `/x` is claimed by both `a` and `b`");
    }

    #[test]
    fn limits_are_range_checked() {
        check_err(
            &format!("{}timeout_ms = 0\n", component("a", "[\"/a\"]")),
            "component `a`: timeout_ms must be between 1 and 600000, got 0",
        );
        check_err(
            &format!("{}max_concurrency = 0\n", component("a", "[\"/a\"]")),
            "component `a`: max_concurrency must be between 1 and 65536, got 0",
        );
        check_err(
            &format!("{}max_memory_mb = 5000\n", component("a", "[\"/a\"]")),
            "component `a`: max_memory_mb must be between 1 and 4096, got 5000",
        );
    }

    #[test]
    fn reuse_is_off_unless_asked_for() {
        let m = Manifest::from_str(&component("a", "[\"/a\"]")).unwrap();
        assert_eq!(m.components["a"].reuse, None);
        let m = Manifest::from_str(&format!(
            "{}max_concurrency = 7\nreuse = 1000\n",
            component("a", "[\"/a\"]")
        ))
        .unwrap();
        assert_eq!(
            m.components["a"].reuse,
            Some(Reuse {
                max_uses: 1000,
                idle: Duration::from_millis(DEFAULT_REUSE_IDLE_MS),
                max_idle: 7,
            })
        );
        let m = Manifest::from_str(&format!(
            "{}reuse = 5\nreuse_idle_ms = 250\n",
            component("a", "[\"/a\"]")
        ))
        .unwrap();
        let reuse = m.components["a"].reuse.unwrap();
        assert_eq!(
            (reuse.max_uses, reuse.idle),
            (5, Duration::from_millis(250))
        );
    }

    #[test]
    fn reuse_settings_are_checked() {
        check_err(
            &format!("{}reuse = 0\n", component("a", "[\"/a\"]")),
            "component `a`: reuse must be between 1 and 1000000 requests per instance, got 0; remove it for a fresh instance per request",
        );
        check_err(
            &format!("{}reuse = 1000001\n", component("a", "[\"/a\"]")),
            "component `a`: reuse must be between 1 and 1000000 requests per instance, got 1000001; remove it for a fresh instance per request",
        );
        check_err(
            &format!(
                "{}reuse = 10\nreuse_idle_ms = 0\n",
                component("a", "[\"/a\"]")
            ),
            "component `a`: reuse_idle_ms must be between 1 and 3600000, got 0",
        );
        check_err(
            &format!("{}reuse_idle_ms = 100\n", component("a", "[\"/a\"]")),
            "component `a`: reuse_idle_ms applies only to reused instances; set reuse = N as well, or remove reuse_idle_ms",
        );
        check_err(
            &format!("{}reuse = -1\n", component("a", "[\"/a\"]")),
            "invalid value: integer `-1`, expected u32",
        );
    }

    #[test]
    fn builtin_wasm_is_recognised() {
        let m = Manifest::from_str("[components.a]\nwasm = \"builtin:users\"\nroutes = [\"/a\"]\n")
            .unwrap();
        assert_eq!(m.components["a"].wasm, WasmSource::Builtin("users".into()));
    }

    #[test]
    fn from_file_resolves_paths_against_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, component("a", "[\"/a\"]")).unwrap();
        let m = Manifest::from_file(&path).unwrap();
        assert_eq!(
            m.components["a"].wasm,
            WasmSource::File(dir.path().join("a.wasm"))
        );
        let text = format!("{}openapi = \"docs/a.json\"\n", component("a", "[\"/a\"]"));
        std::fs::write(&path, text).unwrap();
        let m = Manifest::from_file(&path).unwrap();
        assert_eq!(
            m.components["a"].openapi,
            Some(dir.path().join("docs/a.json"))
        );
    }

    #[test]
    fn openapi_must_be_json() {
        check_err(
            &format!("{}openapi = \"a.yaml\"\n", component("a", "[\"/a\"]")),
            "component `a`: openapi must name a .json file, got `a.yaml`; convert a YAML document to JSON",
        );
    }

    #[test]
    fn strip_prefix_and_outbound_are_read_and_checked() {
        let m = Manifest::from_str(&format!(
            "{}strip_prefix = true\noutbound = [\"https://api.example.com\", \"http://127.0.0.1:*\"]\n",
            component("a", "[\"/a\"]")
        ))
        .unwrap();
        let a = &m.components["a"];
        assert!(a.strip_prefix);
        let granted: Vec<String> = a.outbound.iter().map(ToString::to_string).collect();
        assert_eq!(
            granted,
            vec!["https://api.example.com:443", "http://127.0.0.1:*"]
        );
        assert!(!Manifest::builtin().components["users"].strip_prefix);
        let m = Manifest::from_str(&format!(
            "{}[components.a.config]\ngreeting = \"hi\"\n",
            component("a", "[\"/a\"]")
        ))
        .unwrap();
        assert_eq!(m.components["a"].config["greeting"], "hi");
        check_err(
            &format!(
                "{}[components.a.config]\nport = 80\n",
                component("a", "[\"/a\"]")
            ),
            "invalid type: integer `80`, expected a string",
        );
        check_err(
            &format!(
                "{}outbound = [\"api.example.com\"]\n",
                component("a", "[\"/a\"]")
            ),
            "component `a`: outbound `api.example.com` has no scheme; write it as scheme://host, scheme://host:port or scheme://host:*, such as \"https://api.example.com\"",
        );
        check_err(
            &format!("{}strip_prefix = \"yes\"\n", component("a", "[\"/a\"]")),
            "invalid type: string \"yes\", expected a boolean",
        );
    }

    #[test]
    fn grants_are_read_and_checked() {
        let m = Manifest::builtin();
        assert_eq!(m.components["orders"].calls, vec!["users"]);
        assert_eq!(m.components["orders"].subscribes, vec!["user.deleted"]);
        assert_eq!(m.components["users"].publishes, vec!["user.deleted"]);
        check_err(
            &format!("{}calls = [\"nobody\"]\n", component("a", "[\"/a\"]")),
            "component `a` calls `nobody`, which the manifest does not declare",
        );
        check_err(
            &format!(
                "{}publishes = [\"User Deleted\"]\n",
                component("a", "[\"/a\"]")
            ),
            "component `a`: topic `User Deleted` is invalid: use 1 to 128 lower-case letters, digits and `._-`",
        );
    }
}
