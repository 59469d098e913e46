//! An in-memory [`Store`] with the same semantics as the durable one, for
//! component unit tests and anything else that must not touch the disk.

use super::{Commit, CounterError, PendingCommit, Store, StoreError, WriteBatch, add_to_counter};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Keys are `(namespace, key)`, so one map serves every component in isolation.
#[derive(Debug, Default)]
pub struct MemoryStore {
    data: Mutex<BTreeMap<(String, String), Vec<u8>>>,
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

    /// Every key of a namespace, with its value.
    pub fn entries(&self, ns: &str) -> Vec<(String, Vec<u8>)> {
        self.data()
            .iter()
            .filter(|((n, _), _)| n == ns)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect()
    }
}

impl Store for MemoryStore {
    fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data().get(&(ns.to_string(), key.to_string())).cloned())
    }

    fn scan(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let start = (ns.to_string(), prefix.to_string());
        Ok(self
            .data()
            .range(start..)
            .take_while(|((n, k), _)| n == ns && k.starts_with(prefix))
            .filter(|((_, k), _)| after.is_none_or(|a| k.as_str() > a))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, CounterError> {
        let mut data = self.data();
        let slot = (ns.to_string(), key.to_string());
        let next = add_to_counter(data.get(&slot).map(Vec::as_slice), delta)?;
        data.insert(slot, next.to_string().into_bytes());
        Ok(next)
    }

    fn commit(&self, ns: &str, batch: WriteBatch) -> PendingCommit {
        let mut data = self.data();
        let slot = |key: &str| (ns.to_string(), key.to_string());
        let conflict = batch
            .expects
            .iter()
            .find(|(key, expected)| data.get(&slot(key)) != expected.as_ref());
        let outcome = match conflict {
            Some((key, _)) => Commit::Conflict(key.clone()),
            None => {
                for (key, value) in batch.writes {
                    match value {
                        Some(value) => data.insert(slot(&key), value),
                        None => data.remove(&slot(&key)),
                    };
                }
                Commit::Done
            }
        };
        Box::pin(std::future::ready(Ok(outcome)))
    }
}
