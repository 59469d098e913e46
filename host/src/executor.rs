//! The executor seam: a loaded component is one of two kinds, chosen when it
//! is linked, and everything above the runtime (the server, the mesh, hot
//! swap, the event worker, `berth-test`) holds an [`Executor`] without
//! asking which kind it is, except where the kinds really differ.

use crate::bindings::{Event, Request, Response};
use crate::runtime::{CallEnv, CallError, CallLimits, LoadedComponent};
use crate::store::WriteBatch;
use crate::wasi_http::HttpComponent;
use std::sync::Arc;

/// Which guest ABI a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Berth's own world: exports `berth:service/handler`, imports `kv`,
    /// `log`, `services` and `events`.
    Service,
    /// A standard `wasi:http/proxy` component: exports
    /// `wasi:http/incoming-handler@0.2.x`.
    WasiHttp,
}

impl Kind {
    /// The name the admin API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "berth:service",
            Kind::WasiHttp => "wasi:http",
        }
    }
}

/// A compiled, linked component of either kind, ready to serve.
///
/// An enum rather than a trait object: there are two kinds, both known
/// here, and the places that must tell them apart (the server streams a
/// `wasi:http` body; only a `berth:service` component subscribes to
/// events) match on it instead of growing the trait with methods only one
/// kind implements.
pub enum Executor {
    Service(LoadedComponent),
    Http(HttpComponent),
}

impl Executor {
    pub fn name(&self) -> &Arc<str> {
        match self {
            Executor::Service(c) => c.name(),
            Executor::Http(c) => c.name(),
        }
    }

    pub fn limits(&self) -> &CallLimits {
        match self {
            Executor::Service(c) => c.limits(),
            Executor::Http(c) => c.limits(),
        }
    }

    /// The compiled code, to link it again under other limits.
    pub fn compiled(&self) -> &wasmtime::component::Component {
        match self {
            Executor::Service(c) => c.compiled(),
            Executor::Http(c) => c.compiled(),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            Executor::Service(_) => Kind::Service,
            Executor::Http(_) => Kind::WasiHttp,
        }
    }

    /// Whether the component exports an event handler.
    pub fn subscribes(&self) -> bool {
        match self {
            Executor::Service(c) => c.subscribes(),
            Executor::Http(_) => false,
        }
    }

    /// This version is no longer live: a reusing `berth:service` component
    /// drops its kept instances (a `wasi:http` one keeps none).
    pub fn retire(&self) {
        if let Executor::Service(c) = self {
            c.retire();
        }
    }

    /// This version is live again (a rollback).
    pub fn revive(&self) {
        if let Executor::Service(c) = self {
            c.revive();
        }
    }

    /// Run one request, whole in and whole out, in a fresh instance: how a
    /// call from another component or a test reaches either kind. The
    /// server streams `wasi:http` requests instead (see `wasi_http::front`).
    pub async fn call(
        &self,
        env: CallEnv,
        request: &Request,
    ) -> Result<(Response, WriteBatch), CallError> {
        match self {
            Executor::Service(c) => c.call(env, request).await,
            Executor::Http(c) => c
                .call(env, request)
                .await
                .map(|response| (response, WriteBatch::default())),
        }
    }

    /// Deliver an event; a `wasi:http` component has no event handler, so
    /// it refuses every event, as a service without `subscriber` does.
    pub async fn on_event(
        &self,
        env: CallEnv,
        event: &Event,
    ) -> Result<(Result<(), String>, WriteBatch), CallError> {
        match self {
            Executor::Service(c) => c.on_event(env, event).await,
            Executor::Http(c) => {
                let refusal = format!(
                    "component `{}` is a wasi:http component and has no event handler",
                    c.name()
                );
                Ok((Err(refusal), WriteBatch::default()))
            }
        }
    }
}
