//! The accept loop both listeners share (the service port and the admin
//! port): HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one port, a cap
//! on open connections at which idle ones give way to new ones, deadlines
//! for headers and for writes, a cap on header size, and on shutdown a
//! drain bounded by a timeout.

use crate::conn::{Activity, Tracked, WriteTimeout};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

pub use crate::conn::reading_body;

pub use crate::reply::Body;

/// Limits on the connections of one listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Open connections at once. At the cap, the idle connection that has
    /// been quiet longest is closed for a new one; if none is idle, new
    /// ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (slowloris defence),
    /// and to say which protocol it speaks.
    pub header_read_timeout: Duration,
    /// Request line plus headers, in bytes, past which the parser stops
    /// reading and answers 431 itself, without a body.
    pub max_header_bytes: usize,
    /// How long a response may wait for a socket that accepts no bytes
    /// (a client that does not read) before the connection is dropped, and
    /// the response's memory with it.
    pub write_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

/// How often a closing connection looks whether it may be dropped.
const CLOSE_CHECK: Duration = Duration::from_millis(50);

/// How long a closing connection with no request gets to finish its own
/// goodbye (an HTTP/2 GOAWAY waits for the client's ping answer) before it
/// is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long the accept loop waits for an evicted connection to go before
/// it evicts another.
const EVICT_RETRY: Duration = Duration::from_millis(200);

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
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let open = Arc::new(Open {
        slots: Arc::new(Semaphore::new(max)),
        connections: Mutex::new(HashMap::new()),
    });
    let protocols = Arc::new(Protocols::new(limits));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    loop {
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
        let permit = match open.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => tokio::select! {
                permit = make_room(what, &open) => permit,
                () = &mut shutdown => break,
            },
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        let activity = Arc::new(Activity::new());
        open.insert(next_id, activity.clone());
        let connection = Connection {
            what,
            id: next_id,
            activity,
            open: open.clone(),
            drain: drain_rx.clone(),
            _permit: permit,
        };
        tokio::spawn(connection.serve(stream, protocols.clone(), limits.clone(), handler.clone()));
    }
    drop(listener);
    tracing::info!(listener = what, "draining in-flight requests");
    let _ = drain_tx.send(true);
    // Every open connection holds a slot: all slots back means all closed.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain_timeout, open.slots.acquire_many(all))
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

/// The open connections of one listener.
struct Open {
    /// One permit per connection that may be open.
    slots: Arc<Semaphore>,
    /// What each open connection is doing, by id, so that at the cap the
    /// accept loop can find an idle one to close.
    connections: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Open {
    fn insert(&self, id: u64, activity: Arc<Activity>) {
        self.lock().insert(id, activity);
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask the idle connection that has been quiet longest to close;
    /// false if every connection has a request under way.
    fn evict_oldest_idle(&self) -> bool {
        let connections = self.lock();
        let oldest = connections
            .values()
            .filter(|a| a.is_idle() && !a.evicted.load(Ordering::Relaxed))
            .min_by_key(|a| a.last_active());
        match oldest {
            Some(activity) => {
                activity.evicted.store(true, Ordering::Relaxed);
                activity.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A new client is waiting and every slot is taken: close idle keep-alive
/// connections, oldest first, until a slot frees. If all are busy, wait
/// for one to finish, as the kernel's backlog waits for us.
async fn make_room(what: &'static str, open: &Open) -> OwnedSemaphorePermit {
    loop {
        if open.evict_oldest_idle() {
            tracing::debug!(
                listener = what,
                "at the connection cap: closing the longest idle connection"
            );
        }
        tokio::select! {
            permit = open.slots.clone().acquire_owned() => {
                return permit.expect("the connection semaphore is never closed");
            }
            () = tokio::time::sleep(EVICT_RETRY) => {}
        }
    }
}

/// Both protocols' settings, built once per listener.
struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    fn new(limits: &ConnectionLimits) -> Protocols {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            // hyper refuses anything below 8 KiB as a buffer size.
            .max_buf_size(limits.max_header_bytes.max(8192))
            .max_header_size(limits.max_header_bytes)
            // A client may shut its side after a whole request and still
            // wait for the answer.
            .half_close(true)
            .keep_alive(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        Protocols {
            http1: h1,
            http2: h2,
        }
    }
}

/// The preface an HTTP/2 client with prior knowledge opens with.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the client opens with the HTTP/2 preface, looking at its first
/// bytes without taking them; `None` if it closed without sending any.
async fn speaks_h2(stream: &TcpStream) -> std::io::Result<Option<bool>> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if n == 0 {
            return Ok(None);
        }
        if first[..n] != H2_PREFACE[..n] {
            return Ok(Some(false));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(true));
        }
        // Part of the preface so far: wait for the rest.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One accepted connection and what it owns until it closes.
struct Connection {
    what: &'static str,
    id: u64,
    activity: Arc<Activity>,
    open: Arc<Open>,
    /// Turns true when the listener drains.
    drain: watch::Receiver<bool>,
    /// The connection's slot under the cap, given back when it closes.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn serve<H, Fut>(
        mut self,
        stream: TcpStream,
        protocols: Arc<Protocols>,
        limits: ConnectionLimits,
        handler: H,
    ) where
        H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let sniffed = {
            let (activity, drain) = (&self.activity, &mut self.drain);
            tokio::select! {
                sniffed = tokio::time::timeout(limits.header_read_timeout, speaks_h2(&stream)) => {
                    // Closed, failed or silent before the first request:
                    // nothing to answer.
                    sniffed.ok().and_then(Result::ok).flatten()
                }
                () = activity.close.notified() => None,
                _ = drain.wait_for(|drain| *drain) => None,
            }
        };
        let Some(h2) = sniffed else {
            return self.closed();
        };
        let activity = self.activity.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let request = activity.request_started();
            req.extensions_mut().insert(activity.clone());
            let answer = handler(req);
            async move {
                let response = answer.await;
                // Counted until the body is sent, or dropped with the connection.
                Ok::<_, std::convert::Infallible>(response.map(|body| Tracked::new(body, request)))
            }
        });
        let io = TokioIo::new(WriteTimeout::new(stream, limits.write_timeout));
        if h2 {
            let conn = protocols.http2.serve_connection(io, service);
            self.drive(conn).await;
        } else {
            let conn = protocols.http1.serve_connection(io, service);
            self.drive(conn).await;
        }
        self.closed();
    }

    /// Serve until the connection ends by itself, or until it is asked to
    /// close (evicted as idle, or the listener drains). Then close
    /// gracefully: finish the requests under way, but drop at once a
    /// connection whose only requests are still reading their bodies, and
    /// after [`CLOSE_GRACE`] one with no request at all.
    async fn drive<C>(&mut self, conn: C)
    where
        C: GracefulConnection,
        C::Error: std::fmt::Display,
    {
        tokio::pin!(conn);
        let result = {
            let (activity, drain) = (&self.activity, &mut self.drain);
            tokio::select! {
                result = conn.as_mut() => Some(result),
                () = activity.close.notified() => None,
                _ = drain.wait_for(|drain| *drain) => None,
            }
        };
        let result = match result {
            Some(result) => result,
            None => {
                conn.as_mut().graceful_shutdown();
                let closing = Instant::now();
                loop {
                    tokio::select! {
                        result = conn.as_mut() => break result,
                        () = tokio::time::sleep(CLOSE_CHECK) => {
                            if self.activity.may_drop(closing.elapsed() >= CLOSE_GRACE) {
                                return;
                            }
                        }
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(listener = self.what, error = %e, "connection ended with an error");
        }
    }

    fn closed(self) {
        self.open.remove(self.id);
    }
}
