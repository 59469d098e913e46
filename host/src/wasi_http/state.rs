//! The store data of one `wasi:http` call, and its outbound hook: a request
//! to `http://NAME.internal/...` is a call to component NAME through the
//! mesh (under the `calls` grants), any other goes out only to an origin
//! the manifest's `outbound` grants, and is otherwise denied and logged.

use super::keyvalue::KvState;
use crate::bindings::berth::service::services::CallError;
use crate::bindings::{Header, Request as WitRequest};
use crate::capabilities::kv::KvTxn;
use crate::capabilities::services::{Caller, Services};
use crate::capabilities::stderr::CapturedStderr;
use crate::runtime::CallEnv;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_config::WasiConfigVariables;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

/// Largest request body a component may send to another through
/// `.internal`; calls carry whole bodies, as `berth:service` calls do.
const MAX_CALL_BODY_BYTES: usize = 16 * 1024 * 1024;

/// The host suffix that names a component rather than a network host.
pub const INTERNAL_SUFFIX: &str = ".internal";

/// The store data of one `wasi:http` call.
pub struct HttpInvocation {
    pub(crate) limits: StoreLimits,
    wasi: WasiCtx,
    stderr: CapturedStderr,
    http: WasiHttpCtx,
    pub(crate) table: ResourceTable,
    outbound: Outbound,
    /// The request's `wasi:keyvalue` transaction over the component's namespace.
    pub(crate) kv: KvState,
    /// The component's `[components.NAME.config]` values.
    pub(crate) config: Arc<WasiConfigVariables>,
}

impl HttpInvocation {
    pub(crate) fn new(
        component: Arc<str>,
        env: CallEnv,
        deadline: Instant,
        limits: StoreLimits,
    ) -> HttpInvocation {
        let stderr = CapturedStderr::default();
        let config = env
            .services
            .as_ref()
            .and_then(|s| s.config(&component))
            .unwrap_or_default();
        let kv = KvState::new(KvTxn::new(env.store.clone(), component.clone()));
        HttpInvocation {
            config,
            kv,
            limits,
            // No preopened directories, environment, arguments or sockets,
            // as for `berth:service` components: clocks and random only.
            wasi: WasiCtx::builder().stderr(stderr.clone()).build(),
            stderr,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound: Outbound {
                component,
                env,
                deadline,
            },
        }
    }

    /// What the guest wrote to stderr, without trailing whitespace.
    pub(crate) fn printed(&self) -> String {
        self.stderr.text()
    }

    pub(crate) fn request_id(&self) -> &Arc<str> {
        &self.outbound.env.request_id
    }
}

impl WasiView for HttpInvocation {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpInvocation {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Who is sending, so each outgoing request can be checked and carried.
struct Outbound {
    component: Arc<str>,
    env: CallEnv,
    deadline: Instant,
}

type SendResult = Result<
    (
        hyper::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    HttpError,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let uri = request.uri().clone();
        let services = self.env.services.clone();
        let component = self.component.clone();
        let request_id = self.env.request_id.clone();
        if let Some(callee) = uri
            .host()
            .and_then(|host| host.strip_suffix(INTERNAL_SUFFIX))
        {
            let caller = Caller {
                component,
                request_id,
                depth: self.env.depth,
                deadline: self.deadline,
            };
            return Box::new(call_component(
                services,
                caller,
                callee.to_string(),
                request,
            ));
        }
        let granted = services
            .as_ref()
            .is_some_and(|s| s.may_reach(&component, &uri));
        if !granted {
            tracing::warn!(
                target: "outbound",
                component = &*component,
                request_id = &*request_id,
                url = %uri,
                "outbound request denied: add its origin to `outbound` in the manifest to allow it"
            );
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// An outgoing request to `http://CALLEE.internal/...` as a call through
/// the mesh: checked against `calls`, with the caller's deadline and
/// request id, whatever kind the callee is.
async fn call_component(
    services: Option<Arc<dyn Services>>,
    caller: Caller,
    callee: String,
    request: hyper::Request<WasiBody>,
) -> SendResult {
    let Some(services) = services else {
        return Err(HttpError::DestinationNotFound);
    };
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_CALL_BODY_BYTES).collect().await {
        Ok(body) => body.to_bytes().to_vec(),
        Err(_) => return Err(HttpError::HttpRequestBodySize(None)),
    };
    let headers = parts
        .headers
        .iter()
        .filter_map(|(name, value)| {
            Some(Header {
                name: name.as_str().to_string(),
                value: value.to_str().ok()?.to_string(),
            })
        })
        .collect();
    let request = WitRequest {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers,
        body,
    };
    let response = services
        .call(caller, callee, request)
        .await
        .map_err(|e| match e {
            CallError::NotAllowed(_) => HttpError::HttpRequestDenied,
            CallError::UnknownService(_) => HttpError::DestinationNotFound,
            CallError::TooDeep(_) => HttpError::LoopDetected,
            CallError::Timeout(_) => HttpError::HttpResponseTimeout,
            CallError::Unavailable(_) => HttpError::DestinationUnavailable,
            CallError::Failed(m) => HttpError::InternalError(Some(m)),
        })?;
    let mut builder = hyper::Response::builder().status(response.status);
    for Header { name, value } in &response.headers {
        builder = builder.header(name, value);
    }
    let body = Full::new(Bytes::from(response.body))
        .map_err(|never| match never {})
        .boxed_unsync();
    let response = builder
        .body(body)
        .map_err(|e| HttpError::InternalError(Some(e.to_string())))?;
    let io: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(async { Ok(()) });
    Ok((response, io))
}
