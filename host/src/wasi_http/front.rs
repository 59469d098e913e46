//! A request from the HTTP front through a `wasi:http` component, streamed
//! both ways: the body goes in as the client sends it (under the body cap
//! and the between-pieces deadline), and the guest's body goes out as it
//! writes it (under the response cap). A guest that fails after its
//! headers went out ends the connection, so the client never takes a cut
//! body for a whole one.

use super::{AbortOnDrop, HttpComponent};
use crate::reply::{Body, BoxError};
use crate::runtime::{CallEnv, CallError, TrapInfo};
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_LENGTH, HOST};
use hyper::{Request, Response};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Sleep;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

/// The front's limits that apply to a streamed request.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    pub max_body_bytes: usize,
    /// Longest wait for the next piece of the request body.
    pub body_timeout: Duration,
    pub max_response_bytes: usize,
}

/// Run `req` through `component`. `hold` (the request's in-flight and
/// concurrency slots) is kept until the guest has ended and its body is
/// sent, or the client has gone.
pub async fn serve(
    component: &HttpComponent,
    env: CallEnv,
    req: Request<Incoming>,
    limits: StreamLimits,
    hold: Box<dyn Send>,
) -> Result<Response<Body>, CallError> {
    let reading = crate::accept::reading_body(&req);
    let request_id = env.request_id.clone();
    let (mut parts, body) = req.into_parts();
    // wasi:http gives the guest an absolute URL; HTTP/1.1 sends only the
    // path, with the authority in `Host`.
    if parts.uri.authority().is_none() {
        let authority = parts
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.parse::<hyper::http::uri::Authority>().is_ok())
            .unwrap_or("localhost")
            .to_string();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        if let Ok(uri) = hyper::Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
        {
            parts.uri = uri;
        }
    }
    let body = Inbound {
        body,
        left: limits.max_body_bytes,
        gap: limits.body_timeout,
        timer: Box::pin(tokio::time::sleep(limits.body_timeout)),
        _reading: reading,
    };
    let serving = component
        .serve(env, Request::from_parts(parts, body))
        .await?;
    let (parts, body) = serving.response.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared.filter(|&n| n > limits.max_response_bytes as u64) {
        let reason = format!(
            "returned a {length} byte body; the limit is {}",
            limits.max_response_bytes
        );
        return Err(CallError::Trap(TrapInfo {
            details: reason.clone(),
            reason,
        }));
    }
    let body = Outbound {
        body,
        end: Some(serving.end),
        sent: 0,
        max: limits.max_response_bytes,
        component: component.name().clone(),
        request_id,
        _task: serving.task,
        _hold: hold,
    };
    Ok(Response::from_parts(parts, Body::stream(body)))
}

/// The client's body on its way into the guest.
struct Inbound {
    body: Incoming,
    /// Bytes still allowed.
    left: usize,
    gap: Duration,
    /// Runs out when the next piece is late.
    timer: Pin<Box<Sleep>>,
    /// Tells the accept loop this request still reads its body (a drain
    /// closes such connections at once).
    _reading: Option<crate::conn::ReadingBody>,
}

impl HttpBody for Inbound {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if len > this.left {
                    return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::HttpRequestBodySize(
                        None,
                    ))));
                }
                this.left -= len;
                let next = tokio::time::Instant::now() + this.gap;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this._reading = None;
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The guest's body on its way to the client.
struct Outbound {
    body: HyperOutgoingBody,
    /// How the guest ended; taken once the body has ended.
    end: Option<oneshot::Receiver<Result<(), CallError>>>,
    sent: usize,
    max: usize,
    component: Arc<str>,
    request_id: Arc<str>,
    /// Dropped with the body: a client that goes away stops the guest.
    _task: AbortOnDrop,
    _hold: Box<dyn Send>,
}

impl Outbound {
    fn cut(&mut self, why: String) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.end = None;
        tracing::warn!(
            target: "component",
            component = &*self.component,
            request_id = &*self.request_id,
            "response cut short after its headers were sent: {why}"
        );
        Poll::Ready(Some(Err(why.into())))
    }
}

impl HttpBody for Outbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let Some(end) = &mut this.end else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.sent += frame.data_ref().map_or(0, Bytes::len);
                if this.sent > this.max {
                    let why = format!(
                        "the body passed the limit of {} bytes; raise --max-response-bytes to allow it",
                        this.max
                    );
                    return this.cut(why);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.cut(format!("the body failed: {e}")),
            Poll::Pending => Poll::Pending,
            // The body ended: whole only if the guest returned normally.
            Poll::Ready(None) => match Pin::new(end).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(Ok(()))) => {
                    this.end = None;
                    Poll::Ready(None)
                }
                Poll::Ready(Ok(Err(e))) => {
                    let why = match e {
                        CallError::Timeout(t) => {
                            format!("the component ran past its {} ms deadline", t.as_millis())
                        }
                        CallError::Trap(trap) => format!("the component trapped: {trap}"),
                        CallError::PoolFull(e) | CallError::Store(e) => e,
                    };
                    this.cut(why)
                }
                Poll::Ready(Err(_)) => this.cut("the component's task ended".into()),
            },
        }
    }
}
