//! Everything `berth serve` loads before it binds: the components, compiled
//! and pre-instantiated, the route table and the store. Loading fails with a
//! message naming the problem, so a bad deployment never opens its port.
//! Each component lives in a [`Slot`] that can be hot-swapped while serving;
//! the routes, slots, grants and OpenAPI document of one manifest form a
//! [`Table`], which a manifest reload (`reload.rs`) replaces whole.

use crate::builtin;
use crate::executor::{Executor, Kind};
use crate::manifest::{Manifest, WasmSource};
use crate::mesh::Grants;
use crate::metrics::{Metrics, metrics};
use crate::router::Router;
use crate::runtime::{CallLimits, Runtime};
use crate::store::versions::{LiveVersion, Offer, SharedVersions};
use crate::store::{Backend, Outbox, Store, StoreError};
use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The loaded services of one manifest.
pub struct App {
    /// What the manifest says is served. A request, call or delivery reads
    /// it once where it needs it; a reload swaps in a new table whole, so
    /// no request sees half of one manifest and half of another.
    pub(crate) table: ArcSwap<Table>,
    pub store: Arc<dyn Store>,
    /// Where deliveries of published events are taken from.
    pub outbox: Arc<dyn Outbox>,
    /// Versions shared with other replicas, when the store is shared.
    pub(crate) shared: Option<Shared>,
    /// Compiles replacement versions (admin uploads, watched files).
    pub(crate) runtime: Runtime,
    /// One replacement compiles at a time: compiling is CPU-heavy and would
    /// otherwise compete with requests for every core at once. A reload
    /// holds it from its first look at the table to its swap, so a swap or
    /// rollback never lands in a slot the reload is replacing.
    pub(crate) compiling: tokio::sync::Mutex<()>,
}

/// One manifest as served: the route table, each component's slot, the
/// grants and the merged OpenAPI document. Never changed in place (the
/// slots' versions aside): a reload builds a new one and swaps it in.
pub struct Table {
    /// The manifest this table was built from, to tell what a reload changes.
    pub manifest: Manifest,
    router: Router,
    components: HashMap<String, Entry>,
    grants: Arc<Grants>,
    /// The body of `/openapi.json`, computed when the table is built.
    openapi: bytes::Bytes,
}

/// A component in a table: its slot (shared with the next table when a
/// reload leaves its code and limits alone) and how it is routed.
pub(crate) struct Entry {
    pub(crate) slot: Arc<Slot>,
    /// Prefixes routed here.
    routes: Vec<String>,
    /// Whether requests reach the component without the prefix they matched.
    strip_prefix: bool,
}

impl Table {
    /// A table serving `slots` as `manifest` routes them.
    pub(crate) fn new(
        manifest: Manifest,
        slots: HashMap<String, Arc<Slot>>,
        openapi: bytes::Bytes,
    ) -> Table {
        let mut routes = Vec::new();
        let mut components = HashMap::new();
        for (name, slot) in slots {
            let spec = &manifest.components[&name];
            routes.extend(spec.routes.iter().map(|r| (r.clone(), name.clone())));
            components.insert(
                name,
                Entry {
                    slot,
                    routes: spec.routes.clone(),
                    strip_prefix: spec.strip_prefix,
                },
            );
        }
        Table {
            router: Router::new(routes),
            grants: Arc::new(Grants::new(&manifest)),
            manifest,
            components,
            openapi,
        }
    }

    pub(crate) fn openapi(&self) -> &bytes::Bytes {
        &self.openapi
    }

    pub(crate) fn slot(&self, name: &str) -> Option<&Arc<Slot>> {
        self.components.get(name).map(|entry| &entry.slot)
    }
}

/// The store's component versions, and who this replica is to it.
pub(crate) struct Shared {
    versions: Arc<dyn SharedVersions>,
    /// This replica's name in the store's records.
    replica: String,
}

/// One component: the version new requests get, and the one it replaced.
///
/// **Invariant:** a request takes an `Arc` of `live` when it starts and
/// finishes on it; a swap changes only what later requests get. `live` and
/// `previous` change together, under the `previous` lock, so concurrent
/// swaps and rollbacks never lose a version.
pub(crate) struct Slot {
    pub(crate) live: ArcSwap<Version>,
    /// The version `live` replaced, kept loaded so a rollback is instant.
    pub(crate) previous: Mutex<Option<Arc<Version>>>,
    /// Limits every version of the component runs under; a reload that
    /// changes them gives the component a new slot.
    pub(crate) limits: CallLimits,
    /// Where the first version came from; a file is what `--watch` watches.
    pub(crate) source: WasmSource,
    /// How this replica stands to the store's live version, when shared.
    pub(crate) following: Mutex<Following>,
}

/// How a replica stands to the live version the shared store names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Following {
    /// Serving it (or nothing is shared).
    #[default]
    Live,
    /// Compiling this version to swap it in.
    Compiling(String),
    /// This version failed here; the previous one keeps serving.
    Rejected { sha256: String, reason: String },
}

/// One component of a manifest, compiled and linked.
pub struct Compiled {
    pub name: String,
    /// Hex SHA-256 of its wasm.
    pub sha256: String,
    pub component: Executor,
    pub limits: CallLimits,
}

/// Read, compile (or load from the compile cache) and link every component
/// of `manifest`, several at once: a cold compile spreads over the cores by
/// itself, but reading the file, checking its imports, loading a cached
/// compilation and linking are serial, and an interpreter component's take
/// seconds. The first component (in name order) that fails gives the error.
pub fn compile_all(manifest: &Manifest, runtime: &Runtime) -> anyhow::Result<Vec<Compiled>> {
    let specs: Vec<_> = manifest.components.iter().collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, specs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut outcomes: Vec<(usize, anyhow::Result<Compiled>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((name, spec)) = specs.get(i) else {
                            return done;
                        };
                        done.push((i, compile_one(name, spec, runtime)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| match worker.join() {
                Ok(done) => done,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    outcomes.sort_by_key(|(i, _)| *i);
    outcomes.into_iter().map(|(_, outcome)| outcome).collect()
}

/// The most an instance of any of the manifest's components takes from the
/// instance pool, to size it before compiling; a file that cannot be read
/// or parsed counts as the defaults (compiling it then says what is wrong).
pub fn pool_needs(manifest: &Manifest) -> crate::runtime::Needs {
    manifest
        .components
        .iter()
        .filter_map(|(name, spec)| read_wasm(name, &spec.wasm).ok())
        .filter_map(|wasm| crate::shape::needs(&wasm).ok())
        .fold(crate::runtime::PER_INSTANCE, crate::runtime::Needs::max)
}

pub(crate) fn compile_one(
    name: &str,
    spec: &crate::manifest::ComponentSpec,
    runtime: &Runtime,
) -> anyhow::Result<Compiled> {
    let wasm = read_wasm(name, &spec.wasm)?;
    let limits = call_limits(spec);
    let sha256 = sha256_hex(&wasm);
    let component = runtime.load(name, &wasm, &sha256, limits.clone())?;
    Ok(Compiled {
        name: name.to_string(),
        sha256,
        component,
        limits,
    })
}

/// The limits the manifest entry `spec` gives every version.
pub(crate) fn call_limits(spec: &crate::manifest::ComponentSpec) -> CallLimits {
    CallLimits::new(spec.timeout, spec.max_memory_bytes, spec.max_concurrency)
        .with_reuse(spec.reuse)
        .with_subscriptions(!spec.subscribes.is_empty())
}

/// One loaded version of a component.
pub struct Version {
    pub component: Arc<Executor>,
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
    /// Which ABI the live version implements.
    pub kind: Kind,
    pub live: VersionInfo,
    /// The version a rollback would restore.
    pub previous: Option<VersionInfo>,
    /// This replica against the shared store's live version.
    pub following: Following,
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
    /// The shared store could not record the change; nothing changed.
    Store(String),
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
            SwapError::Store(e) => write!(
                f,
                "the version could not be recorded in the shared store, so nothing changed: {e}"
            ),
        }
    }
}

impl std::error::Error for SwapError {}

impl App {
    /// Compile every component of `manifest` and build the route table.
    /// `replica` names this process in a shared store's records.
    pub fn load(
        manifest: &Manifest,
        runtime: &Runtime,
        backend: &Backend,
        replica: &str,
    ) -> anyhow::Result<App> {
        let openapi = crate::openapi::document(manifest)?;
        let mut slots = HashMap::new();
        for compiled in compile_all(manifest, runtime)? {
            let source = manifest.components[&compiled.name].wasm.clone();
            slots.insert(compiled.name.clone(), Arc::new(Slot::new(compiled, source)));
        }
        Ok(App {
            table: ArcSwap::from_pointee(Table::new(manifest.clone(), slots, openapi)),
            store: backend.kv.clone(),
            outbox: backend.outbox.clone(),
            shared: backend.versions.clone().map(|versions| Shared {
                versions,
                replica: replica.to_string(),
            }),
            runtime: runtime.clone(),
            compiling: tokio::sync::Mutex::new(()),
        })
    }

    /// The current version of the component serving `path`, if any.
    pub fn component_for(&self, path: &str) -> Option<Arc<Executor>> {
        self.route(path).map(|(component, _)| component)
    }

    /// The current version of the component serving `path`, and the
    /// route prefix to take off the path first when the manifest says
    /// `strip_prefix`.
    pub fn route(&self, path: &str) -> Option<(Arc<Executor>, Option<String>)> {
        let table = self.table.load();
        let (prefix, name) = table.router.route_prefix(path)?;
        let entry = table.components.get(name)?;
        let strip = entry.strip_prefix.then(|| prefix.to_string());
        Some((entry.slot.live.load().component.clone(), strip))
    }

    /// The current version of component `name`.
    pub fn component(&self, name: &str) -> Option<Arc<Executor>> {
        self.table
            .load()
            .slot(name)
            .map(|slot| slot.live.load().component.clone())
    }

    /// The names of every component, in name order.
    pub fn component_names(&self) -> Vec<String> {
        self.table
            .load()
            .manifest
            .components
            .keys()
            .cloned()
            .collect()
    }

    /// What each component may reach, as the live manifest says.
    pub fn grants(&self) -> Arc<Grants> {
        self.table.load().grants.clone()
    }

    /// The body of `/openapi.json` for the live manifest.
    pub fn openapi(&self) -> bytes::Bytes {
        self.table.load().openapi.clone()
    }

    /// The manifest being served (the last one a reload applied).
    pub fn manifest(&self) -> Manifest {
        self.table.load().manifest.clone()
    }

    /// Every component with its live and previous version, by name.
    pub fn components(&self) -> Vec<ComponentInfo> {
        let table = self.table.load();
        let mut all: Vec<ComponentInfo> = table
            .components
            .iter()
            .map(|(name, Entry { slot, routes, .. })| {
                // Read both under the lock so the pair is consistent.
                let previous = slot.previous.lock().unwrap_or_else(|e| e.into_inner());
                let live = slot.live.load();
                ComponentInfo {
                    name: name.clone(),
                    routes: routes.clone(),
                    kind: live.component.kind(),
                    live: live.info(),
                    previous: previous.as_ref().map(|v| v.info()),
                    following: slot.following(),
                }
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The components loaded from files, with their paths: what `--watch` watches.
    pub fn files(&self) -> Vec<(String, std::path::PathBuf)> {
        let table = self.table.load();
        let mut files: Vec<_> = table
            .components
            .iter()
            .filter_map(|(name, Entry { slot, .. })| match &slot.source {
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
    /// already running finish on the version they started with. With a
    /// shared store, the version is recorded there (and so reaches every
    /// replica) before it goes live here; if it cannot be, nothing changes.
    pub async fn replace(&self, name: &str, wasm: Vec<u8>) -> Result<Replaced, SwapError> {
        self.slot(name)?;
        let sha256 = sha256_hex(&wasm);
        let _compiling = self.compiling.lock().await;
        // Looked up again under the lock: a reload may have replaced it.
        let held = self.slot(name)?;
        let slot = &*held;
        let live = slot.live.load_full();
        let next = if live.sha256 == sha256 {
            None
        } else {
            Some(self.compile(name, slot, &wasm, &sha256).await?)
        };
        if let Some(shared) = &self.shared {
            shared
                .versions
                .publish(Offer {
                    component: name,
                    sha256: &sha256,
                    wasm: &wasm,
                    replica: &shared.replica,
                })
                .await
                .map_err(|e| SwapError::Store(e.to_string()))?;
            slot.set_following(Following::Live);
        }
        let Some(next) = next else {
            return Ok(Replaced {
                version: live.info(),
                swapped: false,
            });
        };
        let info = next.info();
        slot.install(next);
        metrics()
            .swaps
            .get_or_create(&Metrics::component(name))
            .inc();
        Ok(Replaced {
            version: info,
            swapped: true,
        })
    }

    /// Swap back to the version the live one replaced. The version rolled
    /// back from becomes the previous one, so a second rollback undoes the
    /// first. With a shared store, the store's pointers swap, and this
    /// replica follows them as every other does.
    pub async fn rollback(&self, name: &str) -> Result<VersionInfo, SwapError> {
        self.slot(name)?;
        let _compiling = self.compiling.lock().await;
        let held = self.slot(name)?;
        let slot = &*held;
        let Some(shared) = &self.shared else {
            return slot.roll_back(name);
        };
        let live = shared
            .versions
            .rollback(name, &shared.replica)
            .await
            .map_err(|e| SwapError::Store(e.to_string()))?
            .ok_or_else(|| SwapError::NoPrevious(name.to_string()))?;
        self.converge(shared, slot, &live).await
    }

    /// Start-up with a shared store: offer each component's manifest
    /// version, then load what the store says is live where it differs.
    /// A component whose live version fails here keeps its manifest version
    /// and reports the rejection.
    pub async fn adopt_shared(&self) -> Result<(), StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        let _compiling = self.compiling.lock().await;
        let table = self.table.load_full();
        for (name, entry) in &table.components {
            self.adopt_one(shared, name, &entry.slot).await?;
        }
        Ok(())
    }

    /// Offer a slot's manifest version to the shared store and take what
    /// the store says is live. Call with `compiling` held.
    pub(crate) async fn adopt_one(
        &self,
        shared: &Shared,
        name: &str,
        slot: &Slot,
    ) -> Result<(), StoreError> {
        let wasm =
            read_wasm(name, &slot.source).map_err(|e| StoreError::Failed(format!("{e:#}")))?;
        let sha256 = slot.live.load().sha256.clone();
        let live = shared
            .versions
            .offer_manifest(Offer {
                component: name,
                sha256: &sha256,
                wasm: &wasm,
                replica: &shared.replica,
            })
            .await?;
        if let Err(e) = self.converge(shared, slot, &live).await {
            tracing::error!(component = %name, version = %live.sha256, "the shared store's live version was rejected here; serving the manifest's version: {e}");
        }
        Ok(())
    }

    /// Bring every component to the live version the shared store names,
    /// compiling what changed; returns how many components were swapped.
    pub async fn follow_shared(&self) -> Result<usize, StoreError> {
        let Some(shared) = &self.shared else {
            return Ok(0);
        };
        let mut swapped = 0;
        for live in shared.versions.live().await? {
            let Some(slot) = self.table.load().slot(&live.component).cloned() else {
                continue;
            };
            let behind = |slot: &Slot| {
                slot.live.load().sha256 != live.sha256
                    && !matches!(slot.following(), Following::Rejected { sha256, .. } if sha256 == live.sha256)
            };
            if !behind(&slot) {
                continue;
            }
            let _compiling = self.compiling.lock().await;
            // An upload through this replica may have caught up meanwhile,
            // or a reload replaced (or removed) the slot.
            let Some(slot) = self.table.load().slot(&live.component).cloned() else {
                continue;
            };
            if !behind(&slot) {
                continue;
            }
            match self.converge(shared, &slot, &live).await {
                Ok(_) => {
                    swapped += 1;
                    tracing::info!(component = %live.component, version = %live.sha256, by = %live.changed_by, "swapped in the shared store's live version");
                }
                Err(e) => {
                    tracing::error!(component = %live.component, version = %live.sha256, "rejected the shared store's live version; the old version keeps serving: {e}");
                }
            }
        }
        Ok(swapped)
    }

    /// Resolves when the shared store may have changed its live versions
    /// (never, without a shared store).
    pub async fn versions_changed(&self) {
        match &self.shared {
            Some(shared) => shared.versions.changed().await,
            None => std::future::pending().await,
        }
    }

    /// Whether a store shared with other replicas holds the versions.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Every component's live version in the shared store, if shared.
    pub async fn shared_live(&self) -> Option<Result<Vec<LiveVersion>, StoreError>> {
        let shared = self.shared.as_ref()?;
        Some(shared.versions.live().await)
    }

    /// Make `live` this replica's live version of the slot: at once if it
    /// is the live or previous version here, else fetched and compiled.
    /// Call with `compiling` held.
    async fn converge(
        &self,
        shared: &Shared,
        slot: &Slot,
        live: &LiveVersion,
    ) -> Result<VersionInfo, SwapError> {
        let name = live.component.as_str();
        let current = slot.live.load_full();
        if current.sha256 == live.sha256 {
            slot.set_following(Following::Live);
            return Ok(current.info());
        }
        if slot.previous_is(&live.sha256) {
            slot.set_following(Following::Live);
            return slot.roll_back(name);
        }
        slot.set_following(Following::Compiling(live.sha256.clone()));
        let outcome = async {
            let wasm = shared
                .versions
                .wasm(name, &live.sha256)
                .await
                .map_err(|e| SwapError::Store(e.to_string()))?
                .ok_or_else(|| {
                    SwapError::Rejected(format!(
                        "the shared store has no wasm for version {} of `{name}`",
                        live.sha256
                    ))
                })?;
            self.compile(name, slot, &wasm, &live.sha256).await
        }
        .await;
        match outcome {
            Ok(next) => {
                let info = next.info();
                slot.install(next);
                slot.set_following(Following::Live);
                metrics()
                    .swaps
                    .get_or_create(&Metrics::component(name))
                    .inc();
                Ok(info)
            }
            Err(e) => {
                // A store that could not be read is tried again on the next
                // look; a version that does not compile is not.
                slot.set_following(match &e {
                    SwapError::Store(_) => Following::Live,
                    _ => Following::Rejected {
                        sha256: live.sha256.clone(),
                        reason: e.to_string(),
                    },
                });
                Err(e)
            }
        }
    }

    /// Compile `wasm` as a version of the slot's component, on a blocking
    /// thread, without making it live.
    async fn compile(
        &self,
        name: &str,
        slot: &Slot,
        wasm: &[u8],
        sha256: &str,
    ) -> Result<Arc<Version>, SwapError> {
        let runtime = self.runtime.clone();
        let limits = slot.limits.clone();
        let owned_name = name.to_string();
        let labels = Metrics::component(name);
        let hash = sha256.to_string();
        let wasm = wasm.to_vec();
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
        Ok(Arc::new(Version::new(loaded, sha256.to_string())))
    }

    fn slot(&self, name: &str) -> Result<Arc<Slot>, SwapError> {
        self.table
            .load()
            .slot(name)
            .cloned()
            .ok_or_else(|| SwapError::UnknownComponent(name.to_string()))
    }
}

impl Slot {
    /// A slot whose live version is `compiled`, loaded from `source`.
    pub(crate) fn new(compiled: Compiled, source: WasmSource) -> Slot {
        Slot {
            live: ArcSwap::from_pointee(Version::new(compiled.component, compiled.sha256)),
            previous: Mutex::new(None),
            limits: compiled.limits,
            source,
            following: Mutex::new(Following::Live),
        }
    }

    /// Swap the live version with the previous one.
    fn roll_back(&self, name: &str) -> Result<VersionInfo, SwapError> {
        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        let Some(target) = previous.take() else {
            return Err(SwapError::NoPrevious(name.to_string()));
        };
        let info = target.info();
        target.component.revive();
        let replaced = self.live.swap(target);
        replaced.component.retire();
        *previous = Some(replaced);
        metrics()
            .swaps
            .get_or_create(&Metrics::component(name))
            .inc();
        Ok(info)
    }

    fn previous_is(&self, sha256: &str) -> bool {
        self.previous
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|v| v.sha256 == sha256)
    }

    pub(crate) fn following(&self) -> Following {
        self.following
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_following(&self, following: Following) {
        *self.following.lock().unwrap_or_else(|e| e.into_inner()) = following;
    }

    /// Make `next` live and keep the replaced version for rollback.
    fn install(&self, next: Arc<Version>) -> Arc<Version> {
        let mut previous = self.previous.lock().unwrap_or_else(|e| e.into_inner());
        next.component.revive();
        let replaced = self.live.swap(next);
        // Kept for rollback, but its reused instances must not hold pool
        // slots meanwhile.
        replaced.component.retire();
        *previous = Some(replaced.clone());
        replaced
    }
}

impl Version {
    fn new(component: Executor, sha256: String) -> Version {
        Version {
            component: Arc::new(component),
            sha256,
            loaded_at: SystemTime::now(),
        }
    }

    /// The same version, linked again under other limits (a reload that
    /// changed them): the compiled code is shared, nothing compiles.
    pub(crate) fn relinked(
        &self,
        runtime: &Runtime,
        limits: CallLimits,
    ) -> anyhow::Result<Version> {
        let name = self.component.name().clone();
        let component = runtime.link(&name, self.component.compiled(), limits)?;
        Ok(Version {
            component: Arc::new(component),
            sha256: self.sha256.clone(),
            loaded_at: self.loaded_at,
        })
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

pub(crate) fn read_wasm(name: &str, source: &WasmSource) -> anyhow::Result<Vec<u8>> {
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
