//! The wasmtime side: one [`Engine`] with the pooling allocator and epoch
//! interruption, components compiled and pre-instantiated once at load, and
//! a fresh [`Store`] and instance for every call so no request can see
//! another's memory, unless the component opted into reuse (`reuse.rs`).
//! Nothing compiles on the request path.

use crate::bindings::exports::berth::service::{handler, subscriber};
use crate::bindings::{Event, Request, Response, Service};
use crate::compile_cache::CompileCache;
use crate::executor::Executor;
use crate::invocation::Invocation;
use crate::metrics::{Metrics, metrics};
use crate::reuse::{Pool, Pools, Reuse, Warm};
pub use crate::shape::Needs;
use crate::store::WriteBatch;
use crate::wasi_http::HttpInvocation;
use anyhow::{Context as _, anyhow};
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use wasmtime::component::{Instance, InstancePre, Linker};

pub use wasmtime::component::Component;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError, PoolingAllocationConfig,
    Store, Trap, UpdateDeadline,
};

pub use crate::invocation::CallEnv;

/// How much of each pooled linear memory stays mapped between instances
/// unless `--keep-resident-mb` says otherwise.
pub const DEFAULT_KEEP_RESIDENT: usize = 1024 * 1024;

/// How often the epoch advances; deadlines are whole multiples of it.
pub const EPOCH_TICK: Duration = Duration::from_millis(2);

/// How long a guest runs before an epoch tick sends it behind the other
/// tasks on its thread. A tick lands on whichever guest is running at that
/// moment; yielding every time sent a request that was a few microseconds
/// from its answer to the back of a queue of fifteen, and that was the p99
/// of small requests (the server's own p99 for `GET /users` was 15 times
/// its median). A guest that has run for this long is a busy one, and it
/// still shares its thread at every tick after that.
pub(crate) const TURN: Duration = Duration::from_millis(1);

/// What an epoch tick does to a guest whose call ends at `deadline` and
/// whose turn on its thread began at `turn_began`: stop it past the
/// deadline; let it run on within its turn; otherwise yield through tokio's
/// `yield_now`, which puts the task behind the others and lets the I/O
/// driver run first (a plain wake would run the guest again at once and
/// starve every other connection), and start its next turn.
pub(crate) fn on_tick(now: Instant, deadline: Instant, turn_began: &mut Instant) -> UpdateDeadline {
    if now >= deadline {
        return UpdateDeadline::Interrupt;
    }
    if now.saturating_duration_since(*turn_began) < TURN {
        return UpdateDeadline::Continue(1);
    }
    *turn_began = now;
    UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))
}

/// Engine-wide settings, fixed for the life of the process.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Component instances that may exist at once (see [`pool_instances`]);
    /// a call beyond this gets 503.
    pub max_instances: u32,
    /// The largest linear memory any component may be given.
    pub max_memory_bytes: usize,
    /// How much of each pooled linear memory stays mapped, and is reset in
    /// place, between the instances that use it (see `Runtime::new`).
    pub keep_resident_bytes: usize,
    /// The most any one component's instance takes from the pool; the pool
    /// holds `max_instances` of them, and a component needing more is
    /// refused when it is compiled.
    pub per_instance: Needs,
    /// Where to cache compiled components between runs; `None` compiles
    /// every time.
    pub cache_dir: Option<std::path::PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_instances: 256,
            max_memory_bytes: 64 * 1024 * 1024,
            keep_resident_bytes: DEFAULT_KEEP_RESIDENT,
            per_instance: PER_INSTANCE,
            cache_dir: None,
        }
    }
}

/// What the pool keeps per component instance unless the components need
/// more: a Rust guest has a handful of core instances (the guest plus small
/// shims), one memory and a few tables; an interpreter built as a component
/// (componentize-py's Python, say) links many more modules.
pub const PER_INSTANCE: Needs = Needs {
    core_instances: 20,
    memories: 4,
    tables: 10,
};
/// Most of each a single component instance may take, whatever its wasm
/// asks: a component beyond these is refused when it is compiled.
const MAX_PER_INSTANCE: Needs = Needs {
    core_instances: 1000,
    memories: 64,
    tables: 1000,
};
/// Most component instances the pool is sized for, whatever the flags ask:
/// each has a fiber stack, and each stack two memory mappings (the stack
/// and its guard), which must stay well inside the kernel's default limit
/// of 65,530 mappings per process.
const MAX_POOL_INSTANCES: u32 = 8 * 1024;
/// Most linear memories in the pool. Each slot reserves about 4 GiB of
/// address space (so that bounds checks can be elided) plus a guard, so this
/// reserves about 32 TiB of the 128 TiB a 64-bit Linux process may map;
/// reserved address space costs no memory until a slot is used.
const MAX_POOL_MEMORIES: u32 = 8 * 1024;

/// The component instances the pool needs for `max_in_flight` requests
/// whose call chains go `max_call_depth` deep, plus the event worker's one
/// delivery at a time with its own chain: each call on a chain holds an
/// instance while the calls below it run. Capped at [`MAX_POOL_INSTANCES`];
/// past the pool, calls get 503, never a trap.
pub fn pool_instances(max_in_flight: usize, max_call_depth: u32) -> u32 {
    let chains = u64::try_from(max_in_flight)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let per_chain = u64::from(max_call_depth) + 1;
    let total = chains.saturating_mul(per_chain);
    u32::try_from(total)
        .unwrap_or(u32::MAX)
        .clamp(1, MAX_POOL_INSTANCES)
}

/// Per-component limits applied to each call. Clones share one
/// concurrency budget, so every version of a component draws on the same one.
#[derive(Debug, Clone)]
pub struct CallLimits {
    /// Wall-clock budget for the guest's own execution.
    pub timeout: Duration,
    /// Linear memory cap per instance.
    pub max_memory_bytes: usize,
    /// Calls running at once, across HTTP requests and calls from other
    /// components; one more is refused at once rather than queued.
    pub concurrency: Arc<Semaphore>,
    /// Keep instances for later calls (`None`: a fresh one per call).
    pub reuse: Option<Reuse>,
    /// The manifest lets it subscribe to topics, so every version must
    /// export an event handler.
    pub subscribes: bool,
}

impl CallLimits {
    pub fn new(timeout: Duration, max_memory_bytes: usize, max_concurrency: usize) -> CallLimits {
        CallLimits {
            timeout,
            max_memory_bytes,
            concurrency: Arc::new(Semaphore::new(max_concurrency)),
            reuse: None,
            subscribes: false,
        }
    }

    /// The same limits, with instances reused as `reuse` says.
    pub fn with_reuse(mut self, reuse: Option<Reuse>) -> CallLimits {
        self.reuse = reuse;
        self
    }

    /// The same limits, for a component that the manifest lets subscribe
    /// to events when `subscribes` is set.
    pub fn with_subscriptions(mut self, subscribes: bool) -> CallLimits {
        self.subscribes = subscribes;
        self
    }
}

/// The compiler and instance pool shared by every component.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<Invocation>>,
    /// The imports of `wasi:http` components: WASI and wasi:http, over
    /// store data of their own (no `kv` transaction; the HTTP context).
    http_linker: Arc<Linker<HttpInvocation>>,
    cache: Option<Arc<CompileCache>>,
    /// Every component's idle instances, evicted when the instance pool is
    /// full.
    pools: Arc<Pools>,
    /// The largest linear memory the pool's slots hold, and what each
    /// instance may take from it: fixed when the pool is made, so a
    /// manifest reload that needs more needs a restart.
    max_memory_bytes: usize,
    per_instance: Needs,
    /// Stops the epoch thread when the last clone is dropped.
    _ticker: Arc<EpochTicker>,
}

impl Runtime {
    pub fn new(config: &EngineConfig) -> anyhow::Result<Runtime> {
        let mut pool = PoolingAllocationConfig::new();
        let n = config.max_instances.clamp(1, MAX_POOL_INSTANCES);
        // Each instance may take what the largest component needs, and no
        // more, so the pool holds `n` of any component: past that, a call
        // finds it full (503), never a component that cannot fit (500).
        let each = config.per_instance.max(PER_INSTANCE);
        let each = Needs {
            core_instances: each.core_instances.min(MAX_PER_INSTANCE.core_instances),
            memories: each.memories.min(MAX_PER_INSTANCE.memories),
            tables: each.tables.min(MAX_PER_INSTANCE.tables),
        };
        pool.total_component_instances(n)
            .max_core_instances_per_component(each.core_instances)
            .max_memories_per_component(each.memories)
            .max_tables_per_component(each.tables)
            .total_core_instances(n.saturating_mul(each.core_instances))
            .total_memories(n.saturating_mul(each.memories).min(MAX_POOL_MEMORIES))
            .total_tables(n.saturating_mul(each.tables))
            // Every call runs on a fiber stack of its own, held while the
            // calls it makes run.
            .total_stacks(n)
            .max_memory_size(config.max_memory_bytes)
            // Keep the first pages of each slot mapped and reset them in
            // place; pagemap scanning finds the dirty ones so a reused slot
            // costs only what the last request touched. The default, 1 MiB,
            // covers what the Rust guests here dirty per request (16 MiB
            // measured no faster) and bounds what idle slots hold, however
            // much a hostile guest grew; an interpreter whose heap starts at
            // 12 MiB wants that much (`--keep-resident-mb`).
            .linear_memory_keep_resident(config.keep_resident_bytes)
            .table_keep_resident(64 * 1024)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut cfg = Config::new();
        cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .epoch_interruption(true)
            // Berth runs no component-model-async guests; without the
            // machinery for them each new Store is cheaper to set up.
            .concurrency_support(false);
        let engine = Engine::new(&cfg)
            .map_err(|e| anyhow!("{e:?}"))
            .context("creating the wasm engine")?;
        let mut linker = Linker::new(&engine);
        // Rust's std for wasm32-wasip2 imports WASI even if it never uses it;
        // the context each call gets grants nothing beyond clocks and random.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow!("{e:?}"))?;
        Service::add_to_linker::<_, wasmtime::component::HasSelf<Invocation>>(&mut linker, |s| s)
            .map_err(|e| anyhow!("{e:?}"))?;
        let mut http_linker = Linker::new(&engine);
        crate::wasi_http::add_to_linker(&mut http_linker)?;
        let ticker = EpochTicker::start(engine.clone())?;
        let cache = config
            .cache_dir
            .as_deref()
            .map(|dir| Arc::new(CompileCache::new(dir, &engine)));
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            http_linker: Arc::new(http_linker),
            cache,
            pools: Pools::start()?,
            max_memory_bytes: config.max_memory_bytes,
            per_instance: each,
            _ticker: Arc::new(ticker),
        })
    }

    /// The largest `max_memory_mb` the instance pool was sized for.
    pub fn max_memory_bytes(&self) -> usize {
        self.max_memory_bytes
    }

    /// What the instance pool gives each instance.
    pub fn per_instance(&self) -> Needs {
        self.per_instance
    }

    /// Check what `wasm` imports and exports, compile it and link it as the
    /// kind it is. What Berth cannot run is refused by name before the slow
    /// compile, and only a component that links goes into the compile
    /// cache.
    pub fn load(
        &self,
        name: &str,
        wasm: &[u8],
        sha256: &str,
        limits: CallLimits,
    ) -> anyhow::Result<Executor> {
        crate::shape::check(name, wasm)?;
        let cached = self
            .cache
            .as_ref()
            .and_then(|cache| cache.load(&self.engine, sha256));
        let fresh = cached.is_none();
        let component = match cached {
            Some(component) => component,
            None => self.compile_uncached(name, wasm)?,
        };
        let loaded = self.link(name, &component, limits)?;
        if let (true, Some(cache)) = (fresh, &self.cache) {
            cache.store(sha256, &component);
        }
        Ok(loaded)
    }

    /// Compile `wasm`, whose hex SHA-256 is `sha256`, to machine code, or
    /// load it from the compile cache; the slow step, done off the request
    /// path.
    pub fn compile(&self, name: &str, wasm: &[u8], sha256: &str) -> anyhow::Result<Component> {
        let Some(cache) = &self.cache else {
            return self.compile_uncached(name, wasm);
        };
        if let Some(component) = cache.load(&self.engine, sha256) {
            return Ok(component);
        }
        let component = self.compile_uncached(name, wasm)?;
        cache.store(sha256, &component);
        Ok(component)
    }

    fn compile_uncached(&self, name: &str, wasm: &[u8]) -> anyhow::Result<Component> {
        Component::new(&self.engine, wasm)
            .map_err(|e| anyhow!("{e:?}"))
            .with_context(|| format!("component `{name}` is not a valid WebAssembly component"))
    }

    /// Forget cached compilations this process has not used.
    pub fn prune_cache(&self) {
        if let Some(cache) = &self.cache {
            cache.prune();
        }
    }

    /// Link a compiled component as the kind its exports say it is: a
    /// `wasi:http` component if it exports `wasi:http/incoming-handler`,
    /// else a `berth:service` one.
    pub fn link(
        &self,
        name: &str,
        component: &Component,
        limits: CallLimits,
    ) -> anyhow::Result<Executor> {
        check_memory(name, component, &limits)?;
        let wasi_http = component
            .component_type()
            .exports(&self.engine)
            .any(|(export, _)| export.starts_with("wasi:http/incoming-handler@0.2."));
        if wasi_http {
            if limits.reuse.is_some() {
                anyhow::bail!(
                    "component `{name}` is a wasi:http component, and `reuse` applies only to berth:service components so far: remove `reuse` from its manifest entry"
                );
            }
            if limits.subscribes {
                anyhow::bail!(
                    "component `{name}` is a wasi:http component, which cannot receive events, yet its manifest entry has `subscribes`: remove `subscribes`, or build it as a berth:service component of the `subscribing-service` world"
                );
            }
            let linked = crate::wasi_http::link(
                &self.engine,
                &self.http_linker,
                name,
                component,
                limits,
                instantiate_seconds(name),
            )?;
            metrics().component_loaded(name);
            return Ok(Executor::Http(linked));
        }
        let subscribes = limits.subscribes;
        let linked = self.link_service(name, component, limits)?;
        if subscribes && !linked.subscribes() {
            anyhow::bail!(
                "component `{name}` has `subscribes` in its manifest entry but does not export `berth:service/subscriber`: build it against the `subscribing-service` world with an event handler, or remove `subscribes`"
            );
        }
        metrics().component_loaded(name);
        Ok(Executor::Service(linked))
    }

    /// Link a compiled component against the host's imports and check that
    /// it exports the handler, ready to instantiate per request.
    fn link_service(
        &self,
        name: &str,
        component: &Component,
        limits: CallLimits,
    ) -> anyhow::Result<LoadedComponent> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| anyhow!("{e:#}"))
            .with_context(|| format!("component `{name}` needs imports Berth does not provide"))?;
        let handler = handler::GuestIndices::new(&pre)
            .map_err(|e| anyhow!("{e:#}"))
            .with_context(|| {
                format!("component `{name}` does not export `berth:service/handler` as the `service` world defines it")
            })?;
        let subscriber = subscriber::GuestIndices::new(&pre).ok();
        let reuse = limits.reuse.map(|config| {
            let pool = Arc::new(Pool::new(name, config));
            self.pools.register(&pool);
            pool
        });
        Ok(LoadedComponent {
            name: name.into(),
            instantiate_seconds: instantiate_seconds(name),
            engine: self.engine.clone(),
            pre,
            handler,
            subscriber,
            limits,
            reuse,
            pools: self.pools.clone(),
        })
    }
}

/// The component's series of the instantiation histogram, looked up once
/// at link rather than on every call.
pub(crate) fn instantiate_seconds(name: &str) -> Histogram {
    metrics()
        .instantiate_seconds
        .get_or_create(&Metrics::component(name))
        .clone()
}

/// Refuse a component whose linear memory starts larger than its
/// `max_memory_mb`: it could never be instantiated, and every request to it
/// would fail with a 500. (An interpreter's heap starts at 12 MiB or more.)
fn check_memory(name: &str, component: &Component, limits: &CallLimits) -> anyhow::Result<()> {
    const PAGE: u64 = 64 * 1024;
    const MIB: u64 = 1024 * 1024;
    let initial = component
        .resources_required()
        .and_then(|needs| needs.max_initial_memory_size)
        .map_or(0, |pages| pages.saturating_mul(PAGE));
    let cap = u64::try_from(limits.max_memory_bytes).unwrap_or(u64::MAX);
    if initial > cap {
        anyhow::bail!(
            "component `{name}` starts with {:.1} MiB of linear memory, more than its max_memory_mb of {}: set max_memory_mb to at least {} in its manifest entry",
            initial as f64 / MIB as f64,
            cap / MIB,
            initial.div_ceil(MIB)
        );
    }
    Ok(())
}

/// A compiled, linked component ready to instantiate.
pub struct LoadedComponent {
    name: Arc<str>,
    engine: Engine,
    pre: InstancePre<Invocation>,
    handler: handler::GuestIndices,
    /// Present when the component exports `berth:service/subscriber`.
    subscriber: Option<subscriber::GuestIndices>,
    limits: CallLimits,
    /// This component's series of the instantiation histogram, looked up
    /// once rather than on every call.
    instantiate_seconds: Histogram,
    /// This version's idle instances, when the component reuses them.
    reuse: Option<Arc<Pool>>,
    /// Every component's idle instances, given up when the pool is full.
    pools: Arc<Pools>,
}

/// Why a call produced no response.
#[derive(Debug)]
pub enum CallError {
    /// The guest ran past its deadline and was stopped.
    Timeout(Duration),
    /// The guest trapped (a panic, an out-of-bounds access, a failed grow...),
    /// or could not be instantiated.
    Trap(TrapInfo),
    /// The instance pool had no free slot: the host is at capacity, and the
    /// call may succeed if tried again (503 with Retry-After, not a trap).
    PoolFull(String),
    /// The call's writes could not be committed (a `wasi:http` call, whose
    /// executor commits them itself; 503).
    Store(String),
}

/// What is known about a trap.
#[derive(Debug, Clone)]
pub struct TrapInfo {
    /// One line, safe to show a client, such as "wasm trap: wasm `unreachable` instruction executed".
    pub reason: String,
    /// The guest's stderr (a Rust panic message lands here) and the wasm backtrace.
    pub details: String,
}

impl std::fmt::Display for TrapInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n{}", self.reason, self.details)
    }
}

impl LoadedComponent {
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn limits(&self) -> &CallLimits {
        &self.limits
    }

    /// The compiled code this was linked from.
    pub fn compiled(&self) -> &Component {
        self.pre.component()
    }

    /// Whether the component exports an event handler.
    pub fn subscribes(&self) -> bool {
        self.subscriber.is_some()
    }

    /// Whether this version keeps instances for later calls.
    pub fn reuses(&self) -> bool {
        self.reuse.is_some()
    }

    /// This version is no longer live: drop its idle instances now, and
    /// its busy ones when their calls end. (It may be kept for rollback,
    /// and must not hold pool slots meanwhile.)
    pub fn retire(&self) {
        if let Some(pool) = &self.reuse {
            pool.retire();
        }
    }

    /// This version is live again (a rollback): reuse its instances again.
    pub fn revive(&self) {
        if let Some(pool) = &self.reuse {
            pool.revive();
        }
    }

    /// Run the handler in a fresh instance, or an idle one when the
    /// component reuses them. On success, returns the response and the
    /// writes to commit before sending it.
    pub async fn call(
        &self,
        env: CallEnv,
        request: &Request,
    ) -> Result<(Response, WriteBatch), CallError> {
        let Ready {
            mut store,
            instance,
            uses,
        } = self.ready(env).await;
        let outcome = async {
            let instance = instance?;
            let handler = self.handler.load(&mut store, &instance)?;
            let response = handler.call_handle(&mut store, request).await?;
            Ok((response, instance))
        }
        .await;
        self.finish(outcome, store, uses)
    }

    /// Run the event handler in a fresh instance. `Ok(Err(reason))` means
    /// the component refused the event and wants it again later.
    pub async fn on_event(
        &self,
        env: CallEnv,
        event: &Event,
    ) -> Result<(Result<(), String>, WriteBatch), CallError> {
        let Some(subscriber) = &self.subscriber else {
            let refusal = format!("component `{}` does not export an event handler", self.name);
            return Ok((Err(refusal), WriteBatch::default()));
        };
        let Ready {
            mut store,
            instance,
            uses,
        } = self.ready(env).await;
        let outcome = async {
            let instance = instance?;
            let subscriber = subscriber.load(&mut store, &instance)?;
            let outcome = subscriber.call_on_event(&mut store, event).await?;
            Ok((outcome, instance))
        }
        .await;
        self.finish(outcome, store, uses)
    }

    /// A store and instance for one call: an idle one when the component
    /// reuses instances and one is waiting, else a fresh one. A fresh one
    /// that finds the instance pool full gets one more try after every
    /// idle instance is dropped, so kept instances never turn a call away.
    async fn ready(&self, env: CallEnv) -> Ready {
        // The deadline is this component's own, or the caller's if sooner.
        let deadline = env.deadline.min(Instant::now() + self.limits.timeout);
        if let Some(warm) = self.reuse.as_ref().and_then(|pool| pool.take()) {
            let Warm {
                mut store,
                instance,
                uses,
                ..
            } = warm;
            store.data_mut().renew(env, deadline);
            store.set_epoch_deadline(1);
            return Ready {
                store,
                instance: Ok(instance),
                uses,
            };
        }
        let mut store = self.new_store(env, deadline);
        let mut instance = self.instantiate(&mut store).await;
        if matches!(&instance, Err(e) if e.is::<PoolConcurrencyLimitError>())
            && self.pools.evict_idle() > 0
        {
            // The failed attempt may have left part of an instance in the
            // store; start over with a new one.
            let env = store.into_data().env;
            store = self.new_store(env, deadline);
            instance = self.instantiate(&mut store).await;
        }
        Ready {
            store,
            instance,
            uses: 0,
        }
    }

    async fn instantiate(&self, store: &mut Store<Invocation>) -> wasmtime::Result<Instance> {
        let started = Instant::now();
        let instance = self.pre.instantiate_async(store).await?;
        self.instantiate_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(instance)
    }

    fn new_store(&self, env: CallEnv, deadline: Instant) -> Store<Invocation> {
        let invocation = Invocation::new(
            self.name.clone(),
            env,
            deadline,
            self.limits.max_memory_bytes,
        );
        let mut store = Store::new(&self.engine, invocation);
        store.limiter(|s| &mut s.limits);
        // At every epoch tick a busy guest yields, so it shares its thread
        // with other requests; past the deadline it is interrupted (see
        // `on_tick`). The deadline and the turn are read from the store
        // data, which a reused instance renews for each call.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut store| {
            let data = store.data_mut();
            Ok(on_tick(Instant::now(), data.deadline, &mut data.turn_began))
        });
        store
    }

    /// Turn a call's outcome into its result, and keep the instance for
    /// reuse if it answered cleanly (a trapped or timed-out one never is).
    fn finish<R>(
        &self,
        outcome: wasmtime::Result<(R, Instance)>,
        mut store: Store<Invocation>,
        uses: u32,
    ) -> Result<(R, WriteBatch), CallError> {
        let printed = store.data().printed();
        let trapped =
            matches!(&outcome, Err(e) if e.downcast_ref::<Trap>() != Some(&Trap::Interrupt));
        // A trap's output goes into its details, logged with the request;
        // only output of a call that did not trap gets a line of its own.
        if !printed.is_empty() && !trapped {
            let request_id = &*store.data().env.request_id;
            tracing::warn!(target: "component", component = &*self.name, request_id, "stderr: {printed}");
        }
        match outcome {
            Ok((value, instance)) => {
                let batch = store.data_mut().take_batch();
                if let Some(pool) = &self.reuse {
                    pool.give_back(Warm::new(store, instance, uses + 1));
                }
                Ok((value, batch))
            }
            Err(e) => Err(CallError::from_guest(
                &self.name,
                e,
                &printed,
                self.limits.timeout,
            )),
        }
    }
}

impl CallError {
    /// What a guest's run that failed with `e` means to its caller, counted
    /// in the component's metrics: past its deadline (`timeout`), no free
    /// instance in the pool, or a trap whose details hold the guest's
    /// stderr (`printed`) and the wasm backtrace.
    pub(crate) fn from_guest(
        name: &str,
        e: wasmtime::Error,
        printed: &str,
        timeout: Duration,
    ) -> CallError {
        let labels = Metrics::component(name);
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            metrics().timeouts.get_or_create(&labels).inc();
            return CallError::Timeout(timeout);
        }
        if e.is::<PoolConcurrencyLimitError>() {
            metrics().pool_full.get_or_create(&labels).inc();
            return CallError::PoolFull(format!(
                "the host has no free instance to run component `{name}` ({e})"
            ));
        }
        metrics().traps.get_or_create(&labels).inc();
        CallError::Trap(TrapInfo {
            reason: match e.downcast_ref::<Trap>() {
                Some(trap) => trap.to_string(),
                None => e.to_string().lines().next().unwrap_or("").to_string(),
            },
            details: if printed.is_empty() {
                format!("{e:?}")
            } else {
                format!("{printed}\n{e:?}")
            },
        })
    }
}

/// What [`LoadedComponent::ready`] hands a call.
struct Ready {
    store: Store<Invocation>,
    /// The instance, or why there is none (a trap, a full pool).
    instance: wasmtime::Result<Instance>,
    /// Calls the instance served before this one.
    uses: u32,
}

/// A thread that advances the engine's epoch every [`EPOCH_TICK`].
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> anyhow::Result<EpochTicker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("berth-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .context("starting the epoch thread")?;
        Ok(EpochTicker { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tick stops a call past its deadline, lets a guest within its turn
    /// run on, and sends one past its turn behind the others, starting its
    /// next turn then.
    #[test]
    fn a_tick_yields_only_a_guest_that_has_had_its_turn() {
        let began = Instant::now();
        let deadline = began + Duration::from_secs(1);
        let mut turn = began;
        let early = began + TURN / 2;
        assert!(matches!(
            on_tick(early, deadline, &mut turn),
            UpdateDeadline::Continue(1)
        ));
        assert_eq!(turn, began, "a turn goes on until it is used up");
        let late = began + TURN;
        assert!(matches!(
            on_tick(late, deadline, &mut turn),
            UpdateDeadline::YieldCustom(1, _)
        ));
        assert_eq!(turn, late, "the next turn begins at the yield");
        assert!(matches!(
            on_tick(late + TURN / 2, deadline, &mut turn),
            UpdateDeadline::Continue(1)
        ));
        // Past the deadline, whatever the turn.
        assert!(matches!(
            on_tick(deadline, deadline, &mut turn),
            UpdateDeadline::Interrupt
        ));
        let mut fresh = deadline;
        assert!(matches!(
            on_tick(deadline + TURN / 2, deadline, &mut fresh),
            UpdateDeadline::Interrupt
        ));
    }
}
