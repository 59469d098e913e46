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

/// Keys fetched per `scan` call; the host caps pages at 1000.
const PAGE: u32 = 500;

/// A named set of JSON records addressed by positive 64-bit ids.
#[derive(Debug, Clone, Copy)]
pub struct Collection {
    name: &'static str,
}

impl Collection {
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

    /// Every record, in id order.
    pub fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>> {
        let prefix = format!("{}/", self.name);
        let mut records = Vec::new();
        let mut after = None;
        loop {
            let page = kv::scan(&prefix, after.as_deref(), PAGE).map_err(store_error)?;
            for entry in &page {
                records.push(decode(&entry.value)?);
            }
            if page.len() < PAGE as usize {
                return Ok(records);
            }
            after = page.last().map(|e| e.key.clone());
        }
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
    pub fn seed<T: Serialize>(&self, records: &[(u64, T)]) -> Result<()> {
        let marker = format!("meta/{}/seeded", self.name);
        if kv::get(&marker).map_err(store_error)?.is_some() {
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
