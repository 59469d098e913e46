//! Reading request bodies under a size cap and a deadline, and discarding
//! the unread rest of a refused one so the client still gets its answer.
//! Both listeners read a body whole before doing any work for it.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use std::time::Duration;
use tokio::time::Instant;

/// The slowest average rate a body may arrive at, on top of the time
/// between chunks: a client that sends one byte just inside each gap
/// would otherwise hold its connection for `gap × length`.
pub const MIN_BYTES_PER_SEC: u64 = 64 * 1024;

/// At most this much of a refused body is read and thrown away, so that a
/// client that sends its whole body before reading (no `Expect:
/// 100-continue`) sees the 413 instead of a reset.
pub const DISCARD_MAX_BYTES: usize = 32 * 1024 * 1024;

/// And for at most this long.
pub const DISCARD_MAX_TIME: Duration = Duration::from_secs(5);

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Over `max` bytes. `rest` is what was not read yet, to discard.
    TooLarge { max: usize, rest: Option<Incoming> },
    /// The client stopped sending, or sent too slowly.
    TimedOut { gap: Duration },
    /// The body could not be read (a framing error, the connection gone).
    Broken(String),
}

/// Read a whole body of at most `max` bytes. Each chunk must come within
/// `gap` of the previous one, and the whole body within `gap` plus the time
/// its length takes at [`MIN_BYTES_PER_SEC`].
pub async fn read(mut body: Incoming, max: usize, gap: Duration) -> Result<Bytes, BodyError> {
    let declared = hyper::body::Body::size_hint(&body).exact();
    if declared.is_some_and(|len| len > max as u64) {
        return Err(BodyError::TooLarge {
            max,
            rest: Some(body),
        });
    }
    let expected = declared.unwrap_or(max as u64);
    let deadline = Instant::now() + gap + Duration::from_secs(expected / MIN_BYTES_PER_SEC);
    let mut collected = BytesMut::new();
    loop {
        let next = Instant::now()
            .checked_add(gap)
            .unwrap_or(deadline)
            .min(deadline);
        let frame = match tokio::time::timeout_at(next, body.frame()).await {
            Err(_) => return Err(BodyError::TimedOut { gap }),
            Ok(None) => return Ok(collected.freeze()),
            Ok(Some(Err(e))) => return Err(BodyError::Broken(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers: nothing to keep
        };
        if collected.len() + data.len() > max {
            return Err(BodyError::TooLarge {
                max,
                rest: Some(body),
            });
        }
        collected.extend_from_slice(&data);
    }
}

/// Read and drop what is left of a refused body, within the bounds above,
/// on a task of its own: the answer goes out meanwhile, and once this
/// stops the connection closes.
pub fn discard_rest(rest: Option<Incoming>) {
    let Some(mut body) = rest else { return };
    tokio::spawn(async move {
        let deadline = Instant::now() + DISCARD_MAX_TIME;
        let mut discarded = 0usize;
        while discarded < DISCARD_MAX_BYTES {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => {
                    discarded += frame.data_ref().map_or(0, Bytes::len);
                }
                _ => break,
            }
        }
    });
}

/// Whether the client waits for `100 Continue` before sending its body: it
/// will send nothing once refused, so there is nothing to discard.
pub fn expects_continue(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(hyper::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}
