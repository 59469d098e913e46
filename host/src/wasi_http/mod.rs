//! The executor for standard `wasi:http/proxy` components, beside Berth's
//! own world: linked with wasmtime-wasi-http, run in a fresh instance per
//! request under the same deadline, memory cap and instance pool as every
//! other component. The guest runs on a task of its own, so its response
//! headers can go out while it still writes the body.

pub mod front;
mod keyvalue;
pub mod outbound;
mod state;

use crate::bindings::{Header, Request as WitRequest, Response as WitResponse};
use crate::runtime::{CallEnv, CallError, CallLimits, TrapInfo};
use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;
use wasmtime::component::{Component, Linker};
use wasmtime::{Engine, Store, StoreLimitsBuilder, Trap};
use wasmtime_wasi_http::WasiHttpView as _;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

pub use state::{HttpInvocation, INTERNAL_SUFFIX};

/// Largest response body a call from another component collects from a
/// `wasi:http` callee (calls carry whole bodies).
const MAX_CALL_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Add what a `wasi:http/proxy` component may import: WASI (with the same
/// empty context `berth:service` components get), `wasi:http`, and
/// `wasi:config/store` (0.2.0-rc.1) over the manifest's config table, and
/// `wasi:keyvalue` (0.2.0-draft) over the component's namespace.
pub fn add_to_linker(linker: &mut Linker<HttpInvocation>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker).map_err(|e| anyhow!("{e:?}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker).map_err(|e| anyhow!("{e:?}"))?;
    wasmtime_wasi_config::add_to_linker(linker, |s| {
        wasmtime_wasi_config::WasiConfig::from(&*s.config)
    })
    .map_err(|e| anyhow!("{e:?}"))?;
    keyvalue::add_to_linker(linker)?;
    Ok(())
}

/// A compiled, linked `wasi:http` component ready to instantiate.
pub struct HttpComponent {
    name: Arc<str>,
    engine: Engine,
    pre: ProxyPre<HttpInvocation>,
    limits: CallLimits,
    instantiate_seconds: Histogram,
}

/// Link `component`, which exports `wasi:http/incoming-handler`.
pub fn link(
    engine: &Engine,
    linker: &Linker<HttpInvocation>,
    name: &str,
    component: &Component,
    limits: CallLimits,
    instantiate_seconds: Histogram,
) -> anyhow::Result<HttpComponent> {
    let pre = linker
        .instantiate_pre(component)
        .map_err(|e| anyhow!("{e:#}"))
        .with_context(|| format!("component `{name}` needs imports Berth does not provide"))?;
    let pre = ProxyPre::new(pre)
        .map_err(|e| anyhow!("{e:#}"))
        .with_context(|| {
            format!("component `{name}` does not export `wasi:http/incoming-handler` as the `wasi:http/proxy` world defines it")
        })?;
    Ok(HttpComponent {
        name: name.into(),
        engine: engine.clone(),
        pre,
        limits,
        instantiate_seconds,
    })
}

/// A guest that has sent its response headers and may still be writing
/// the body.
pub struct Serving {
    pub response: hyper::Response<HyperOutgoingBody>,
    /// How the guest ended, once it has: the body is whole only if `Ok`.
    pub end: oneshot::Receiver<Result<(), CallError>>,
    /// The guest's task; dropping it stops the guest.
    pub task: AbortOnDrop,
}

/// A task that is cancelled when its handle is dropped: a client that goes
/// away stops the guest that was writing to it.
pub struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl HttpComponent {
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    pub fn limits(&self) -> &CallLimits {
        &self.limits
    }

    /// The compiled code this was linked from.
    pub fn compiled(&self) -> &Component {
        self.pre.instance_pre().component()
    }

    /// Run `request` in a fresh instance and return once the guest has set
    /// its response (or failed before it did). The caller holds the
    /// component's concurrency slot for as long as it holds the result.
    pub async fn serve<B>(
        &self,
        env: CallEnv,
        request: hyper::Request<B>,
    ) -> Result<Serving, CallError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        // The deadline is this component's own, or the caller's if sooner.
        let deadline = env.deadline.min(Instant::now() + self.limits.timeout);
        let mut store = self.new_store(env, deadline);
        let (response_tx, response_rx) = oneshot::channel();
        let resources = (|| -> wasmtime::Result<_> {
            let mut http = store.data_mut().http();
            let request = http.new_incoming_request(Scheme::Http, request)?;
            let out = http.new_response_outparam(response_tx)?;
            Ok((request, out))
        })();
        let (request, out) = resources.map_err(|e| {
            CallError::Trap(TrapInfo {
                reason: format!("the request cannot be given to the component: {e}"),
                details: format!("{e:?}"),
            })
        })?;
        let kv = store.data().kv.clone();
        let commit_kv = kv.clone();
        let (end_tx, end) = oneshot::channel();
        let pre = self.pre.clone();
        let name = self.name.clone();
        let timeout = self.limits.timeout;
        let instantiate_seconds = self.instantiate_seconds.clone();
        let task = tokio::spawn(async move {
            let run = async {
                let started = Instant::now();
                let proxy = pre.instantiate_async(&mut store).await?;
                instantiate_seconds.observe(started.elapsed().as_secs_f64());
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await
            };
            // The epoch stops a guest that computes past its deadline; this
            // stops one that waits past it (on a slow client, a sleep, an
            // outgoing request), which no epoch tick can interrupt.
            let outcome = match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(outcome) => outcome,
                Err(_) => Err(wasmtime::Error::from(Trap::Interrupt)),
            };
            let mut ended = classify(&name, timeout, outcome, store.data());
            // Writes staged after the response was set commit when the
            // handler returns, before the body's end is sent; a guest that
            // failed commits nothing more.
            if ended.is_ok()
                && let Err(why) = kv.commit().await
            {
                ended = Err(CallError::Store(why));
            }
            // Reported before the store (and with it the body's sender) is
            // dropped, so whoever sees the body end can tell a finished body
            // from a cut one.
            let _ = end_tx.send(ended);
            drop(store);
        });
        let task = AbortOnDrop(task);
        match response_rx.await {
            Ok(Ok(response)) => {
                // What the guest wrote before it answered is durable before
                // the headers leave; dropping the task stops it otherwise.
                commit_kv.commit().await.map_err(CallError::Store)?;
                Ok(Serving {
                    response,
                    end,
                    task,
                })
            }
            Ok(Err(code)) => Err(CallError::Trap(TrapInfo {
                reason: format!("the component answered with error {code:?}"),
                details: format!("wasi:http error code {code:?}"),
            })),
            // The guest ended without setting a response.
            Err(_) => match end.await {
                Ok(Err(e)) => Err(e),
                _ => Err(CallError::Trap(TrapInfo {
                    reason: "the component returned without setting a response".into(),
                    details: "the guest's handler returned without calling response-outparam.set"
                        .into(),
                })),
            },
        }
    }

    /// Run a request whole in and whole out: a call from another component
    /// (or a test) to this one.
    pub async fn call(&self, env: CallEnv, request: &WitRequest) -> Result<WitResponse, CallError> {
        let failed = |reason: String| {
            CallError::Trap(TrapInfo {
                details: reason.clone(),
                reason,
            })
        };
        let mut target = format!("http://{}{INTERNAL_SUFFIX}{}", self.name, request.path);
        if !request.query.is_empty() {
            target.push('?');
            target.push_str(&request.query);
        }
        let mut builder = hyper::Request::builder()
            .method(request.method.as_str())
            .uri(target);
        for Header { name, value } in &request.headers {
            builder = builder.header(name, value);
        }
        let body = Full::new(Bytes::from(request.body.clone()));
        let request = builder.body(body).map_err(|e| {
            failed(format!(
                "the request cannot be sent to a wasi:http component: {e}"
            ))
        })?;
        let serving = self.serve(env, request).await?;
        let (parts, body) = serving.response.into_parts();
        let collected = Limited::new(body, MAX_CALL_RESPONSE_BYTES).collect().await;
        let ended = serving.end.await;
        if let Ok(Err(e)) = ended {
            return Err(e);
        }
        let body = collected
            .map_err(|e| failed(format!("the component's response body failed: {e}")))?
            .to_bytes()
            .to_vec();
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| Header {
                name: name.as_str().to_string(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
            .collect();
        Ok(WitResponse {
            status: parts.status.as_u16(),
            headers,
            body,
        })
    }

    fn new_store(&self, env: CallEnv, deadline: Instant) -> Store<HttpInvocation> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.max_memory_bytes)
            .instances(16)
            .build();
        let data = HttpInvocation::new(self.name.clone(), env, deadline, limits);
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limits);
        // As for `berth:service` calls: a busy guest yields at every tick,
        // so it shares its thread, and is stopped at its deadline.
        let mut turn_began = Instant::now();
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(crate::runtime::on_tick(
                Instant::now(),
                deadline,
                &mut turn_began,
            ))
        });
        store
    }
}

/// How a guest's run ended, counted in the component's metrics.
fn classify(
    name: &str,
    timeout: std::time::Duration,
    outcome: wasmtime::Result<()>,
    data: &HttpInvocation,
) -> Result<(), CallError> {
    let printed = data.printed();
    let Err(e) = outcome else {
        if !printed.is_empty() {
            let request_id = &**data.request_id();
            tracing::warn!(target: "component", component = name, request_id, "stderr: {printed}");
        }
        return Ok(());
    };
    Err(CallError::from_guest(name, e, &printed, timeout))
}
