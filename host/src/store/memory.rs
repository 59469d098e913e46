//! An in-memory [`Store`] with the same semantics as the durable one, for
//! component unit tests and anything else that must not touch the disk.

use super::versions::{LiveVersion, Offer, SharedVersions};
use super::{
    Commit, CounterError, DELIVERY_LEASE_MS, Delivery, NewEvent, Outbox, Retry, Scan, ScanPage,
    Store, StoreError, WriteBatch, add_to_counter, now_ms,
};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Keys are `(namespace, key)`, so one map serves every component in isolation.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<BTreeMap<(String, String), Vec<u8>>>,
    outbox: Mutex<Deliveries>,
}

#[derive(Debug, Default)]
struct Deliveries {
    /// Every event ever committed, in order, for tests to inspect.
    published: Vec<NewEvent>,
    /// Pending and dead deliveries, with their due time (pushed past a
    /// lease while claimed) and dead flag.
    deliveries: Vec<(Delivery, i64, bool)>,
    next_id: i64,
    /// `(namespace, event id)` of every event a batch applied, with when.
    applied: BTreeMap<(String, String), i64>,
}

impl Deliveries {
    /// One pending delivery of `event` per recipient, due now.
    fn publish(&mut self, event: NewEvent) -> Vec<Delivery> {
        let mut added = Vec::new();
        for recipient in &event.recipients {
            self.next_id += 1;
            let delivery = Delivery {
                id: self.next_id,
                event_id: event.id.clone(),
                topic: event.topic.clone(),
                payload: event.payload.clone(),
                source: event.source.clone(),
                recipient: recipient.clone(),
                attempts: 0,
                last_error: None,
            };
            self.deliveries.push((delivery.clone(), now_ms(), false));
            added.push(delivery);
        }
        self.published.push(event);
        added
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn data(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Vec<u8>>> {
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set a key directly, outside any request (for seeding tests).
    pub fn put(&self, ns: &str, key: &str, value: &[u8]) {
        self.data()
            .insert((ns.to_string(), key.to_string()), value.to_vec());
    }

    /// Remove a key directly, outside any request (for tests).
    pub fn remove(&self, ns: &str, key: &str) {
        self.data().remove(&(ns.to_string(), key.to_string()));
    }

    /// Publish `event` outside any request, as a committed batch would,
    /// and return its deliveries (for tests that deliver by hand).
    pub fn enqueue(&self, event: NewEvent) -> Vec<Delivery> {
        self.outbox().publish(event)
    }

    /// The value of a key, read outside any request (for tests).
    pub fn value(&self, ns: &str, key: &str) -> Option<Vec<u8>> {
        self.data().get(&(ns.to_string(), key.to_string())).cloned()
    }

    /// Every event committed so far, recipients or not, oldest first.
    pub fn published(&self) -> Vec<NewEvent> {
        self.outbox().published.clone()
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every key of a namespace, with its value.
    pub fn entries(&self, ns: &str) -> Vec<(String, Vec<u8>)> {
        self.data()
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[async_trait::async_trait]
impl Store for MemoryStore {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data().get(&(ns.to_string(), key.to_string())).cloned())
    }

    async fn scan(&self, ns: &str, scan: &Scan<'_>) -> Result<ScanPage, StoreError> {
        let start = (ns.to_string(), scan.prefix.to_string());
        let data = self.data();
        let range = data
            .range(start..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(scan.prefix))
            .filter(|((_, k), _)| scan.after.is_none_or(|a| k.as_str() > a));
        let mut page = ScanPage::default();
        let mut bytes = 0;
        for ((_, key), value) in range {
            let value_len = if scan.values { value.len() } else { 0 };
            if !page.admit(scan, &mut bytes, key.len() + value_len) {
                break;
            }
            let value = if scan.values {
                value.clone()
            } else {
                Vec::new()
            };
            page.entries.push((key.clone(), value));
        }
        Ok(page)
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, CounterError> {
        let mut data = self.data();
        let slot = (ns.to_string(), key.to_string());
        let next = add_to_counter(data.get(&slot).map(Vec::as_slice), delta);
        if let Ok(next) = next {
            data.insert(slot, next.to_string().into_bytes());
        }
        next
    }

    async fn commit(&self, ns: &str, batch: WriteBatch) -> Result<Commit, StoreError> {
        let mut data = self.data();
        let slot = |key: &str| (ns.to_string(), key.to_string());
        let conflict = batch
            .expects
            .iter()
            .find(|(key, expected)| data.get(&slot(key)) != expected.as_ref());
        let pending = |id| {
            self.outbox()
                .deliveries
                .iter()
                .any(|(d, _, dead)| d.id == id && !dead)
        };
        let applied = |event_id: &String| {
            self.outbox()
                .applied
                .contains_key(&(ns.to_string(), event_id.clone()))
        };
        let outcome = match conflict {
            _ if batch.applies.as_ref().is_some_and(applied) => Commit::AlreadyDelivered,
            Some((key, _)) => Commit::Conflict(key.clone()),
            None if batch.completes.is_some_and(|id| !pending(id)) => Commit::AlreadyDelivered,
            None => {
                for (key, value) in batch.writes {
                    match value {
                        Some(value) => data.insert(slot(&key), value),
                        None => data.remove(&slot(&key)),
                    };
                }
                let mut outbox = self.outbox();
                for event in batch.events {
                    outbox.publish(event);
                }
                if let Some(id) = batch.completes {
                    outbox.deliveries.retain(|(d, _, _)| d.id != id);
                }
                if let Some(event_id) = batch.applies {
                    outbox.applied.insert((ns.to_string(), event_id), now_ms());
                }
                Commit::Done
            }
        };
        Ok(outcome)
    }
}

#[async_trait::async_trait]
impl Outbox for MemoryStore {
    async fn claim_due(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut outbox = self.outbox();
        let mut due: Vec<_> = outbox
            .deliveries
            .iter_mut()
            .filter(|(_, at, dead)| !dead && *at <= now_ms)
            .collect();
        due.sort_by_key(|(d, at, _)| (*at, d.id));
        Ok(due
            .into_iter()
            .take(limit)
            .map(|(d, at, _)| {
                *at = now_ms + DELIVERY_LEASE_MS;
                d.clone()
            })
            .collect())
    }

    async fn fail_delivery(&self, id: i64, error: &str, retry: Retry) -> Result<(), StoreError> {
        let mut outbox = self.outbox();
        if let Some((delivery, at, dead)) =
            outbox.deliveries.iter_mut().find(|(d, _, _)| d.id == id)
        {
            delivery.attempts += 1;
            delivery.last_error = Some(error.to_string());
            match retry {
                Retry::At(next) => *at = next,
                Retry::DeadLetter => *dead = true,
            }
        }
        Ok(())
    }

    async fn dead_letters(&self) -> Result<Vec<Delivery>, StoreError> {
        Ok(self
            .outbox()
            .deliveries
            .iter()
            .filter(|(_, _, dead)| *dead)
            .map(|(d, _, _)| d.clone())
            .collect())
    }

    async fn retry_dead_letter(&self, id: i64) -> Result<bool, StoreError> {
        let mut outbox = self.outbox();
        match outbox
            .deliveries
            .iter_mut()
            .find(|(d, _, dead)| d.id == id && *dead)
        {
            Some((delivery, at, dead)) => {
                delivery.attempts = 0;
                *at = now_ms();
                *dead = false;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn complete(&self, id: i64) -> Result<bool, StoreError> {
        let mut outbox = self.outbox();
        let before = outbox.deliveries.len();
        outbox.deliveries.retain(|(d, _, dead)| d.id != id || *dead);
        Ok(outbox.deliveries.len() < before)
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        let outbox = self.outbox();
        let live = outbox.deliveries.iter().filter(|(_, _, dead)| !dead);
        Ok(u64::try_from(live.count()).unwrap_or(u64::MAX))
    }

    async fn applied(&self, ns: &str, event_id: &str) -> Result<bool, StoreError> {
        let record = (ns.to_string(), event_id.to_string());
        Ok(self.outbox().applied.contains_key(&record))
    }

    async fn prune_applied(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut outbox = self.outbox();
        let before = outbox.applied.len();
        outbox.applied.retain(|_, at| *at >= before_ms);
        Ok(u64::try_from(before - outbox.applied.len()).unwrap_or(u64::MAX))
    }
}

/// [`SharedVersions`] in memory, for tests of several replicas in one
/// process: share one between several `App`s.
#[derive(Debug, Default)]
pub struct MemoryVersions {
    state: Mutex<VersionsState>,
    changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct VersionsState {
    live: BTreeMap<String, LiveVersion>,
    wasm: BTreeMap<(String, String), Vec<u8>>,
    seen: std::collections::BTreeSet<(String, String)>,
}

impl MemoryVersions {
    pub fn new() -> MemoryVersions {
        MemoryVersions::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, VersionsState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl VersionsState {
    /// Make the offered version live, as the PostgreSQL backend does.
    fn point(&mut self, offer: Offer<'_>) -> LiveVersion {
        let current = self.live.get(offer.component).cloned();
        if let Some(live) = &current
            && live.sha256 == offer.sha256
        {
            return live.clone();
        }
        self.wasm.insert(
            (offer.component.to_string(), offer.sha256.to_string()),
            offer.wasm.to_vec(),
        );
        let live = LiveVersion {
            component: offer.component.to_string(),
            sha256: offer.sha256.to_string(),
            previous: current.map(|l| l.sha256),
            changed_at_ms: now_ms(),
            changed_by: offer.replica.to_string(),
        };
        self.live.insert(offer.component.to_string(), live.clone());
        live
    }
}

#[async_trait::async_trait]
impl SharedVersions for MemoryVersions {
    async fn offer_manifest(&self, offer: Offer<'_>) -> Result<LiveVersion, StoreError> {
        let live = {
            let mut state = self.state();
            let seen = !state
                .seen
                .insert((offer.component.to_string(), offer.sha256.to_string()));
            match state.live.get(offer.component) {
                Some(live) if seen => return Ok(live.clone()),
                _ => state.point(offer),
            }
        };
        self.changed.notify_waiters();
        Ok(live)
    }

    async fn publish(&self, offer: Offer<'_>) -> Result<LiveVersion, StoreError> {
        let live = self.state().point(offer);
        self.changed.notify_waiters();
        Ok(live)
    }

    async fn rollback(
        &self,
        component: &str,
        replica: &str,
    ) -> Result<Option<LiveVersion>, StoreError> {
        let live = {
            let mut state = self.state();
            let Some(live) = state.live.get_mut(component) else {
                return Ok(None);
            };
            let Some(previous) = live.previous.take() else {
                return Ok(None);
            };
            live.previous = Some(std::mem::replace(&mut live.sha256, previous));
            live.changed_at_ms = now_ms();
            live.changed_by = replica.to_string();
            live.clone()
        };
        self.changed.notify_waiters();
        Ok(Some(live))
    }

    async fn live(&self) -> Result<Vec<LiveVersion>, StoreError> {
        Ok(self.state().live.values().cloned().collect())
    }

    async fn wasm(&self, component: &str, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .state()
            .wasm
            .get(&(component.to_string(), sha256.to_string()))
            .cloned())
    }

    async fn changed(&self) {
        self.changed.notified().await;
    }
}
