//! Opt-in instance reuse for `berth:service` components (`reuse = N` in the
//! manifest): an instance that answered cleanly waits, idle, for the next
//! call of the same version, and serves at most N calls. Idle instances
//! hold instance-pool slots and memory, so they are bounded in number and
//! age, retired with their version, and given up whenever a fresh
//! instantiation finds the pool full.

use crate::invocation::Invocation;
use crate::metrics::{Metrics, metrics};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use wasmtime::Store;
use wasmtime::component::Instance;

/// How often idle instances are checked against their idle limit: expiry
/// is late by at most this much.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// A component's reuse settings, from its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reuse {
    /// Calls one instance serves before it is dropped.
    pub max_uses: u32,
    /// An instance idle for longer than this is dropped.
    pub idle: Duration,
    /// Most instances kept idle at once: the component's `max_concurrency`,
    /// since no more can have been busy at once.
    pub max_idle: usize,
}

/// An instance between calls: its store (whose data is renewed for each
/// call) and how many calls it has served.
pub(crate) struct Warm {
    pub store: Store<Invocation>,
    pub instance: Instance,
    pub uses: u32,
    idle_since: Instant,
}

impl Warm {
    pub fn new(store: Store<Invocation>, instance: Instance, uses: u32) -> Warm {
        Warm {
            store,
            instance,
            uses,
            idle_since: Instant::now(),
        }
    }
}

/// The idle instances of one version of one component.
pub(crate) struct Pool {
    config: Reuse,
    state: Mutex<State>,
    hits: Counter,
    misses: Counter,
    /// Idle instances of the component, every version's together.
    idle_gauge: Gauge,
}

struct State {
    /// Oldest first; calls take the newest, whose memory is warmest.
    idle: Vec<Warm>,
    /// Set when another version went live: instances coming back are
    /// dropped, and none wait.
    retired: bool,
}

impl Pool {
    pub fn new(component: &str, config: Reuse) -> Pool {
        let labels = Metrics::component(component);
        let m = metrics();
        Pool {
            config,
            state: Mutex::new(State {
                idle: Vec::new(),
                retired: false,
            }),
            hits: m.reuse_hits.get_or_create(&labels).clone(),
            misses: m.reuse_misses.get_or_create(&labels).clone(),
            idle_gauge: m.reuse_idle.get_or_create(&labels).clone(),
        }
    }

    /// The newest idle instance, if one is there (a hit) or `None` (a miss:
    /// the caller instantiates).
    pub fn take(&self) -> Option<Warm> {
        let taken = self.lock().idle.pop();
        match taken {
            Some(warm) => {
                self.idle_gauge.dec();
                self.hits.inc();
                Some(warm)
            }
            None => {
                self.misses.inc();
                None
            }
        }
    }

    /// Keep an instance that answered cleanly for a later call, unless it
    /// has served its share, its version is retired or enough wait already.
    /// Whatever is not kept is dropped here, outside the lock.
    pub fn give_back(&self, warm: Warm) {
        if warm.uses >= self.config.max_uses {
            return;
        }
        let mut state = self.lock();
        if state.retired || state.idle.len() >= self.config.max_idle {
            return;
        }
        state.idle.push(warm);
        self.idle_gauge.inc();
    }

    /// Another version went live: drop every idle instance now, and the
    /// busy ones as they come back.
    pub fn retire(&self) {
        let dropped = {
            let mut state = self.lock();
            state.retired = true;
            std::mem::take(&mut state.idle)
        };
        self.idle_gauge.dec_by(gauge_count(dropped.len()));
    }

    /// This version is live again (a rollback): keep instances again.
    pub fn revive(&self) {
        self.lock().retired = false;
    }

    /// Drop every idle instance, to free pool slots; returns how many.
    fn evict(&self) -> usize {
        let dropped = std::mem::take(&mut self.lock().idle);
        self.idle_gauge.dec_by(gauge_count(dropped.len()));
        dropped.len()
    }

    /// Drop the instances idle for longer than the limit.
    fn sweep(&self, now: Instant) {
        let expired: Vec<Warm> = {
            let mut state = self.lock();
            // Oldest first, so the expired ones are a prefix.
            let keep_from = state
                .idle
                .iter()
                .position(|w| now.duration_since(w.idle_since) <= self.config.idle)
                .unwrap_or(state.idle.len());
            state.idle.drain(..keep_from).collect()
        };
        self.idle_gauge.dec_by(gauge_count(expired.len()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Pool {
    /// An unloaded version's idle instances leave the gauge with it.
    fn drop(&mut self) {
        let idle = self.lock().idle.len();
        self.idle_gauge.dec_by(gauge_count(idle));
    }
}

fn gauge_count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Every reuse pool of one engine: what a full instance pool evicts from,
/// and what the sweeper thread expires.
pub(crate) struct Pools {
    pools: Mutex<Vec<Weak<Pool>>>,
}

impl Pools {
    /// The registry, with a thread that expires idle instances every
    /// [`SWEEP_EVERY`] and ends once the registry is dropped.
    pub fn start() -> anyhow::Result<Arc<Pools>> {
        let pools = Arc::new(Pools {
            pools: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&pools);
        std::thread::Builder::new()
            .name("berth-reuse".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(SWEEP_EVERY);
                    let Some(pools) = weak.upgrade() else { return };
                    let now = Instant::now();
                    for pool in pools.live() {
                        pool.sweep(now);
                    }
                }
            })
            .map_err(|e| anyhow::anyhow!("starting the instance-reuse thread: {e}"))?;
        Ok(pools)
    }

    pub fn register(&self, pool: &Arc<Pool>) {
        self.lock().push(Arc::downgrade(pool));
    }

    /// Drop every idle instance of every component, so that a fresh
    /// instantiation that found the pool full can have a slot; returns how
    /// many were dropped.
    pub fn evict_idle(&self) -> usize {
        self.live().iter().map(|pool| pool.evict()).sum()
    }

    /// The pools still in use, forgetting those of unloaded versions.
    fn live(&self) -> Vec<Arc<Pool>> {
        let mut pools = self.lock();
        pools.retain(|p| p.strong_count() > 0);
        pools.iter().filter_map(Weak::upgrade).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Pool>>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }
}
