//! Component versions kept in a store that several replicas share, so a
//! hot swap through one replica's admin API reaches every replica, and a
//! replica that starts later serves what the others serve.
//!
//! Per component the store keeps every version it was given (the wasm, its
//! SHA-256, when and through which replica it came) and a live pointer with
//! the previous one, for rollback. Changing the pointer tells every
//! replica ([`SharedVersions::changed`]); each compiles the new live version
//! off the request path and swaps it in (see `fleet.rs`).

use super::StoreError;

/// The version a component's live pointer names in the shared store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveVersion {
    pub component: String,
    /// Hex SHA-256 of the live wasm.
    pub sha256: String,
    /// The version a rollback would restore.
    pub previous: Option<String>,
    /// When the live pointer last changed (ms since the Unix epoch).
    pub changed_at_ms: i64,
    /// The replica whose admin API (or start-up) made the change.
    pub changed_by: String,
}

/// What a replica offers as a component's version.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    pub component: &'a str,
    pub sha256: &'a str,
    pub wasm: &'a [u8],
    /// The replica offering it, for the record.
    pub replica: &'a str,
}

/// Versions shared by every replica on one store.
#[async_trait::async_trait]
pub trait SharedVersions: Send + Sync + 'static {
    /// Start-up: the version this replica's manifest names. The first
    /// replica to offer a component records it as live. A version the store
    /// has never seen from a manifest (a new deployment's file) becomes
    /// live too; one it has seen before (a replica of an older deployment
    /// restarting) does not displace what is live. Returns the live version.
    async fn offer_manifest(&self, offer: Offer<'_>) -> Result<LiveVersion, StoreError>;

    /// An upload: record the version and make it live, the live one
    /// becoming the previous one, and tell every replica.
    async fn publish(&self, offer: Offer<'_>) -> Result<LiveVersion, StoreError>;

    /// Swap the live and previous versions and tell every replica; `None`
    /// if there is no previous version.
    async fn rollback(
        &self,
        component: &str,
        replica: &str,
    ) -> Result<Option<LiveVersion>, StoreError>;

    /// Every component's live version.
    async fn live(&self) -> Result<Vec<LiveVersion>, StoreError>;

    /// The wasm of one recorded version.
    async fn wasm(&self, component: &str, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Resolves when a live pointer may have changed: a notification from
    /// another replica, or a reconnection after which notifications may
    /// have been missed. Callers also look every few seconds regardless.
    async fn changed(&self);
}
