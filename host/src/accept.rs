//! The accept loop both listeners share (the service port and the admin
//! port): a cap on open connections, a deadline for each request's headers,
//! a cap on their size, and on shutdown a drain bounded by a timeout.

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub type Body = Full<Bytes>;

/// Limits on the connections of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open connections at once; further ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (slowloris defence).
    pub header_read_timeout: Duration,
    /// Request line plus headers, in bytes, past which the parser stops
    /// reading and answers 431 itself, without a body.
    pub max_header_bytes: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

/// Accept connections on `listener` and answer each request with `handler`
/// until `shutdown` resolves; then stop accepting, wait up to the drain
/// timeout for in-flight requests, and return. `what` names the listener in
/// log lines.
pub async fn accept_loop<H, Fut>(
    what: &'static str,
    listener: TcpListener,
    limits: &ConnectionLimits,
    handler: H,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper refuses anything below 8 KiB as a buffer size.
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => permit?,
            () = &mut shutdown => break,
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let answer = handler(req);
            async move { Ok::<_, std::convert::Infallible>(answer.await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(listener = what, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!(listener = what, "draining in-flight requests");
    if tokio::time::timeout(limits.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = what,
            "drain timeout passed with requests still running; exiting anyway"
        );
    }
    Ok(())
}
