//! `berth:service/kv`: the component's view of its namespace during one
//! request. Writes collect in a [`WriteBatch`] that the dispatcher commits
//! after the handler returns; reads merge that batch over the committed data.

use crate::bindings::berth::service::kv::{Entry, Error, Host};
use crate::invocation::Invocation;
use crate::metrics::metrics;
use crate::store::{
    CounterError, MAX_KEY_LEN, MAX_PAGE, MAX_SCAN_BYTES, MAX_VALUE_LEN, Scan, Store, StoreError,
    WriteBatch,
};
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;

/// Most distinct keys one request may write.
const MAX_WRITES: usize = 10_000;
/// Most bytes of values one request may write.
const MAX_WRITE_BYTES: usize = 16 * 1024 * 1024;
/// Most bytes of keys and values one request may read (`get`, `scan`,
/// `list-keys`), so no request can make the host copy the whole store.
const MAX_READ_BYTES: usize = 32 * 1024 * 1024;

/// One request's transaction over one namespace.
pub struct KvTxn {
    store: Arc<dyn Store>,
    /// The component's name: every key this transaction touches lives under it.
    ns: Arc<str>,
    batch: WriteBatch,
    write_bytes: usize,
    /// Bytes handed to the component so far, against [`MAX_READ_BYTES`].
    read_bytes: usize,
}

impl KvTxn {
    pub fn new(store: Arc<dyn Store>, ns: Arc<str>) -> KvTxn {
        KvTxn {
            store,
            ns,
            batch: WriteBatch::default(),
            write_bytes: 0,
            read_bytes: 0,
        }
    }

    /// The store this transaction commits into.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The namespace this transaction reads and writes.
    pub(crate) fn namespace(&self) -> &Arc<str> {
        &self.ns
    }

    /// The writes staged so far, leaving the transaction open for more: a
    /// `berth:service` request takes them once its handler has returned, a
    /// `wasi:http` one at its response and again at its end. The write
    /// limits keep counting over the whole request.
    pub(crate) fn take_batch(&mut self) -> WriteBatch {
        std::mem::take(&mut self.batch)
    }

    /// `key`'s value as this request sees it, counted against the read budget.
    pub(crate) async fn read(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        check_key(key)?;
        self.read_budget()?;
        let value = self.current(key).await?.0;
        self.read_bytes += value.as_ref().map_or(0, Vec::len);
        Ok(value)
    }

    /// Stage a write (`None` deletes) that commits with the request.
    pub(crate) fn write(&mut self, key: String, value: Option<Vec<u8>>) -> Result<(), Error> {
        check_key(&key)?;
        if let Some(value) = &value {
            check_value(value)?;
        }
        self.stage(key, value)
    }

    /// The store's atomic `increment`, which commits at once; refused for
    /// a key this request has staged a write to.
    pub(crate) async fn add(&mut self, key: &str, delta: i64) -> Result<i64, Error> {
        check_key(key)?;
        if self.batch.writes.contains_key(key) {
            return Err(Error::Invalid(format!(
                "key `{key}` was written in this request and cannot also be a counter"
            )));
        }
        self.store
            .increment(&self.ns, key, delta)
            .await
            .map_err(|e| match e {
                CounterError::Invalid(msg) => Error::Invalid(msg),
                CounterError::Store(e) => unavailable(e),
            })
    }

    /// One page of keys after `after`, as `list-keys` pages them.
    pub(crate) async fn key_page(
        &mut self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        let page = self.page("", after, limit, false).await?;
        Ok(page.into_iter().map(|(k, _)| k).collect())
    }

    /// The value as this request sees it, and whether it came from the store
    /// (as opposed to this request's own writes).
    async fn current(&self, key: &str) -> Result<(Option<Vec<u8>>, bool), Error> {
        if let Some(pending) = self.batch.writes.get(key) {
            return Ok((pending.clone(), false));
        }
        Ok((
            self.store.get(&self.ns, key).await.map_err(unavailable)?,
            true,
        ))
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
    async fn conditional_write(
        &mut self,
        key: String,
        expected: Option<&[u8]>,
        new: Vec<u8>,
    ) -> Result<bool, Error> {
        check_key(&key)?;
        check_value(&new)?;
        let (current, from_store) = self.current(&key).await?;
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

    /// Refuse a read once the request has read its share of the store.
    fn read_budget(&self) -> Result<usize, Error> {
        match MAX_READ_BYTES.checked_sub(self.read_bytes) {
            Some(left) if left > 0 => Ok(left),
            _ => Err(Error::Invalid(format!(
                "a request may read at most {MAX_READ_BYTES} bytes from the store; \
                 page through large ranges over several requests"
            ))),
        }
    }

    /// One page of the range as this request sees it: the committed entries
    /// with this request's own writes merged over them, at most `limit`
    /// entries and [`MAX_SCAN_BYTES`] of keys (and values, when `values`),
    /// though always the first entry if there is one.
    async fn page(
        &mut self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
        values: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, Error> {
        let limit = limit.min(MAX_PAGE) as usize;
        let budget = self.read_budget()?.min(MAX_SCAN_BYTES);
        let mut page = Vec::new();
        let mut bytes = 0usize;
        let mut cursor = after.map(str::to_owned);
        while page.len() < limit {
            // Ask the store for what is still missing; own writes may fill
            // the page first, and what they leave unused costs one entry.
            let chunk = self
                .store
                .scan(
                    &self.ns,
                    &Scan {
                        prefix,
                        after: cursor.as_deref(),
                        limit: limit - page.len(),
                        max_bytes: budget.saturating_sub(bytes).max(1),
                        values,
                    },
                )
                .await
                .map_err(unavailable)?;
            // Own writes up to the chunk's last key belong to this stretch;
            // past it lie committed keys the store has not returned yet,
            // unless the range is exhausted.
            let upto = if chunk.more {
                chunk.entries.last().map(|(k, _)| k.clone())
            } else {
                None
            };
            let own = self.own_writes(prefix, cursor.as_deref(), upto.as_deref());
            let merged = merge(chunk.entries, own);
            for (key, value) in merged {
                let size = key.len() + if values { value.len() } else { 0 };
                if page.len() == limit || (!page.is_empty() && bytes + size > budget) {
                    self.read_bytes += bytes;
                    return Ok(page);
                }
                bytes += size;
                page.push((key, value));
            }
            match upto {
                Some(last) => cursor = Some(last),
                None => break,
            }
        }
        self.read_bytes += bytes;
        Ok(page)
    }

    /// This request's writes to keys in `prefix` after `after` and up to
    /// `upto` (to the end of the range when `None`), in key order.
    fn own_writes(
        &self,
        prefix: &str,
        after: Option<&str>,
        upto: Option<&str>,
    ) -> Vec<(String, Option<Vec<u8>>)> {
        let from = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        self.batch
            .writes
            .range::<str, _>((from, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix) && upto.is_none_or(|u| k.as_str() <= u))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Merge committed entries with own writes (both in key order): an own
/// write replaces the committed value, and an own delete hides the key.
fn merge(
    committed: Vec<(String, Vec<u8>)>,
    own: Vec<(String, Option<Vec<u8>>)>,
) -> Vec<(String, Vec<u8>)> {
    if own.is_empty() {
        return committed;
    }
    let mut merged = std::collections::BTreeMap::new();
    for (key, value) in committed {
        merged.insert(key, Some(value));
    }
    for (key, value) in own {
        merged.insert(key, value);
    }
    merged
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// Records one operation's kind and latency in the metrics when dropped.
pub(crate) struct OpTimer {
    op: &'static str,
    started: Instant,
}

impl OpTimer {
    pub(crate) fn start(op: &'static str) -> OpTimer {
        debug_assert!(
            crate::metrics::KV_OPS.contains(&op),
            "add `{op}` to metrics::KV_OPS"
        );
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
    Error::Unavailable(e.to_string())
}

fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::Invalid("key must not be empty".into()));
    }
    if key.contains('\0') {
        return Err(Error::Invalid(
            "key must not contain U+0000 (NUL), which not every store can hold".into(),
        ));
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
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        let _timer = OpTimer::start("get");
        self.kv.read(&key).await
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        let _timer = OpTimer::start("set");
        self.kv.write(key, Some(value))
    }

    async fn delete(&mut self, key: String) -> Result<bool, Error> {
        let _timer = OpTimer::start("delete");
        check_key(&key)?;
        let (current, from_store) = self.kv.current(&key).await?;
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

    async fn list_keys(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<Vec<String>, Error> {
        let _timer = OpTimer::start("list_keys");
        let page = self
            .kv
            .page(&prefix, start_after.as_deref(), limit, false)
            .await?;
        Ok(page.into_iter().map(|(k, _)| k).collect())
    }

    async fn scan(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<Vec<Entry>, Error> {
        let _timer = OpTimer::start("scan");
        let page = self
            .kv
            .page(&prefix, start_after.as_deref(), limit, true)
            .await?;
        Ok(page
            .into_iter()
            .map(|(key, value)| Entry { key, value })
            .collect())
    }

    async fn insert(&mut self, key: String, value: Vec<u8>) -> Result<bool, Error> {
        let _timer = OpTimer::start("insert");
        self.kv.conditional_write(key, None, value).await
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<bool, Error> {
        let _timer = OpTimer::start("compare_and_swap");
        self.kv
            .conditional_write(key, expected.as_deref(), new)
            .await
    }

    async fn increment(&mut self, key: String, delta: i64) -> Result<i64, Error> {
        let _timer = OpTimer::start("increment");
        self.kv.add(&key, delta).await
    }
}
