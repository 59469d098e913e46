//! Manifest reload, on SIGHUP or when `--watch` sees the manifest change:
//! the new manifest is checked whole, its new and changed components are
//! compiled and linked off the request path, and only then is one new
//! [`Table`] swapped in. A manifest that fails any check changes nothing.

use crate::app::{App, Slot, Table, call_limits, compile_one, read_wasm};
use crate::manifest::{ComponentSpec, Manifest};
use crate::runtime::Runtime;
use anyhow::{Context as _, bail};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Read the manifest at `path` and apply it to `app`, logging one line:
/// what changed, or why the manifest was rejected and the old one kept.
/// `trigger` says what asked for it (`SIGHUP`, `--watch`).
pub async fn reload_from(app: &App, path: &Path, trigger: &str) {
    let owned = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || Manifest::from_file(&owned))
        .await
        .context("reading the manifest panicked")
        .and_then(|read| read);
    let applied = match read {
        Ok(manifest) => app.reload(manifest).await,
        Err(e) => Err(e),
    };
    match applied {
        Ok(changes) if changes.is_empty() => tracing::info!(
            "manifest {} reloaded on {trigger}: nothing changed",
            path.display()
        ),
        Ok(changes) => tracing::info!(
            "manifest {} reloaded on {trigger}: {changes}",
            path.display()
        ),
        Err(e) => tracing::error!(
            "manifest {} rejected on {trigger}; the old one keeps serving: {}",
            path.display(),
            one_line(&format!("{e:#}"))
        ),
    }
}

/// An error chain on one line, whatever its parts contain.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl App {
    /// Make `manifest` the one served: check it fits the instance pool,
    /// build its OpenAPI document, compile and link each new or changed
    /// component (on a blocking thread), and only then swap the table.
    /// A component whose `wasm` entry and limits did not change keeps its
    /// slot, so its live version (an admin upload, say) and its previous
    /// one stay; one whose limits changed has both linked again under the
    /// new limits. Requests already running finish on what they started
    /// with. On an error nothing has changed.
    pub async fn reload(&self, manifest: Manifest) -> anyhow::Result<Changes> {
        let _compiling = self.compiling.lock().await;
        let old = self.table.load_full();
        fits(&manifest, &self.runtime)?;
        let runtime = self.runtime.clone();
        let prepared = {
            let old = old.clone();
            let manifest = manifest.clone();
            tokio::task::spawn_blocking(move || prepare(&runtime, &old, &manifest))
                .await
                .context("preparing the reload panicked")??
        };
        let Prepared {
            slots,
            fresh,
            openapi,
        } = prepared;
        let changes = Changes::between(&old.manifest, &manifest, *old.openapi() != openapi);
        if changes.is_empty() {
            return Ok(changes);
        }
        // A new or changed component joins the shared store's versions as
        // one does at start-up, before it serves anything.
        if let Some(shared) = &self.shared {
            for name in &fresh {
                self.adopt_one(shared, name, &slots[name])
                    .await
                    .with_context(|| format!("component `{name}`: the shared store"))?;
            }
        }
        let table = Arc::new(Table::new(manifest, slots, openapi));
        self.table.store(table.clone());
        // Versions no longer served keep no reused instances; requests
        // still running on them finish.
        for name in old.manifest.components.keys() {
            let (Some(before), after) = (old.slot(name), table.slot(name)) else {
                continue;
            };
            if after.is_none_or(|after| !Arc::ptr_eq(before, after)) {
                before.live.load().component.retire();
                let previous = before.previous.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(previous) = &*previous {
                    previous.component.retire();
                }
            }
        }
        Ok(changes)
    }
}

/// A manifest's needs that only a restart can meet: the instance pool's
/// slots were sized at start for the largest `max_memory_mb` then.
fn fits(manifest: &Manifest, runtime: &Runtime) -> anyhow::Result<()> {
    const MIB: usize = 1024 * 1024;
    for (name, spec) in &manifest.components {
        if spec.max_memory_bytes > runtime.max_memory_bytes() {
            bail!(
                "component `{name}`: max_memory_mb = {} is more than the {} MiB the instance pool was sized for at start; this change needs a restart",
                spec.max_memory_bytes / MIB,
                runtime.max_memory_bytes() / MIB
            );
        }
    }
    Ok(())
}

/// What a reload built before anything changed.
struct Prepared {
    slots: HashMap<String, Arc<Slot>>,
    /// The components compiled from their manifest entry (new, or a changed
    /// `wasm`), as opposed to kept or relinked.
    fresh: Vec<String>,
    openapi: bytes::Bytes,
}

/// Build every slot of `manifest`, from `old`'s where it can.
fn prepare(runtime: &Runtime, old: &Table, manifest: &Manifest) -> anyhow::Result<Prepared> {
    let openapi = crate::openapi::document(manifest)?;
    let mut slots = HashMap::new();
    let mut fresh = Vec::new();
    for (name, spec) in &manifest.components {
        let before = old.manifest.components.get(name);
        let slot = match (old.slot(name), before) {
            (Some(slot), Some(before)) if before.wasm == spec.wasm => {
                if same_limits(before, spec) {
                    slot.clone()
                } else {
                    Arc::new(relink(runtime, name, slot, spec)?)
                }
            }
            _ => {
                let wasm = read_wasm(name, &spec.wasm)?;
                let needs = crate::shape::needs(&wasm).unwrap_or(crate::runtime::PER_INSTANCE);
                let pool = runtime.per_instance();
                if needs.max(pool) != pool {
                    bail!(
                        "component `{name}` needs more of each pooled instance ({} core instances, {} memories, {} tables) than the pool was sized for at start; this change needs a restart",
                        needs.core_instances,
                        needs.memories,
                        needs.tables
                    );
                }
                fresh.push(name.clone());
                Arc::new(Slot::new(
                    compile_one(name, spec, runtime)?,
                    spec.wasm.clone(),
                ))
            }
        };
        slots.insert(name.clone(), slot);
    }
    Ok(Prepared {
        slots,
        fresh,
        openapi,
    })
}

/// Whether every version linked under `before`'s limits may serve under
/// `after`'s unchanged.
fn same_limits(before: &ComponentSpec, after: &ComponentSpec) -> bool {
    before.timeout == after.timeout
        && before.max_memory_bytes == after.max_memory_bytes
        && before.max_concurrency == after.max_concurrency
        && before.reuse == after.reuse
        && before.subscribes.is_empty() == after.subscribes.is_empty()
}

/// A new slot for the same code under `spec`'s limits: the live version
/// linked again (which must succeed: `subscribes` added to a component
/// without an event handler fails here) and the previous one if it can be.
fn relink(
    runtime: &Runtime,
    name: &str,
    slot: &Slot,
    spec: &ComponentSpec,
) -> anyhow::Result<Slot> {
    let limits = call_limits(spec);
    let live = slot.live.load().relinked(runtime, limits.clone())?;
    let previous = slot
        .previous
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|previous| match previous.relinked(runtime, limits.clone()) {
            Ok(relinked) => {
                // Not live: it keeps no reused instances until rolled back to.
                relinked.component.retire();
                Some(Arc::new(relinked))
            }
            Err(e) => {
                tracing::warn!(component = name, "the previous version cannot serve under the new limits, so there is nothing to roll back to: {e:#}");
                None
            }
        });
    Ok(Slot {
        live: arc_swap::ArcSwap::from_pointee(live),
        previous: Mutex::new(previous),
        limits,
        source: slot.source.clone(),
        following: Mutex::new(slot.following()),
    })
}

/// What a reload changed, by component, for its log line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// A different `wasm` entry: compiled again from it.
    pub code: Vec<String>,
    pub routes: Vec<String>,
    /// `calls`, `publishes` or `subscribes`.
    pub grants: Vec<String>,
    /// `timeout_ms`, `max_memory_mb`, `max_concurrency`, `reuse`.
    pub limits: Vec<String>,
    /// `strip_prefix`, `outbound`, `config` or `openapi`.
    pub settings: Vec<String>,
    /// The merged `/openapi.json` differs (an `openapi` file may change
    /// without the manifest changing).
    pub openapi: bool,
}

impl Changes {
    fn between(old: &Manifest, new: &Manifest, openapi: bool) -> Changes {
        let mut changes = Changes {
            openapi,
            ..Changes::default()
        };
        for (name, after) in &new.components {
            let Some(before) = old.components.get(name) else {
                changes.added.push(name.clone());
                continue;
            };
            let note = |differs: bool, list: &mut Vec<String>| {
                if differs {
                    list.push(name.clone());
                }
            };
            note(before.wasm != after.wasm, &mut changes.code);
            note(before.routes != after.routes, &mut changes.routes);
            note(
                before.calls != after.calls
                    || before.publishes != after.publishes
                    || before.subscribes != after.subscribes,
                &mut changes.grants,
            );
            note(
                before.timeout != after.timeout
                    || before.max_memory_bytes != after.max_memory_bytes
                    || before.max_concurrency != after.max_concurrency
                    || before.reuse != after.reuse,
                &mut changes.limits,
            );
            note(
                before.strip_prefix != after.strip_prefix
                    || before.outbound != after.outbound
                    || before.config != after.config
                    || before.openapi != after.openapi,
                &mut changes.settings,
            );
        }
        changes.removed = old
            .components
            .keys()
            .filter(|name| !new.components.contains_key(*name))
            .cloned()
            .collect();
        changes
    }

    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }
}

impl std::fmt::Display for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts = [
            ("added", &self.added),
            ("removed", &self.removed),
            ("new wasm", &self.code),
            ("routes", &self.routes),
            ("grants", &self.grants),
            ("limits", &self.limits),
            ("settings", &self.settings),
        ];
        let mut said: Vec<String> = parts
            .iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(what, names)| format!("{what}: {}", names.join(", ")))
            .collect();
        if self.openapi {
            said.push("/openapi.json updated".to_string());
        }
        f.write_str(&said.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr as _;

    fn check(old: &str, new: &str, expected: &str) {
        let old = Manifest::from_str(old).unwrap();
        let new = Manifest::from_str(new).unwrap();
        assert_eq!(Changes::between(&old, &new, false).to_string(), expected);
    }

    const BASE: &str = "[components.a]\nwasm = \"a.wasm\"\nroutes = [\"/a\"]\n";

    #[test]
    fn changes_are_named_by_kind() {
        check(BASE, BASE, "");
        check(
            BASE,
            &format!("{BASE}[components.b]\nwasm = \"b.wasm\"\nroutes = [\"/b\"]\n"),
            "added: b",
        );
        check(
            "[components.b]\nwasm = \"b.wasm\"\nroutes = [\"/b\"]\n",
            BASE,
            "added: a; removed: b",
        );
        check(
            BASE,
            "[components.a]\nwasm = \"a2.wasm\"\nroutes = [\"/a\", \"/x\"]\ntimeout_ms = 5\n",
            "new wasm: a; routes: a; limits: a",
        );
        check(
            BASE,
            &format!("{BASE}calls = [\"a\"]\nstrip_prefix = true\n"),
            "grants: a; settings: a",
        );
    }
}
