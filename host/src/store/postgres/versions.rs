//! [`SharedVersions`] on PostgreSQL: tables `component_versions` (the
//! wasm of each version a component's live or previous pointer names),
//! `component_live` (the pointers) and `component_manifest_seen` (every
//! version a manifest has offered), changed under a per-component advisory
//! lock, with a `NOTIFY berth_versions` in the same transaction. Each
//! replica keeps one connection LISTENing, outside the pool.

use super::PostgresStore;
use crate::store::StoreError;
use crate::store::now_ms;
use crate::store::versions::{LiveVersion, Offer, SharedVersions};
use deadpool_postgres::GenericClient;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Row};

/// The channel every replica listens on; the payload is the component.
const CHANNEL: &str = "berth_versions";

/// The first key of the two-key advisory locks that serialise changes to
/// one component's pointers (the second is the name's hash).
const LOCK_CLASS: i32 = 0x6265_7276; // "berv"

/// Component versions in the shared PostgreSQL store.
pub struct PgVersions {
    store: Arc<PostgresStore>,
    changed: Arc<Notify>,
}

impl PgVersions {
    /// Versions on `store`, with a task that LISTENs for changes (and
    /// reconnects, with backoff, when its connection drops).
    pub fn start(store: Arc<PostgresStore>) -> PgVersions {
        let changed = Arc::new(Notify::new());
        tokio::spawn(listen(store.clone(), changed.clone()));
        PgVersions { store, changed }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.store
            .pool()
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }
}

/// Keep a connection LISTENing; wake followers on every notification and
/// after every reconnection (notifications sent meanwhile are lost).
async fn listen(store: Arc<PostgresStore>, changed: Arc<Notify>) {
    let mut wait = Duration::from_millis(100);
    // Runs for the life of the process (the runtime's shutdown ends it).
    loop {
        match store.dedicated().await {
            Ok((client, mut connection)) => {
                let sql = format!("LISTEN {CHANNEL}");
                let ready = {
                    // The connection must be polled for the LISTEN to complete.
                    let mut listening = std::pin::pin!(client.batch_execute(&sql));
                    loop {
                        tokio::select! {
                            outcome = &mut listening => break outcome.map_err(|e| e.to_string()),
                            message = std::future::poll_fn(|cx| connection.poll_message(cx)) => {
                                if message.is_none() {
                                    break Err("connection closed".to_string());
                                }
                            }
                        }
                    }
                };
                match ready {
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot LISTEN for version changes; retrying");
                    }
                    Ok(()) => {
                        wait = Duration::from_millis(100);
                        changed.notify_waiters();
                        loop {
                            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                                Some(Ok(AsyncMessage::Notification(_))) => changed.notify_waiters(),
                                Some(Ok(_)) => {}
                                Some(Err(e)) => {
                                    tracing::debug!(error = %e, "version listener lost its connection");
                                    break;
                                }
                                None => break,
                            }
                        }
                    }
                }
                drop(client);
            }
            Err(e) => tracing::debug!(error = %e, "cannot connect to LISTEN for version changes"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

#[async_trait::async_trait]
impl SharedVersions for PgVersions {
    async fn offer_manifest(&self, offer: Offer<'_>) -> Result<LiveVersion, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        lock(&tx, offer.component).await?;
        let seen = tx
            .query_opt(
                "SELECT 1 FROM component_manifest_seen WHERE component = $1 AND sha256 = $2",
                &[&offer.component, &offer.sha256],
            )
            .await
            .map_err(pg)?
            .is_some();
        let live = read_live(&tx, offer.component).await?;
        let live = match live {
            Some(live) if seen => live,
            _ => {
                tx.execute(
                    "INSERT INTO component_manifest_seen (component, sha256) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&offer.component, &offer.sha256],
                )
                .await
                .map_err(pg)?;
                point(&tx, offer, live).await?
            }
        };
        tx.commit().await.map_err(pg)?;
        Ok(live)
    }

    async fn publish(&self, offer: Offer<'_>) -> Result<LiveVersion, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        lock(&tx, offer.component).await?;
        let live = read_live(&tx, offer.component).await?;
        let live = point(&tx, offer, live).await?;
        tx.commit().await.map_err(pg)?;
        Ok(live)
    }

    async fn rollback(
        &self,
        component: &str,
        replica: &str,
    ) -> Result<Option<LiveVersion>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        lock(&tx, component).await?;
        let Some(live) = read_live(&tx, component).await? else {
            return Ok(None);
        };
        let Some(previous) = live.previous.clone() else {
            return Ok(None);
        };
        let row = tx
            .query_one(
                "UPDATE component_live SET sha256 = $2, previous = $3, changed_at_ms = $4,
                 changed_by = $5 WHERE component = $1
                 RETURNING component, sha256, previous, changed_at_ms, changed_by",
                &[&component, &previous, &live.sha256, &now_ms(), &replica],
            )
            .await
            .map_err(pg)?;
        notify(&tx, component).await?;
        tx.commit().await.map_err(pg)?;
        Ok(Some(live_row(&row)))
    }

    async fn live(&self) -> Result<Vec<LiveVersion>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT component, sha256, previous, changed_at_ms, changed_by
                 FROM component_live ORDER BY component",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(live_row).collect())
    }

    async fn wasm(&self, component: &str, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT wasm FROM component_versions WHERE component = $1 AND sha256 = $2",
                &[&component, &sha256],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|row| row.get(0)))
    }

    async fn changed(&self) {
        self.changed.notified().await;
    }
}

/// Serialise changes to one component's pointers.
async fn lock(tx: &impl GenericClient, component: &str) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&LOCK_CLASS, &component],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

async fn read_live(
    tx: &impl GenericClient,
    component: &str,
) -> Result<Option<LiveVersion>, StoreError> {
    let row = tx
        .query_opt(
            "SELECT component, sha256, previous, changed_at_ms, changed_by
             FROM component_live WHERE component = $1",
            &[&component],
        )
        .await
        .map_err(pg)?;
    Ok(row.as_ref().map(live_row))
}

/// Make the offered version live (unless it is already), keeping the
/// replaced one as previous, storing its wasm, dropping the wasm of
/// versions no pointer names any more, and telling every replica.
async fn point(
    tx: &impl GenericClient,
    offer: Offer<'_>,
    live: Option<LiveVersion>,
) -> Result<LiveVersion, StoreError> {
    if let Some(live) = &live
        && live.sha256 == offer.sha256
    {
        return Ok(live.clone());
    }
    let now = now_ms();
    tx.execute(
        "INSERT INTO component_versions (component, sha256, wasm, uploaded_at_ms, uploaded_by)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (component, sha256) DO NOTHING",
        &[
            &offer.component,
            &offer.sha256,
            &offer.wasm,
            &now,
            &offer.replica,
        ],
    )
    .await
    .map_err(pg)?;
    let previous = live.map(|l| l.sha256);
    let row = tx
        .query_one(
            "INSERT INTO component_live (component, sha256, previous, changed_at_ms, changed_by)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (component) DO UPDATE SET sha256 = $2, previous = $3,
                 changed_at_ms = $4, changed_by = $5
             RETURNING component, sha256, previous, changed_at_ms, changed_by",
            &[
                &offer.component,
                &offer.sha256,
                &previous,
                &now,
                &offer.replica,
            ],
        )
        .await
        .map_err(pg)?;
    tx.execute(
        "DELETE FROM component_versions WHERE component = $1 AND sha256 <> $2
         AND sha256 IS DISTINCT FROM $3",
        &[&offer.component, &offer.sha256, &previous],
    )
    .await
    .map_err(pg)?;
    notify(tx, offer.component).await?;
    Ok(live_row(&row))
}

async fn notify(tx: &impl GenericClient, component: &str) -> Result<(), StoreError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &component])
        .await
        .map_err(pg)?;
    Ok(())
}

fn live_row(row: &Row) -> LiveVersion {
    LiveVersion {
        component: row.get(0),
        sha256: row.get(1),
        previous: row.get(2),
        changed_at_ms: row.get(3),
        changed_by: row.get(4),
    }
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    super::error::store_error(e)
}
