//! What one connection is doing, as the accept loop needs to know it: the
//! requests under way on it (and which of them still read their bodies),
//! when it was last active, and a socket wrapper that gives up on a client
//! that stops reading.

use hyper::body::{Body as HttpBody, Frame, SizeHint};
use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The activity of one connection, shared by its task, the requests on it
/// (as a request extension) and the accept loop.
#[derive(Debug)]
pub struct Activity {
    /// Requests whose responses are not fully sent yet.
    requests: AtomicUsize,
    /// Of those, the ones still reading their request bodies: nothing has
    /// been done for them, so a drain need not wait for them.
    reading: AtomicUsize,
    /// When a request last started or finished (or the connection opened),
    /// in milliseconds since `born`: the idle one quiet longest goes first.
    last_active_ms: AtomicU64,
    born: Instant,
    /// Set once the accept loop asked this connection to make room.
    pub(crate) evicted: AtomicBool,
    /// Told when the connection should close to make room.
    pub(crate) close: Notify,
}

impl Activity {
    pub(crate) fn new() -> Activity {
        Activity {
            requests: AtomicUsize::new(0),
            reading: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(0),
            born: Instant::now(),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    /// No request under way: waiting for the next one (or the first).
    pub(crate) fn is_idle(&self) -> bool {
        self.requests.load(Ordering::Acquire) == 0
    }

    /// When it was last active, as an instant.
    pub(crate) fn last_active(&self) -> Instant {
        self.born + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    /// Count a request until the returned guard drops.
    pub(crate) fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::AcqRel);
        self.touch();
        RequestGuard(self.clone())
    }

    /// Whether a closing connection can be dropped without cutting off
    /// work: every request on it still reads its body, or there is none
    /// and `grace_over`.
    pub(crate) fn may_drop(&self, grace_over: bool) -> bool {
        let requests = self.requests.load(Ordering::Acquire);
        let reading = self.reading.load(Ordering::Acquire);
        if requests == 0 {
            grace_over
        } else {
            reading >= requests
        }
    }
}

/// Counts one request on its connection; dropped once its response is sent.
#[derive(Debug)]
pub struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Marks a request as reading its body until dropped.
#[derive(Debug)]
pub struct ReadingBody(Arc<Activity>);

impl Drop for ReadingBody {
    fn drop(&mut self) {
        self.0.reading.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Mark `req` as reading its body until the guard drops, so that a drain
/// closes its connection at once rather than waiting for a client that
/// may never finish sending. `None` outside the accept loop.
pub fn reading_body<B>(req: &hyper::Request<B>) -> Option<ReadingBody> {
    let activity = req.extensions().get::<Arc<Activity>>()?;
    activity.reading.fetch_add(1, Ordering::AcqRel);
    Some(ReadingBody(activity.clone()))
}

/// A response body that keeps its request counted until it is sent.
pub struct Tracked<B> {
    body: B,
    _request: RequestGuard,
}

impl<B> Tracked<B> {
    pub(crate) fn new(body: B, request: RequestGuard) -> Tracked<B> {
        Tracked {
            body,
            _request: request,
        }
    }
}

impl<B: HttpBody + Unpin> HttpBody for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A socket whose writes fail once it has accepted no bytes for `limit`:
/// a client that stops reading would otherwise keep its response in
/// memory for as long as it keeps the connection open.
pub struct WriteTimeout<S> {
    inner: S,
    limit: Duration,
    /// Running while a write waits for the socket; reset by any progress.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteTimeout<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> WriteTimeout<S> {
        WriteTimeout {
            inner,
            limit,
            stalled: None,
        }
    }

    /// A write is pending: start the clock if it is not running, and fail
    /// once it runs out.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let limit = self.limit;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {} s", limit.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn progressed<T>(&mut self, ready: io::Result<T>) -> Poll<io::Result<T>> {
        self.stalled = None;
        Poll::Ready(ready)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteTimeout<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(ready) => self.progressed(ready),
            Poll::Pending => self.pending(cx),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(ready) => self.progressed(ready),
            Poll::Pending => self.pending(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Ready(ready) => self.progressed(ready),
            Poll::Pending => self.pending(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Ready(ready) => self.progressed(ready),
            Poll::Pending => self.pending(cx),
        }
    }
}
