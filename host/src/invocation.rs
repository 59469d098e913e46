//! The state of one call into one component: the wasmtime store data. It
//! says which component is running and carries everything its imports may
//! reach: its own key-value transaction, the services it may call, the
//! events it publishes, and the request's id and deadline.

use crate::capabilities::kv::KvTxn;
use crate::capabilities::log::LogSink;
use crate::capabilities::services::Services;
use crate::capabilities::stderr::CapturedStderr;
use crate::store::{NewEvent, Store, WriteBatch};
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// What a call runs with, besides the component itself.
#[derive(Clone)]
pub struct CallEnv {
    /// The store holding every namespace; the call reaches only its own.
    pub store: Arc<dyn Store>,
    /// Where the component's log lines go besides tracing (tests).
    pub log_sink: Option<Arc<dyn LogSink>>,
    /// Other components this one may call and publish to; `None` grants nothing.
    pub services: Option<Arc<dyn Services>>,
    /// The request id, passed along every call the request makes.
    pub request_id: Arc<str>,
    /// How many calls deep this one is (0 for a request from outside).
    pub depth: u32,
    /// The caller's deadline; the callee's own timeout may be sooner.
    pub deadline: Instant,
}

/// The store data of one call.
pub struct Invocation {
    pub(crate) component: Arc<str>,
    pub(crate) kv: KvTxn,
    pub(crate) env: CallEnv,
    /// When this call must end: the sooner of its own timeout and the caller's.
    pub(crate) deadline: Instant,
    /// When the guest's current turn on its thread began (`runtime::on_tick`).
    pub(crate) turn_began: Instant,
    /// Events published so far, committed with the key-value writes.
    pub(crate) events: Vec<NewEvent>,
    pub(crate) limits: StoreLimits,
    /// The WASI context and the stderr it writes to, built on the guest's
    /// first WASI call: most requests make none, and building a context
    /// (its random generators, its stdio) costs more than a small guest's
    /// whole handler.
    wasi: Option<(WasiCtx, CapturedStderr)>,
    table: ResourceTable,
}

impl Invocation {
    pub(crate) fn new(
        component: Arc<str>,
        env: CallEnv,
        deadline: Instant,
        max_memory_bytes: usize,
    ) -> Invocation {
        Invocation {
            kv: KvTxn::new(env.store.clone(), component.clone()),
            component,
            env,
            deadline,
            turn_began: Instant::now(),
            events: Vec::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(max_memory_bytes)
                .instances(16)
                .build(),
            wasi: None,
            table: ResourceTable::new(),
        }
    }

    /// What the guest wrote to stderr, without trailing whitespace.
    pub(crate) fn printed(&self) -> String {
        self.wasi
            .as_ref()
            .map(|(_, stderr)| stderr.text())
            .unwrap_or_default()
    }

    /// The writes and events to commit once the call has returned.
    pub(crate) fn take_batch(&mut self) -> WriteBatch {
        let mut batch = self.kv.take_batch();
        batch.events = std::mem::take(&mut self.events);
        batch
    }

    /// Make the data fresh for another call of a reused instance: its own
    /// transaction, environment, deadline, events and stderr. The memory
    /// cap, the WASI context and the resource table stay with the instance,
    /// whose memory and globals survive by design.
    pub(crate) fn renew(&mut self, env: CallEnv, deadline: Instant) {
        self.kv = KvTxn::new(env.store.clone(), self.component.clone());
        self.env = env;
        self.deadline = deadline;
        self.turn_began = Instant::now();
        self.events.clear();
        if let Some((_, stderr)) = &self.wasi {
            stderr.clear();
        }
    }
}

impl WasiView for Invocation {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let (ctx, _) = self.wasi.get_or_insert_with(|| {
            let stderr = CapturedStderr::default();
            // No preopened directories, environment, arguments or sockets:
            // only what WASI grants every guest (clocks, random).
            (WasiCtx::builder().stderr(stderr.clone()).build(), stderr)
        });
        WasiCtxView {
            ctx,
            table: &mut self.table,
        }
    }
}
