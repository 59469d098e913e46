//! Typed JSON records over the key-value import: a [`Collection`] keeps
//! records under `name/<zero-padded id>` so that key order is id order, and
//! allocates ids from a counter without races.

use crate::http::{self, Result};
use crate::kv;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest id a client may choose: 2^53 - 1, the largest integer every
/// JSON parser represents exactly, far below the counter's `i64` limit.
pub const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Keys fetched per `scan` call; the host caps pages at 1000 (and 1 MiB).
const PAGE: u32 = 500;

/// Most bytes of stored records one listing page returns (one record may be
/// larger on its own): far below the host's 16 MiB response cap, and small
/// enough that a page costs the host and the instance little memory.
pub const PAGE_BYTES: usize = 1024 * 1024;

/// Most records one listing page looks at, kept or not: a filter that
/// keeps few records costs a bounded amount per page, and the client
/// follows the cursor for the rest.
pub const PAGE_EXAMINED: usize = 5000;
/// Most bytes of records one listing page reads, kept or not.
pub const PAGE_EXAMINED_BYTES: usize = 8 * 1024 * 1024;

/// One page of a listing.
#[derive(Debug)]
pub struct Page<T> {
    /// The records, in id order.
    pub records: Vec<T>,
    /// Where the next page starts (pass it as `after`); `None` on the last
    /// page. A page may hold fewer records than asked for, even none, and
    /// still have a next one.
    pub next: Option<u64>,
}

thread_local! {
    /// The collections whose seeding marker this instance has found.
    static SEEN_SEEDED: std::cell::RefCell<Vec<&'static str>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// A named set of JSON records addressed by positive 64-bit ids.
#[derive(Debug, Clone, Copy)]
pub struct Collection {
    name: &'static str,
}

impl Collection {
    /// The collection `name`: its records live under keys `NAME/ID` (the id
    /// zero-padded to 20 digits, so keys sort as ids do), and
    /// its id counter under `meta/NAME/next-id`.
    pub const fn new(name: &'static str) -> Self {
        Collection { name }
    }

    fn key(&self, id: u64) -> String {
        format!("{}/{id:020}", self.name)
    }

    fn counter(&self) -> String {
        format!("meta/{}/next-id", self.name)
    }

    /// The record with `id`, with its raw bytes for a later compare-and-swap.
    pub fn get<T: DeserializeOwned>(&self, id: u64) -> Result<Option<(T, Vec<u8>)>> {
        match kv::get(&self.key(id)).map_err(store_error)? {
            None => Ok(None),
            Some(raw) => Ok(Some((decode(&raw)?, raw))),
        }
    }

    /// Every record, in id order. Its cost grows with the collection: lists
    /// that clients ask for go through [`Collection::page`].
    pub fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        let prefix = format!("{}/", self.name);
        let mut records = Vec::new();
        let mut after = None;
        loop {
            // A page may end early at the host's byte cap; only an empty
            // one ends the range.
            let page = kv::scan(&prefix, after.as_deref(), PAGE).map_err(store_error)?;
            let Some(last) = page.last() else {
                return Ok(records);
            };
            after = Some(last.key.clone());
            for entry in &page {
                records.push(decode(&entry.value)?);
            }
        }
    }

    /// Up to `limit` records with ids above `after` that `keep` accepts, in
    /// id order. The page ends early once its records reach [`PAGE_BYTES`],
    /// or once it has looked at [`PAGE_EXAMINED`] records, so its cost does
    /// not grow with the collection.
    pub fn page<T: DeserializeOwned>(
        &self,
        after: u64,
        limit: usize,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Page<T>> {
        let prefix = format!("{}/", self.name);
        let mut cursor = self.key(after);
        let mut records = Vec::new();
        let (mut bytes, mut examined, mut examined_bytes) = (0, 0, 0);
        loop {
            // One entry past what the page still needs tells whether there
            // is a next page.
            let want = (limit.saturating_sub(records.len()) + 1).clamp(100, PAGE as usize);
            let entries =
                kv::scan(&prefix, Some(cursor.as_str()), want as u32).map_err(store_error)?;
            if entries.is_empty() {
                return Ok(Page {
                    records,
                    next: None,
                });
            }
            for entry in entries {
                let size = entry.value.len();
                let full = records.len() >= limit
                    || (!records.is_empty() && bytes + size > PAGE_BYTES)
                    || examined >= PAGE_EXAMINED
                    || (examined > 0 && examined_bytes + size > PAGE_EXAMINED_BYTES);
                if full {
                    return Ok(Page {
                        records,
                        next: Some(self.id_of(&cursor)?),
                    });
                }
                examined += 1;
                examined_bytes += size;
                let record = decode(&entry.value)?;
                if keep(&record) {
                    bytes += size;
                    records.push(record);
                }
                cursor = entry.key;
            }
        }
    }

    /// The id a record key holds.
    fn id_of(&self, key: &str) -> Result<u64> {
        key.strip_prefix(self.name)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| http::error(500, &format!("stored key `{key}` holds no id")))
    }

    /// Store `record` under `id` unless that id is taken. Returns whether it
    /// was stored. Ids above [`MAX_CLIENT_ID`] are refused with 400: the id
    /// counter must keep room to allocate after them.
    pub fn insert<T: Serialize>(&self, id: u64, record: &T) -> Result<bool> {
        if id > MAX_CLIENT_ID {
            return Err(http::error(
                400,
                &format!("field `id` must be at most {MAX_CLIENT_ID}"),
            ));
        }
        let stored = kv::insert(&self.key(id), &encode(record)?).map_err(store_error)?;
        if stored {
            self.raise_counter_to(id)?;
        }
        Ok(stored)
    }

    /// Allocate the next free id, build the record for it and store it.
    pub fn create<T: Serialize>(&self, make: impl Fn(u64) -> T) -> Result<T> {
        // A client may have taken ids ahead of the counter; skip those. The
        // bound keeps a corrupted counter from looping until the deadline.
        for _ in 0..1000 {
            let id = kv::increment(&self.counter(), 1).map_err(store_error)?;
            let id = u64::try_from(id).map_err(|_| http::error(500, "id counter is negative"))?;
            let record = make(id);
            if kv::insert(&self.key(id), &encode(&record)?).map_err(store_error)? {
                return Ok(record);
            }
        }
        Err(http::error(503, "could not allocate a free id; try again"))
    }

    /// Replace the record `id` if it still holds `previous`. Returns whether it did.
    pub fn replace<T: Serialize>(&self, id: u64, previous: &[u8], record: &T) -> Result<bool> {
        kv::compare_and_swap(&self.key(id), Some(previous), &encode(record)?).map_err(store_error)
    }

    /// Remove record `id`. Returns whether it existed.
    pub fn delete(&self, id: u64) -> Result<bool> {
        kv::delete(&self.key(id)).map_err(store_error)
    }

    /// Store `records` once, the first time any request sees this collection.
    /// A deleted sample record stays deleted: a marker remembers the seeding.
    ///
    /// The marker is never removed, so an instance that has found it once
    /// remembers that and skips the read on its later calls: a component
    /// with `reuse` in its manifest saves a store read per call. (A fresh
    /// instance per call starts with nothing remembered, and reads it.)
    pub fn seed<T: Serialize>(&self, records: &[(u64, T)]) -> Result<()> {
        if SEEN_SEEDED.with_borrow(|seen| seen.contains(&self.name)) {
            return Ok(());
        }
        let marker = format!("meta/{}/seeded", self.name);
        if kv::get(&marker).map_err(store_error)?.is_some() {
            // Only a marker found, never one this call wrote: the call's
            // writes may yet fail to commit, and the seeding with them.
            SEEN_SEEDED.with_borrow_mut(|seen| seen.push(self.name));
            return Ok(());
        }
        // `insert` is re-checked at commit, so two first requests racing
        // here cannot both seed: the loser is run again and sees the marker.
        if kv::insert(&marker, b"1").map_err(store_error)? {
            for (id, record) in records {
                self.insert(*id, record)?;
            }
        }
        Ok(())
    }

    /// Make sure the counter never hands out `id` or anything below it.
    fn raise_counter_to(&self, id: u64) -> Result<()> {
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        let current = kv::increment(&self.counter(), 0).map_err(store_error)?;
        if current < id {
            kv::increment(&self.counter(), id - current).map_err(store_error)?;
        }
        Ok(())
    }
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(record)
        .map_err(|e| http::error(500, &format!("could not encode record: {e}")))
}

fn decode<T: DeserializeOwned>(raw: &[u8]) -> Result<T> {
    serde_json::from_slice(raw)
        .map_err(|e| http::error(500, &format!("stored record is corrupt: {e}")))
}

/// Map a store failure to the response the client should see.
pub fn store_error(e: kv::Error) -> crate::Response {
    match e {
        kv::Error::Invalid(msg) => http::error(400, &msg),
        kv::Error::Unavailable(msg) => http::error(503, &format!("store unavailable: {msg}")),
    }
}
