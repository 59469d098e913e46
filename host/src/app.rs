//! Everything `berth serve` loads before it binds: the components, compiled
//! and pre-instantiated, the route table and the store. Loading fails with a
//! message naming the problem, so a bad deployment never opens its port.
//! Each component lives in a [`Slot`] that can be hot-swapped while serving.

use crate::builtin;
use crate::manifest::{Manifest, WasmSource};
use crate::metrics::{Metrics, metrics};
use crate::router::Router;
use crate::runtime::{CallLimits, LoadedComponent, Runtime};
use crate::store::{Backend, Outbox, Store};
use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The loaded services of one manifest.
pub struct App {
    pub router: Router,
    /// Each component's live version and what is needed to replace it.
    components: HashMap<String, Slot>,
    pub store: Arc<dyn Store>,
    /// Where deliveries of published events are taken from.
    pub outbox: Arc<dyn Outbox>,
    /// Compiles replacement versions (admin uploads, watched files).
    runtime: Runtime,
    /// One replacement compiles at a time: compiling is CPU-heavy and would
    /// otherwise compete with requests for every core at once.
    compiling: tokio::sync::Mutex<()>,
}

/// One component: the version new requests get, and the one it replaced.
///
/// **Invariant:** a request takes an `Arc` of `live` when it starts and
/// finishes on it; a swap changes only what later requests get. `live` and
/// `previous` change together, under the `previous` lock, so concurrent
/// swaps and rollbacks never lose a version.
struct Slot {
    live: ArcSwap<Version>,
    /// The version `live` replaced, kept loaded so a rollback is instant.
    previous: Mutex<Option<Arc<Version>>>,
    /// Prefixes routed here; fixed for the life of the process.
    routes: Vec<String>,
    /// Limits every version of the component runs under.
    limits: CallLimits,
    /// Where the first version came from; a file is what `--watch` watches.
    source: WasmSource,
}

/// One loaded version of a component.
pub struct Version {
    pub component: Arc<LoadedComponent>,
    /// Hex SHA-256 of the wasm: identifies the version.
    pub sha256: String,
    /// When it was loaded.
    pub loaded_at: SystemTime,
}

/// What the admin API shows of a component.
#[derive(Debug, Clone)]
pub struct ComponentInfo {
    pub name: String,
    pub routes: Vec<String>,
    pub live: VersionInfo,
    /// The version a rollback would restore.
    pub previous: Option<VersionInfo>,
}

/// A version's identity, without the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub sha256: String,
    pub loaded_at: SystemTime,
}

/// What [`App::replace`] did.
#[derive(Debug, Clone)]
pub struct Replaced {
    /// The version now live.
    pub version: VersionInfo,
    /// False if the wasm was the live version already, so nothing changed.
    pub swapped: bool,
}

/// Why a swap or rollback did not happen. The live version keeps serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapError {
    /// No component has that name.
    UnknownComponent(String),
    /// The new wasm failed to compile or does not implement the world.
    Rejected(String),
    /// A rollback was asked for but there is no previous version.
    NoPrevious(String),
}

impl std::fmt::Display for SwapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SwapError::UnknownComponent(name) => write!(f, "there is no component `{name}`"),
            SwapError::Rejected(reason) => f.write_str(reason),
            SwapError::NoPrevious(name) => write!(
                f,
                "component `{name}` has no previous version to roll back to"
            ),
        }
    }
}

impl std::error::Error for SwapError {}

impl App {
    /// Compile every component of `manifest` and build the route table.
    pub fn load(manifest: &Manifest, runtime: &Runtime, backend: &Backend) -> anyhow::Result<App> {
        let mut components = HashMap::new();
        let mut routes = Vec::new();
        for (name, spec) in &manifest.components {
            let wasm = read_wasm(name, &spec.wasm)?;
            let limits = CallLimits::new(spec.timeout, spec.max_memory_bytes, spec.max_concurrency);
            let sha256 = sha256_hex(&wasm);
            let loaded = runtime.load(name, &wasm, &sha256, limits.clone())?;
            let slot = Slot {
                live: ArcSwap::from_pointee(Version::new(loaded, sha256)),
                previous: Mutex::new(None),
                routes: spec.routes.clone(),
                limits,
                source: spec.wasm.clone(),
            };
            components.insert(name.clone(), slot);
            routes.extend(spec.routes.iter().map(|r| (r.clone(), name.clone())));
        }
        Ok(App {
            router: Router::new(routes),
            components,
            store: backend.kv.clone(),
            outbox: backend.outbox.clone(),
            runtime: runtime.clone(),
            compiling: tokio::sync::Mutex::new(()),
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
        self.components
            .get(name)
            .map(|slot| slot.live.load().component.clone())
    }

    /// The names of every component, in no particular order.
    pub fn component_names(&self) -> impl Iterator<Item = &str> {
        self.components.keys().map(String::as_str)
    }

    /// Every component with its live and previous version, by name.
    pub fn components(&self) -> Vec<ComponentInfo> {
        let mut all: Vec<ComponentInfo> = self
            .components
            .iter()
            .map(|(name, slot)| {
                // Read both under the lock so the pair is consistent.
                let previous = slot.previous.lock().unwrap_or_else(|e| e.into_inner());
                ComponentInfo {
                    name: name.clone(),
                    routes: slot.routes.clone(),
                    live: slot.live.load().info(),
                    previous: previous.as_ref().map(|v| v.info()),
                }
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The components loaded from files, with their paths: what `--watch` watches.
    pub fn files(&self) -> Vec<(String, std::path::PathBuf)> {
        let mut files: Vec<_> = self
            .components
            .iter()
            .filter_map(|(name, slot)| match &slot.source {
                WasmSource::File(path) => Some((name.clone(), path.clone())),
                WasmSource::Builtin(_) => None,
            })
            .collect();
        files.sort();
        files
    }

    /// Validate `wasm` as a new version of component `name` and, if it is
    /// one, make it the version new requests get. Compiling runs on a
    /// blocking thread, so requests keep being served meanwhile; requests
    /// already running finish on the version they started with.
    pub async fn replace(&self, name: &str, wasm: Vec<u8>) -> Result<Replaced, SwapError> {
        let slot = self
            .components
            .get(name)
            .ok_or_else(|| SwapError::UnknownComponent(name.to_string()))?;
        let sha256 = sha256_hex(&wasm);
        let _compiling = self.compiling.lock().await;
        let live = slot.live.load_full();
        if live.sha256 == sha256 {
            return Ok(Replaced {
                version: live.info(),
                swapped: false,
            });
        }
        let runtime = self.runtime.clone();
        let limits = slot.limits.clone();
        let owned_name = name.to_string();
        let labels = Metrics::component(name);
        let hash = sha256.clone();
        let loaded =
            tokio::task::spawn_blocking(move || runtime.load(&owned_name, &wasm, &hash, limits))
                .await
                .map_err(|e| {
                    SwapError::Rejected(format!("compiling component `{name}` failed: {e}"))
                })
                .and_then(|loaded| loaded.map_err(|e| SwapError::Rejected(format!("{e:#}"))))
                .inspect_err(|_| {
                    metrics().swaps_rejected.get_or_create(&labels).inc();
                })?;
        metrics().swaps.get_or_create(&labels).inc();
        let next = Arc::new(Version::new(loaded, sha256));
        let info = next.info();
        slot.install(next);
        Ok(Replaced {
            version: info,
            swapped: true,
        })
    }

    /// Swap back to the version the live one replaced. The version rolled
    /// back from becomes the previous one, so a second rollback undoes the
    /// first.
    pub fn rollback(&self, name: &str) -> Result<VersionInfo, SwapError> {
        let slot = self
            .components
            .get(name)
            .ok_or_else(|| SwapError::UnknownComponent(name.to_string()))?;
        let mut previous = slot.previous.lock().unwrap_or_else(|e| e.into_inner());
        let Some(target) = previous.take() else {
            return Err(SwapError::NoPrevious(name.to_string()));
        };
        let info = target.info();
        *previous = Some(slot.live.swap(target));
        metrics()
            .swaps
            .get_or_create(&Metrics::component(name))
            .inc();
        Ok(info)
    }
}

impl Slot {
    /// Make `next` live and keep the replaced version for rollback.
    fn install(&self, next: Arc<Version>) -> Arc<Version> {
        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        let replaced = self.live.swap(next);
        *previous = Some(replaced.clone());
        replaced
    }
}

impl Version {
    fn new(component: LoadedComponent, sha256: String) -> Version {
        Version {
            component: Arc::new(component),
            sha256,
            loaded_at: SystemTime::now(),
        }
    }

    fn info(&self) -> VersionInfo {
        VersionInfo {
            sha256: self.sha256.clone(),
            loaded_at: self.loaded_at,
        }
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
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
        WasmSource::File(path) => read_file(name, path),
    }
}

fn read_file(name: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path)
        .with_context(|| format!("component `{name}`: cannot read {}", path.display()))
}
