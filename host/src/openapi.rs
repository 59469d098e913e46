//! `/openapi.json`: the host's own paths plus each component's OpenAPI
//! document placed under its routes, merged into one document when a
//! manifest is loaded or reloaded (never per request). A component without
//! a document is listed by route prefix only.

use crate::manifest::{ComponentSpec, Manifest, WasmSource};
use crate::router::Router;
use anyhow::{Context as _, bail};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read as _;
use std::path::Path;

/// The largest `openapi` document a manifest may name.
pub const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;

/// The document of the built-in users and orders services and of the host's
/// own paths; each built-in's paths are those under its routes.
const BASE: &str = include_str!("../../docs/openapi.json");

/// The paths the host answers itself, documented in [`BASE`].
const HOST_PATHS: &[&str] = &["/healthz", "/readyz", "/openapi.json"];

/// The operations of a path item, as OpenAPI 3 names them.
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The merged document for `manifest`, as the bytes `/openapi.json` serves.
/// Reads each component's `openapi` file; a missing, oversized or invalid
/// one is an error naming the component and the file.
pub fn document(manifest: &Manifest) -> anyhow::Result<bytes::Bytes> {
    let base: Value = serde_json::from_str(BASE).expect("docs/openapi.json is valid JSON");
    let router = Router::new(manifest.components.iter().flat_map(|(name, spec)| {
        spec.routes
            .iter()
            .map(move |route| (route.clone(), name.clone()))
    }));
    let mut merged = Merged::default();
    let host_paths: Vec<(String, Value)> = HOST_PATHS
        .iter()
        .map(|p| (p.to_string(), base["paths"][p].clone()))
        .collect();
    merged.add("host", &base, host_paths)?;
    let mut all_builtin = true;
    for (name, spec) in &manifest.components {
        let doc = match (&spec.openapi, &spec.wasm) {
            (Some(path), _) => Some(read(name, path)?),
            (None, WasmSource::Builtin(_)) => Some(base.clone()),
            (None, WasmSource::File(_)) => None,
        };
        all_builtin &= spec.openapi.is_none() && matches!(spec.wasm, WasmSource::Builtin(_));
        let placed = doc
            .as_ref()
            .map(|doc| place(name, spec, doc, &router))
            .unwrap_or_default();
        match doc {
            Some(doc) if !placed.is_empty() => merged.add(name, &doc, placed)?,
            _ => merged.undocumented(name, spec),
        }
    }
    let info = if all_builtin {
        base["info"].clone()
    } else {
        let names: Vec<&str> = manifest.components.keys().map(String::as_str).collect();
        json!({
            "title": "Berth",
            "version": base["info"]["version"],
            "description": format!(
                "The components this Berth serves ({}) and the host's own endpoints. A component's operations come from the OpenAPI document its manifest entry names; a component without one is listed by route prefix only.",
                names.join(", ")
            ),
        })
    };
    let out = merged.finish(&base, info);
    Ok(serde_json::to_vec_pretty(&out)
        .expect("a JSON value serializes")
        .into())
}

/// Read and check component `name`'s document: at most
/// [`MAX_DOCUMENT_BYTES`] of JSON, an OpenAPI 3.0 or 3.1 object with
/// `paths`, whose references all point into its own `components`.
pub fn read(name: &str, path: &Path) -> anyhow::Result<Value> {
    let context = || format!("component `{name}`: openapi document {}", path.display());
    let file = std::fs::File::open(path)
        .map_err(anyhow::Error::from)
        .with_context(context)?;
    let mut text = Vec::new();
    file.take(MAX_DOCUMENT_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(anyhow::Error::from)
        .with_context(context)?;
    if text.len() as u64 > MAX_DOCUMENT_BYTES {
        return Err(anyhow::anyhow!(
            "it is larger than {MAX_DOCUMENT_BYTES} bytes"
        ))
        .with_context(context);
    }
    let doc: Value = serde_json::from_slice(&text)
        .map_err(|e| anyhow::anyhow!("it is not valid JSON: {e}"))
        .with_context(context)?;
    check(&doc).with_context(context)?;
    Ok(doc)
}

/// What makes a document one this host can merge.
fn check(doc: &Value) -> anyhow::Result<()> {
    let Some(doc) = doc.as_object() else {
        bail!("it is not a JSON object");
    };
    match doc.get("openapi").and_then(Value::as_str) {
        Some(v) if v.starts_with("3.0.") || v.starts_with("3.1.") => {}
        Some(v) => bail!("it is OpenAPI `{v}`; only 3.0.x and 3.1.x are read"),
        None => bail!("it has no `openapi` version string; is it an OpenAPI 3 document?"),
    }
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        bail!("it has no `paths` object");
    };
    for (path, item) in paths {
        if !path.starts_with('/') {
            bail!("path `{path}` does not start with `/`");
        }
        if !item.is_object() {
            bail!("path `{path}` is not an object");
        }
    }
    if let Some(components) = doc.get("components") {
        let Some(components) = components.as_object() else {
            bail!("`components` is not an object");
        };
        if let Some((section, _)) = components.iter().find(|(_, v)| !v.is_object()) {
            bail!("`components.{section}` is not an object");
        }
    }
    let mut refs = Vec::new();
    collect_refs(&Value::Object(doc.clone()), &mut refs);
    for reference in refs {
        let Some((section, key)) = split_ref(&reference) else {
            bail!(
                "`$ref` `{reference}` does not point into this document's `components`; external references are not followed"
            );
        };
        if doc
            .get("components")
            .and_then(|c| c.get(section))
            .and_then(|s| s.get(key))
            .is_none()
        {
            bail!("`$ref` `{reference}` names nothing in `components`");
        }
    }
    Ok(())
}

/// The document's path items as they are served: with `strip_prefix`,
/// each path under each route prefix; without, each path as it is. A path
/// the router would send to another component (or none) is left out.
fn place(name: &str, spec: &ComponentSpec, doc: &Value, router: &Router) -> Vec<(String, Value)> {
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut placed = Vec::new();
    for (path, item) in paths {
        let served: Vec<String> = if spec.strip_prefix {
            spec.routes.iter().map(|route| join(route, path)).collect()
        } else {
            vec![path.clone()]
        };
        for served in served {
            if router.route(&served) == Some(name) {
                placed.push((served, item.clone()));
            }
        }
    }
    placed
}

/// `path` as the component sees it, served under `route`.
fn join(route: &str, path: &str) -> String {
    match (route, path) {
        ("/", path) => path.to_string(),
        (route, "/") => route.to_string(),
        (route, path) => format!("{route}{path}"),
    }
}

/// The document being built.
#[derive(Default)]
struct Merged {
    paths: Map<String, Value>,
    /// `components` by section (`schemas`, `responses`, ...) and name.
    components: BTreeMap<String, Map<String, Value>>,
    operation_ids: HashSet<String>,
    /// Tags the contributing documents declare, first declaration wins.
    tags: Vec<Value>,
    /// The highest minor version among the documents (`3.0` or `3.1`).
    version_3_1: bool,
}

impl Merged {
    /// Add `placed` (path items of `doc`, already at their served paths)
    /// and the parts of `doc`'s `components` they reach. A component entry
    /// of the same name as one already merged is shared when equal and
    /// renamed `OWNER.NAME` (with every `$ref` to it) when not.
    fn add(
        &mut self,
        owner: &str,
        doc: &Value,
        placed: Vec<(String, Value)>,
    ) -> anyhow::Result<()> {
        self.version_3_1 |= doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1"));
        let mut roots = Vec::new();
        for (_, item) in &placed {
            collect_refs(item, &mut roots);
        }
        let reached = reachable(doc, roots);
        let mut renames: BTreeMap<String, String> = BTreeMap::new();
        for (section, key) in &reached {
            let definition = &doc["components"][section][key];
            let Some(existing) = self.components.get(section).and_then(|s| s.get(key)) else {
                continue;
            };
            if existing == definition {
                continue;
            }
            let renamed = format!("{owner}.{key}");
            if self
                .components
                .get(section)
                .is_some_and(|s| s.contains_key(&renamed))
            {
                bail!(
                    "component `{owner}`: its openapi document's `components.{section}.{key}` clashes with another component's, and so does `{renamed}`; rename one"
                );
            }
            renames.insert(
                format!("#/components/{section}/{key}"),
                format!("#/components/{section}/{renamed}"),
            );
        }
        for (section, key) in reached {
            let mut definition = doc["components"][&section][&key].clone();
            rewrite_refs(&mut definition, &renames);
            let name = renames
                .get(&format!("#/components/{section}/{key}"))
                .and_then(|r| r.rsplit('/').next())
                .unwrap_or(&key)
                .to_string();
            self.components
                .entry(section)
                .or_default()
                .insert(name, definition);
        }
        for (path, mut item) in placed {
            rewrite_refs(&mut item, &renames);
            self.unique_operation_ids(owner, &mut item);
            self.paths.insert(path, item);
        }
        if let Some(tags) = doc.get("tags").and_then(Value::as_array) {
            for tag in tags {
                if !self.tags.iter().any(|t| t["name"] == tag["name"]) {
                    self.tags.push(tag.clone());
                }
            }
        }
        Ok(())
    }

    /// List a component without a document by its route prefixes: a path
    /// item with no operations, which is valid OpenAPI and which tools
    /// that generate requests from operations leave alone.
    fn undocumented(&mut self, name: &str, spec: &ComponentSpec) {
        for route in &spec.routes {
            self.paths.insert(
                route.clone(),
                json!({
                    "summary": format!("Served by component `{name}` (undocumented)"),
                    "description": format!(
                        "Component `{name}` serves `{route}` and every path below it. Its manifest entry names no `openapi` document, so its operations are not described here."
                    ),
                }),
            );
        }
    }

    /// An `operationId` must be unique in a document: a repeat (two
    /// components' `list`, or one document under two prefixes) is
    /// prefixed with its component's name, and numbered if need be.
    fn unique_operation_ids(&mut self, owner: &str, item: &mut Value) {
        for method in METHODS {
            let Some(id) = item
                .get_mut(*method)
                .and_then(|op| op.get_mut("operationId"))
            else {
                continue;
            };
            let Some(original) = id.as_str().map(str::to_string) else {
                continue;
            };
            let mut unique = original.clone();
            let mut n = 1;
            while self.operation_ids.contains(&unique) {
                n += 1;
                unique = if n == 2 {
                    format!("{owner}.{original}")
                } else {
                    format!("{owner}.{original}.{n}")
                };
            }
            self.operation_ids.insert(unique.clone());
            *id = Value::String(unique);
        }
    }

    fn finish(self, base: &Value, info: Value) -> Value {
        let mut used_tags = BTreeSet::new();
        for item in self.paths.values() {
            for method in METHODS {
                if let Some(tags) = item[*method]["tags"].as_array() {
                    used_tags.extend(tags.iter().filter_map(Value::as_str).map(str::to_string));
                }
            }
        }
        let tags: Vec<Value> = self
            .tags
            .into_iter()
            .filter(|t| t["name"].as_str().is_some_and(|n| used_tags.contains(n)))
            .collect();
        let components: Map<String, Value> = self
            .components
            .into_iter()
            .map(|(section, entries)| (section, Value::Object(entries)))
            .collect();
        json!({
            "openapi": if self.version_3_1 { "3.1.0" } else { "3.0.3" },
            "info": info,
            "servers": base["servers"],
            "tags": tags,
            "paths": self.paths,
            "components": components,
        })
    }
}

/// Every `$ref` string in `value`.
fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

/// `#/components/SECTION/NAME` as its two parts.
fn split_ref(reference: &str) -> Option<(&str, &str)> {
    let rest = reference.strip_prefix("#/components/")?;
    let (section, key) = rest.split_once('/')?;
    (!key.contains('/')).then_some((section, key))
}

/// The `components` entries reached from `roots`, directly or through
/// other entries.
fn reachable(doc: &Value, roots: Vec<String>) -> BTreeSet<(String, String)> {
    let mut seen = BTreeSet::new();
    let mut todo = roots;
    while let Some(reference) = todo.pop() {
        let Some((section, key)) = split_ref(&reference) else {
            continue;
        };
        if !seen.insert((section.to_string(), key.to_string())) {
            continue;
        }
        collect_refs(&doc["components"][section][key], &mut todo);
    }
    seen
}

/// Point every `$ref` named in `renames` at its new name.
fn rewrite_refs(value: &mut Value, renames: &BTreeMap<String, String>) {
    if renames.is_empty() {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match (key.as_str(), v) {
                    ("$ref", Value::String(r)) => {
                        if let Some(new) = renames.get(r.as_str()) {
                            *r = new.clone();
                        }
                    }
                    (_, v) => rewrite_refs(v, renames),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, renames)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr as _;

    fn merged(manifest: &Manifest) -> Value {
        serde_json::from_slice(&document(manifest).unwrap()).unwrap()
    }

    #[test]
    fn the_default_manifest_serves_the_checked_in_document() {
        let base: Value = serde_json::from_str(BASE).unwrap();
        let out = merged(&Manifest::builtin());
        assert_eq!(
            out, base,
            "the merged document drifted from docs/openapi.json"
        );
    }

    #[test]
    fn only_the_served_components_appear() {
        let m = Manifest::from_str(
            "[components.users]\nwasm = \"builtin:users\"\nroutes = [\"/users\"]\n",
        )
        .unwrap();
        let out = merged(&m);
        let mut paths: Vec<&String> = out["paths"].as_object().unwrap().keys().collect();
        paths.sort();
        assert_eq!(
            paths,
            [
                "/healthz",
                "/openapi.json",
                "/readyz",
                "/users",
                "/users/{id}"
            ]
        );
        assert!(out["components"]["schemas"].get("Order").is_none());
        assert!(out["components"]["schemas"].get("User").is_some());
    }

    #[test]
    fn a_component_without_a_document_is_listed_by_prefix() {
        let m = Manifest::from_str(
            "[components.hello]\nwasm = \"hello.wasm\"\nroutes = [\"/hello\", \"/hi\"]\n",
        )
        .unwrap();
        let out = merged(&m);
        for route in ["/hello", "/hi"] {
            let item = &out["paths"][route];
            assert!(
                item["summary"]
                    .as_str()
                    .unwrap()
                    .contains("`hello` (undocumented)")
            );
            assert!(METHODS.iter().all(|m| item.get(*m).is_none()));
        }
    }

    fn write(dir: &Path, name: &str, doc: &Value) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    }

    #[test]
    fn documents_are_placed_under_their_prefix_and_clashes_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let doc = json!({
            "openapi": "3.0.3",
            "info": {"title": "p", "version": "1"},
            "paths": {"/": {"get": {"operationId": "list", "responses": {"400": {"$ref": "#/components/responses/Bad"}}}},
                      "/{id}": {"get": {"operationId": "get", "responses": {"200": {"description": "ok"}}}}},
            "components": {"responses": {"Bad": {"description": "bad", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
                           "schemas": {"Error": {"type": "string"}}}
        });
        let path = write(dir.path(), "p.json", &doc);
        let text = format!(
            "[components.products]\nwasm = \"p.wasm\"\nroutes = [\"/products\"]\nstrip_prefix = true\nopenapi = {:?}\n",
            path.display().to_string()
        );
        let out = merged(&Manifest::from_str(&text).unwrap());
        assert_eq!(out["paths"]["/products"]["get"]["operationId"], "list");
        assert!(out["paths"]["/products/{id}"]["get"].is_object());
        // The host's Error is an object; the component's, a string: renamed.
        assert_eq!(
            out["components"]["schemas"]["products.Error"]["type"],
            "string"
        );
        assert_eq!(out["components"]["schemas"]["Error"]["type"], "object");
        assert_eq!(
            out["components"]["responses"]["Bad"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/products.Error"
        );
    }

    #[test]
    fn bad_documents_are_refused_with_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let check_err = |content: &str, expected: &str| {
            let path = dir.path().join("doc.json");
            std::fs::write(&path, content).unwrap();
            let e = format!("{:#}", read("p", &path).unwrap_err());
            let prefix = format!("component `p`: openapi document {}: ", path.display());
            assert_eq!(e.strip_prefix(&prefix), Some(expected), "{e}");
        };
        check_err(
            "{",
            "it is not valid JSON: EOF while parsing an object at line 1 column 1",
        );
        check_err(
            r#"{"openapi": "2.0", "paths": {}}"#,
            "it is OpenAPI `2.0`; only 3.0.x and 3.1.x are read",
        );
        check_err(
            r#"{"swagger": "2.0"}"#,
            "it has no `openapi` version string; is it an OpenAPI 3 document?",
        );
        check_err(r#"{"openapi": "3.0.3"}"#, "it has no `paths` object");
        check_err(
            r#"{"openapi": "3.0.3", "paths": {"x": {}}}"#,
            "path `x` does not start with `/`",
        );
        check_err(
            r#"{"openapi": "3.0.3", "paths": {"/": {"get": {"responses": {"200": {"$ref": "other.json#/x"}}}}}}"#,
            "`$ref` `other.json#/x` does not point into this document's `components`; external references are not followed",
        );
        check_err(
            r##"{"openapi": "3.0.3", "paths": {"/": {"get": {"responses": {"200": {"$ref": "#/components/responses/Gone"}}}}}}"##,
            "`$ref` `#/components/responses/Gone` names nothing in `components`",
        );
        let big = format!("\"{}\"", "x".repeat(MAX_DOCUMENT_BYTES as usize));
        check_err(
            &big,
            &format!("it is larger than {MAX_DOCUMENT_BYTES} bytes"),
        );
    }
}
