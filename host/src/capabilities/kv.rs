//! `berth:service/kv`: the component's view of its namespace during one
//! request. Writes collect in a [`WriteBatch`] that the dispatcher commits
//! after the handler returns; reads merge that batch over the committed data.

use crate::bindings::berth::service::kv::{Entry, Error, Host};
use crate::invocation::Invocation;
use crate::metrics::metrics;
use crate::store::{
    CounterError, MAX_KEY_LEN, MAX_PAGE, MAX_VALUE_LEN, Store, StoreError, WriteBatch,
};
use std::sync::Arc;
use std::time::Instant;

/// Most distinct keys one request may write.
const MAX_WRITES: usize = 10_000;
/// Most bytes of values one request may write.
const MAX_WRITE_BYTES: usize = 16 * 1024 * 1024;

/// One request's transaction over one namespace.
pub struct KvTxn {
    store: Arc<dyn Store>,
    /// The component's name: every key this transaction touches lives under it.
    ns: Arc<str>,
    batch: WriteBatch,
    write_bytes: usize,
}

impl KvTxn {
    pub fn new(store: Arc<dyn Store>, ns: Arc<str>) -> KvTxn {
        KvTxn {
            store,
            ns,
            batch: WriteBatch::default(),
            write_bytes: 0,
        }
    }

    /// The writes to commit once the handler has returned.
    pub fn into_batch(self) -> WriteBatch {
        self.batch
    }

    /// The value as this request sees it, and whether it came from the store
    /// (as opposed to this request's own writes).
    fn current(&self, key: &str) -> Result<(Option<Vec<u8>>, bool), Error> {
        if let Some(pending) = self.batch.writes.get(key) {
            return Ok((pending.clone(), false));
        }
        Ok((self.store.get(&self.ns, key).map_err(unavailable)?, true))
    }

    fn stage(&mut self, key: String, value: Option<Vec<u8>>) -> Result<(), Error> {
        let added = value.as_ref().map_or(0, Vec::len);
        if self.write_bytes + added > MAX_WRITE_BYTES {
            return Err(Error::Invalid(format!(
                "a request may write at most {MAX_WRITE_BYTES} bytes"
            )));
        }
        if self.batch.writes.len() >= MAX_WRITES && !self.batch.writes.contains_key(&key) {
            return Err(Error::Invalid(format!(
                "a request may write at most {MAX_WRITES} keys"
            )));
        }
        self.write_bytes += added;
        self.batch.writes.insert(key, value);
        Ok(())
    }

    /// Write `new` if the key now holds `expected`, remembering what the store
    /// held so the commit can check that nobody changed it meanwhile.
    fn conditional_write(
        &mut self,
        key: String,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, Error> {
        check_key(&key)?;
        check_value(&new)?;
        let (current, from_store) = self.current(&key)?;
        if from_store {
            self.batch
                .expects
                .entry(key.clone())
                .or_insert_with(|| current.clone());
        }
        if current.as_deref() != expected {
            return Ok(false);
        }
        self.stage(key, Some(new))?;
        Ok(true)
    }

    fn page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let limit = limit.min(MAX_PAGE) as usize;
        let in_range =
            |key: &String| key.starts_with(prefix) && after.is_none_or(|a| key.as_str() > a);
        // Fetch enough committed keys that, after dropping the ones this
        // request deleted, `limit` remain if the store has them.
        let deleted = self
            .batch
            .writes
            .iter()
            .filter(|(k, v)| v.is_none() && in_range(k))
            .count();
        let committed = self
            .store
            .scan(&self.ns, prefix, after, limit + deleted)
            .map_err(unavailable)?;
        let hit_limit = committed.len() == limit + deleted;
        let last_committed = committed.last().map(|(k, _)| k.clone());
        let mut merged: std::collections::BTreeMap<String, Vec<u8>> =
            committed.into_iter().collect();
        for (key, value) in self.batch.writes.iter().filter(|(k, _)| in_range(k)) {
            // Past the last committed key of a full page lie keys the store
            // did not return; leave own writes there for the next page.
            if hit_limit && last_committed.as_ref().is_some_and(|last| key > last) {
                continue;
            }
            match value {
                Some(v) => merged.insert(key.clone(), v.clone()),
                None => merged.remove(key),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }
}

/// Records one operation's kind and latency in the metrics when dropped.
struct OpTimer {
    op: &'static str,
    started: Instant,
}

impl OpTimer {
    fn start(op: &'static str) -> OpTimer {
        OpTimer {
            op,
            started: Instant::now(),
        }
    }
}

impl Drop for OpTimer {
    fn drop(&mut self) {
        metrics().kv(self.op, self.started.elapsed());
    }
}

fn unavailable(e: StoreError) -> Error {
    Error::Unavailable(e.0)
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::Invalid("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::Invalid(format!(
            "key is {} bytes; the limit is {MAX_KEY_LEN}",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(value: &[u8]) -> Result<(), Error> {
    if value.len() > MAX_VALUE_LEN {
        return Err(Error::Invalid(format!(
            "value is {} bytes; the limit is {MAX_VALUE_LEN}",
            value.len()
        )));
    }
    Ok(())
}

impl Host for Invocation {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        let _timer = OpTimer::start("get");
        check_key(&key)?;
        Ok(self.kv.current(&key)?.0)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        let _timer = OpTimer::start("set");
        check_key(&key)?;
        check_value(&value)?;
        self.kv.stage(key, Some(value))
    }

    fn delete(&mut self, key: String) -> Result<bool, Error> {
        let _timer = OpTimer::start("delete");
        check_key(&key)?;
        let (current, from_store) = self.kv.current(&key)?;
        // The answer is a read the commit re-checks, as for `insert`: of two
        // concurrent deletes only one may find the key, or both callers
        // would act on a deletion that happened once.
        if from_store {
            self.kv
                .batch
                .expects
                .entry(key.clone())
                .or_insert_with(|| current.clone());
        }
        self.kv.stage(key, None)?;
        Ok(current.is_some())
    }

    fn list_keys(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        let _timer = OpTimer::start("list_keys");
        let page = self.kv.page(&prefix, start_after.as_deref(), limit)?;
        Ok(page.into_iter().map(|(k, _)| k).collect())
    }

    fn scan(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Entry>, Error> {
        let _timer = OpTimer::start("scan");
        let page = self.kv.page(&prefix, start_after.as_deref(), limit)?;
        Ok(page
            .into_iter()
            .map(|(key, value)| Entry { key, value })
            .collect())
    }

    fn insert(&mut self, key: String, value: Vec<u8>) -> Result<bool, Error> {
        let _timer = OpTimer::start("insert");
        self.kv.conditional_write(key, None, value)
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, Error> {
        let _timer = OpTimer::start("compare_and_swap");
        self.kv.conditional_write(key, expected.as_deref(), new)
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        let _timer = OpTimer::start("increment");
        check_key(&key)?;
        if self.kv.batch.writes.contains_key(&key) {
            return Err(Error::Invalid(format!(
                "key `{key}` was written in this request and cannot also be a counter"
            )));
        }
        self.kv
            .store
            .increment(&self.kv.ns, &key, delta)
            .await
            .map_err(|e| match e {
                CounterError::Invalid(msg) => Error::Invalid(msg),
                CounterError::Store(e) => unavailable(e),
            })
    }
}
