//! Property tests (proptest) of the two pure parsers on the request path's
//! edge: manifest parsing never panics and accepts exactly the manifests a
//! model of its rules accepts, and routing picks the longest prefix that
//! covers the path on a segment boundary. PROPTEST_CASES sets the number of
//! cases per property (default 1000).

use berth::manifest::Manifest;
use berth::router::Router;
use proptest::prelude::*;
use proptest::test_runner::Config;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1000);
    Config {
        cases,
        // Nothing is written next to the sources: a failure prints its
        // minimal input, which is what a fix needs.
        failure_persistence: None,
        ..Config::default()
    }
}

const RESERVED: &[&str] = &["/healthz", "/readyz", "/metrics", "/openapi.json"];

/// A route the way a person might mistype one: mostly well-formed, with
/// every kind of flaw the manifest must catch, and reserved paths.
fn route() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec("[a-z0-9._~-]{1,4}", 1..4).prop_map(|s| format!("/{}", s.join("/"))),
        1 => Just("/".to_string()),
        1 => prop::sample::select(RESERVED).prop_map(str::to_string),
        1 => (prop::sample::select(RESERVED), "[a-z]{0,3}", prop::bool::ANY)
            .prop_map(|(r, tail, slash)| format!("{r}{}{tail}", if slash { "/" } else { "" })),
        1 => "/[a-z/]{0,6}/",
        1 => "[a-z]{1,4}(/[a-z]{1,3})?",
        1 => "/[a-z]{1,3}//[a-z]{1,3}",
        1 => "/[a-z]{0,3}[ ?#%A-Z\u{e9}\\\\\"][a-z]{0,3}",
        1 => Just(String::new()),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z][a-z0-9-]{0,8}",
        1 => "[A-Za-z0-9_-]{0,6}",
        1 => "[a-z]{65,70}",
    ]
}

/// One component as written in a manifest; `None` fields are left out.
#[derive(Debug, Clone)]
struct RawSpec {
    wasm: String,
    routes: Vec<String>,
    timeout_ms: Option<u64>,
    max_memory_mb: Option<u64>,
    calls: Vec<String>,
}

fn spec(names: Vec<String>) -> impl Strategy<Value = RawSpec> {
    let callable = if names.is_empty() {
        vec!["nobody".to_string()]
    } else {
        names
    };
    (
        prop_oneof![
            Just("builtin:users".to_string()),
            "[a-z]{1,6}\\.wasm",
            Just(String::new())
        ],
        prop::collection::vec(route(), 0..4),
        prop::option::of(prop_oneof![0..3u64, 1..700_000u64]),
        prop::option::of(prop_oneof![0..3u64, 1..5000u64]),
        prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(callable),
                1 => Just("ghost".to_string())
            ],
            0..2,
        ),
    )
        .prop_map(|(wasm, routes, timeout_ms, max_memory_mb, calls)| RawSpec {
            wasm,
            routes,
            timeout_ms,
            max_memory_mb,
            calls,
        })
}

fn manifest() -> impl Strategy<Value = BTreeMap<String, RawSpec>> {
    prop::collection::btree_set(name(), 0..4).prop_flat_map(|names| {
        let names: Vec<String> = names.into_iter().collect();
        let specs = prop::collection::vec(spec(names.clone()), names.len());
        (Just(names), specs).prop_map(|(names, specs)| names.into_iter().zip(specs).collect())
    })
}

/// A TOML basic string holding `s`.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn to_toml(components: &BTreeMap<String, RawSpec>) -> String {
    let list = |items: &[String]| {
        let items: Vec<String> = items.iter().map(|s| quoted(s)).collect();
        format!("[{}]", items.join(", "))
    };
    let mut text = String::new();
    for (name, spec) in components {
        text.push_str(&format!("[components.{}]\n", quoted(name)));
        text.push_str(&format!("wasm = {}\n", quoted(&spec.wasm)));
        text.push_str(&format!("routes = {}\n", list(&spec.routes)));
        if let Some(t) = spec.timeout_ms {
            text.push_str(&format!("timeout_ms = {t}\n"));
        }
        if let Some(m) = spec.max_memory_mb {
            text.push_str(&format!("max_memory_mb = {m}\n"));
        }
        if !spec.calls.is_empty() {
            text.push_str(&format!("calls = {}\n", list(&spec.calls)));
        }
        text.push('\n');
    }
    text
}

/// The manifest rules, written independently of the parser.
fn model_accepts(components: &BTreeMap<String, RawSpec>) -> bool {
    let name_ok = |n: &str| {
        (1..=64).contains(&n.len())
            && n.starts_with(|c: char| c.is_ascii_lowercase())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let route_ok = |r: &str| {
        r.starts_with('/')
            && r.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c))
            && !r.contains("//")
            && (r == "/" || !r.ends_with('/'))
            && !RESERVED
                .iter()
                .any(|res| r == *res || r.starts_with(&format!("{res}/")))
    };
    let mut claimed = std::collections::BTreeSet::new();
    !components.is_empty()
        && components.iter().all(|(name, spec)| {
            name_ok(name)
                && !spec.routes.is_empty()
                && spec
                    .routes
                    .iter()
                    .all(|r| route_ok(r) && claimed.insert(r.clone()))
                && spec.timeout_ms.is_none_or(|t| (1..=600_000).contains(&t))
                && spec.max_memory_mb.is_none_or(|m| (1..=4096).contains(&m))
                && !spec.wasm.is_empty()
                && spec.calls.iter().all(|c| components.contains_key(c))
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn manifest_parsing_never_panics_on_any_text(text in any::<String>()) {
        let _ = Manifest::from_str(&text);
    }

    #[test]
    fn manifest_parsing_never_panics_on_toml_like_text(
        text in "([\\[\\]{}=\"'., \\n#a-z0-9_/:-]|components|routes|wasm|timeout_ms|max_memory_mb|calls|publishes|subscribes){0,60}"
    ) {
        let _ = Manifest::from_str(&text);
    }

    #[test]
    fn structured_manifests_are_accepted_exactly_when_valid(components in manifest()) {
        let text = to_toml(&components);
        let parsed = Manifest::from_str(&text);
        let expected = model_accepts(&components);
        prop_assert_eq!(
            parsed.is_ok(),
            expected,
            "manifest:\n{}\nparsed: {:?}",
            text,
            parsed.as_ref().map(|_| ()).map_err(|e| format!("{e:#}"))
        );
        if let Ok(manifest) = parsed {
            // Valid manifests keep what was written: routes in order, limits.
            prop_assert_eq!(manifest.components.len(), components.len());
            for (name, spec) in &components {
                let got = &manifest.components[name];
                prop_assert_eq!(&got.routes, &spec.routes);
                prop_assert_eq!(&got.calls, &spec.calls);
                prop_assert_eq!(
                    got.timeout,
                    Duration::from_millis(spec.timeout_ms.unwrap_or(10_000))
                );
                prop_assert_eq!(
                    got.max_memory_bytes as u64,
                    spec.max_memory_mb.unwrap_or(32) * 1024 * 1024
                );
                // And the router built from them sends each route home.
                let router = Router::new(
                    manifest
                        .components
                        .iter()
                        .flat_map(|(n, s)| s.routes.iter().map(move |r| (r.clone(), n.clone()))),
                );
                for route in &spec.routes {
                    prop_assert_eq!(router.route(route), Some(name.as_str()));
                }
            }
        }
    }
}

const SEGMENTS: &[&str] = &["a", "b", "ab", "users", "u", "1", ""];

/// Path segments drawn from a small set, so routes and paths collide often.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(SEGMENTS).prop_map(str::to_string),
        1 => "[a-z0-9%.]{1,3}",
    ]
}

/// Route prefixes have no empty segments (the manifest refuses `//`).
fn nonempty_segment() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::sample::select(&SEGMENTS[..SEGMENTS.len() - 1]).prop_map(str::to_string),
        1 => "[a-z0-9%.]{1,3}",
    ]
}

fn prefix() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(nonempty_segment(), 1..4)
            .prop_map(|s| format!("/{}", s.join("/"))),
        1 => Just("/".to_string()),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(segment(), 0..5).prop_map(|s| format!("/{}", s.join("/"))),
        1 => prop::collection::vec(segment(), 1..4).prop_map(|s| s.join("/")),
        1 => any::<String>(),
    ]
}

/// Which component serves `path`, by the rule as stated: the longest
/// prefix that equals the path or is followed in it by `/`; `/` covers all.
fn model_route<'a>(table: &'a BTreeMap<String, String>, path: &str) -> Option<&'a str> {
    table
        .iter()
        .filter(|(prefix, _)| {
            if prefix.as_str() == "/" {
                return path.starts_with('/');
            }
            path == prefix.as_str()
                || (path.starts_with(prefix.as_str()) && path[prefix.len()..].starts_with('/'))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, component)| component.as_str())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn routing_never_panics_on_any_path(
        routes in prop::collection::vec((any::<String>(), any::<String>()), 0..6),
        path in any::<String>(),
    ) {
        let router = Router::new(routes);
        let _ = router.route(&path);
    }

    #[test]
    fn routing_picks_the_longest_covering_prefix(
        table in prop::collection::btree_map(prefix(), "[a-e]", 0..6),
        path in path(),
    ) {
        let router = Router::new(table.clone());
        prop_assert_eq!(router.route(&path), model_route(&table, &path), "table {:?}", table);
    }
}
