//! Everything `berth serve` loads before it binds: the components, compiled
//! and pre-instantiated, the route table and the store. Loading fails with a
//! message naming the problem, so a bad deployment never opens its port.

use crate::builtin;
use crate::manifest::{Manifest, WasmSource};
use crate::router::Router;
use crate::runtime::{CallLimits, LoadedComponent, Runtime};
use crate::store::Store;
use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::Arc;

/// The loaded services of one manifest.
pub struct App {
    pub router: Router,
    /// The live version of each component. A request takes an `Arc` of the
    /// version current when it starts and finishes on it, whatever is
    /// swapped in meanwhile.
    components: HashMap<String, ArcSwap<LoadedComponent>>,
    pub store: Arc<dyn Store>,
}

impl App {
    /// Compile every component of `manifest` and build the route table.
    pub fn load(
        manifest: &Manifest,
        runtime: &Runtime,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<App> {
        let mut components = HashMap::new();
        let mut routes = Vec::new();
        for (name, spec) in &manifest.components {
            let wasm = read_wasm(name, &spec.wasm)?;
            let limits = CallLimits {
                timeout: spec.timeout,
                max_memory_bytes: spec.max_memory_bytes,
            };
            let loaded = runtime.load(name, &wasm, limits)?;
            components.insert(name.clone(), ArcSwap::from_pointee(loaded));
            routes.extend(spec.routes.iter().map(|r| (r.clone(), name.clone())));
        }
        Ok(App {
            router: Router::new(routes),
            components,
            store,
        })
    }

    /// The current version of the component serving `path`, if any.
    pub fn component_for(&self, path: &str) -> Option<Arc<LoadedComponent>> {
        self.router
            .route(path)
            .and_then(|name| self.component(name))
    }

    /// The current version of component `name`.
    pub fn component(&self, name: &str) -> Option<Arc<LoadedComponent>> {
        self.components.get(name).map(|slot| slot.load_full())
    }

    /// The names of every component, in no particular order.
    pub fn component_names(&self) -> impl Iterator<Item = &str> {
        self.components.keys().map(String::as_str)
    }

    /// Make `next` the version new requests of component `name` get, and
    /// return the version it replaced. `None` if there is no such component.
    pub fn swap(&self, name: &str, next: LoadedComponent) -> Option<Arc<LoadedComponent>> {
        self.components
            .get(name)
            .map(|slot| slot.swap(Arc::new(next)))
    }
}

fn read_wasm(name: &str, source: &WasmSource) -> anyhow::Result<Vec<u8>> {
    match source {
        WasmSource::Builtin(builtin) => match builtin::wasm(builtin) {
            Some(bytes) => Ok(bytes.to_vec()),
            None => bail!(
                "component `{name}`: there is no built-in component `{builtin}`; built-ins are: {}",
                builtin::NAMES.join(", ")
            ),
        },
        WasmSource::File(path) => std::fs::read(path)
            .with_context(|| format!("component `{name}`: cannot read {}", path.display())),
    }
}
