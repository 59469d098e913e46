//! Where log lines go: stderr, through a buffer that a background thread
//! writes out every [`FLUSH_EVERY`]. A request's log line costs a copy into
//! memory, not a system call, and wakes no thread; the write itself happens
//! outside the lock, so no request waits on stderr. The price: a process
//! killed with SIGKILL may lose its last lines (one flush interval's worth);
//! a normal exit writes everything.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a log line may wait in the buffer.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Past this many buffered bytes, the thread that logs writes them itself,
/// so a flood of lines cannot grow the buffer without bound.
const MAX_BUFFERED: usize = 1024 * 1024;

/// Buffered stderr, shared by every thread that logs.
#[derive(Clone)]
pub struct BufferedStderr(Arc<Shared>);

struct Shared {
    lines: Mutex<Vec<u8>>,
    /// Held while writing to stderr, so buffers go out in the order they filled.
    out: Mutex<()>,
}

impl BufferedStderr {
    /// The buffer, and the thread that writes it out.
    pub fn start() -> BufferedStderr {
        let shared = BufferedStderr(Arc::new(Shared {
            lines: Mutex::new(Vec::with_capacity(64 * 1024)),
            out: Mutex::new(()),
        }));
        let flusher = shared.clone();
        // If the thread cannot start, lines still go out when the buffer
        // fills and at exit.
        let _ = std::thread::Builder::new()
            .name("berth-log".into())
            .spawn(move || {
                let mut spare = Vec::with_capacity(64 * 1024);
                loop {
                    std::thread::sleep(FLUSH_EVERY);
                    flusher.write_out(&mut spare);
                }
            });
        shared
    }

    /// Write out whatever is buffered.
    pub fn flush_now(&self) {
        self.write_out(&mut Vec::new());
    }

    /// Swap the buffer for `spare` under the lock, then write it without.
    fn write_out(&self, spare: &mut Vec<u8>) {
        let _out = self.0.out.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::swap(&mut *self.lock(), spare);
        if !spare.is_empty() {
            let _ = std::io::stderr().write_all(spare);
            spare.clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lines.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Write for BufferedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    /// One lock per line, so lines from different threads never interleave.
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let full = {
            let mut buffer = self.lock();
            buffer.extend_from_slice(buf);
            buffer.len() >= MAX_BUFFERED
        };
        if full {
            self.flush_now();
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_now();
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BufferedStderr {
    type Writer = BufferedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
