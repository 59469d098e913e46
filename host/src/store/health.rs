//! Whether a backend can commit writes now, for `/readyz`: the error of its
//! last write until a later one succeeds, and a probe that writes once a
//! second when no real traffic has proved the store in that second.

use super::{StoreError, now_ms};
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// What a backend learnt from its last write.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// The last write's error, until a later write succeeds.
    failure: Mutex<Option<String>>,
    /// When a write last succeeded (ms since the epoch), so the probe can
    /// skip the seconds in which real traffic already proved the store.
    last_ok_ms: AtomicI64,
}

impl Health {
    /// Record the outcome of a write.
    pub(crate) fn record(&self, outcome: Result<(), &StoreError>) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => {
                self.last_ok_ms.store(now_ms(), Ordering::Relaxed);
                if failure.take().is_some() {
                    tracing::info!("the store commits writes again");
                }
            }
            Err(e) => *failure = Some(e.to_string()),
        }
    }

    /// The last write's error, if no write succeeded since.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Until `stop` resolves, run `probe` (a real write, whose outcome the
    /// backend records here) once a second unless a write succeeded in that
    /// second, so `/readyz` turns 503 when the store stops taking writes
    /// even with no traffic, and 200 again once it takes them.
    pub(crate) async fn probe_writes<F: Future>(
        &self,
        mut probe: impl FnMut() -> F,
        stop: impl Future<Output = ()>,
    ) {
        const PERIOD: Duration = Duration::from_secs(1);
        let probing = async {
            loop {
                tokio::time::sleep(PERIOD).await;
                let quiet = now_ms() - self.last_ok_ms.load(Ordering::Relaxed)
                    >= i64::try_from(PERIOD.as_millis()).unwrap_or(i64::MAX);
                if quiet || self.failure().is_some() {
                    probe().await;
                }
            }
        };
        tokio::select! {
            () = probing => {}
            () = stop => {}
        }
    }
}
