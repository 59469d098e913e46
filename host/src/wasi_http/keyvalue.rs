//! `wasi:keyvalue@0.2.0-draft` (`store`, `atomics`, `batch`) for `wasi:http`
//! components, over the component's own namespace in Berth's store. It is
//! the same transaction `berth:service/kv` uses ([`KvTxn`]): writes are
//! staged and commit together, reads see the request's own writes, and
//! `increment` is the store's atomic, at-once counter.
//!
//! A `wasi:http` response's headers may leave while the guest still runs,
//! so a request commits twice: what it staged before it set its response
//! commits before the headers go out, and what it staged after commits
//! when its handler returns, before the body's end is sent. Either commit
//! failing fails the request (503 before the headers, a cut body after).

use crate::capabilities::kv::{KvTxn, OpTimer};
use crate::store::{Commit, MAX_PAGE};
use std::sync::Arc;
use tokio::sync::Mutex;
use wasmtime::component::{HasSelf, Linker, Resource};

mod generated {
    wasmtime::component::bindgen!({
        path: "wit-keyvalue",
        world: "wasi:keyvalue/imports",
        // Every function may reach the store, which may be a network round
        // trip (PostgreSQL), or wait for the request's commit to finish.
        imports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": super::Bucket,
        },
    });
}

use self::generated::wasi::keyvalue::{atomics, batch, store};
use super::HttpInvocation;
use crate::bindings::berth::service::kv::Error as KvError;
use store::{Error, KeyResponse};

/// An open bucket. Every bucket a component may open is its namespace, so
/// the handle carries nothing.
pub struct Bucket;

/// Most cursors one request may hold from `list-keys`; the read budget
/// ends a listing long before this.
const MAX_CURSORS: usize = 100_000;

/// One request's key-value state, shared by the guest (through its store
/// data) and the executor, which commits it at the response and at the end.
#[derive(Clone)]
pub struct KvState(Arc<Mutex<Inner>>);

struct Inner {
    txn: KvTxn,
    /// Why a commit failed: nothing more commits in this request.
    failed: Option<String>,
    /// `list-keys` cursors: each is an index here, naming the last key of
    /// the page it followed. Good only within the request.
    cursors: Vec<String>,
}

impl KvState {
    pub fn new(txn: KvTxn) -> KvState {
        KvState(Arc::new(Mutex::new(Inner {
            txn,
            failed: None,
            cursors: Vec::new(),
        })))
    }

    /// Commit what the request staged since the last commit, durably. The
    /// guest's own calls wait meanwhile, so none reads around the commit.
    pub async fn commit(&self) -> Result<(), String> {
        let mut inner = self.0.lock().await;
        if let Some(why) = &inner.failed {
            return Err(why.clone());
        }
        let batch = inner.txn.take_batch();
        if batch.is_empty() {
            return Ok(());
        }
        let ns = inner.txn.namespace().clone();
        let store = inner.txn.store().clone();
        let why = match store.commit(&ns, batch).await {
            Ok(Commit::Done) => return Ok(()),
            // Blind writes carry no preconditions, so neither can happen.
            Ok(other) => format!("the store refused the request's writes: {other:?}"),
            Err(e) => format!("the request's writes could not be committed: {e}"),
        };
        inner.failed = Some(why.clone());
        Err(why)
    }
}

/// Add `wasi:keyvalue` store, atomics and batch to the `wasi:http` linker.
pub fn add_to_linker(linker: &mut Linker<HttpInvocation>) -> anyhow::Result<()> {
    generated::Imports::add_to_linker::<_, HasSelf<HttpInvocation>>(linker, |s| s)
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

fn other(e: KvError) -> Error {
    match e {
        KvError::Invalid(m) | KvError::Unavailable(m) => Error::Other(m),
    }
}

fn check_open(state: &HttpInvocation, bucket: &Resource<Bucket>) -> Result<(), Error> {
    state
        .table
        .get(bucket)
        .map(|_| ())
        .map_err(|e| Error::Other(e.to_string()))
}

impl store::Host for HttpInvocation {
    /// The default bucket `""` and the bucket named like the component are
    /// both its namespace; any other name is no store of its.
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, Error> {
        let ns = self.kv.0.lock().await.txn.namespace().clone();
        if !identifier.is_empty() && identifier != *ns {
            return Err(Error::NoSuchStore);
        }
        self.table
            .push(Bucket)
            .map_err(|e| Error::Other(e.to_string()))
    }
}

impl store::HostBucket for HttpInvocation {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, Error> {
        let _timer = OpTimer::start("get");
        check_open(self, &bucket)?;
        self.kv.0.lock().await.txn.read(&key).await.map_err(other)
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), Error> {
        let _timer = OpTimer::start("set");
        check_open(self, &bucket)?;
        self.kv
            .0
            .lock()
            .await
            .txn
            .write(key, Some(value))
            .map_err(other)
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), Error> {
        let _timer = OpTimer::start("delete");
        check_open(self, &bucket)?;
        self.kv.0.lock().await.txn.write(key, None).map_err(other)
    }

    async fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, Error> {
        let _timer = OpTimer::start("get");
        check_open(self, &bucket)?;
        let value = self.kv.0.lock().await.txn.read(&key).await.map_err(other)?;
        Ok(value.is_some())
    }

    /// Keys in byte order, a page at a time; a page that is not empty comes
    /// with a cursor, and the listing ends at an empty page.
    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<KeyResponse, Error> {
        let _timer = OpTimer::start("list_keys");
        check_open(self, &bucket)?;
        let mut inner = self.kv.0.lock().await;
        let after = match cursor {
            None => None,
            Some(c) => Some(
                usize::try_from(c)
                    .ok()
                    .and_then(|c| inner.cursors.get(c))
                    .cloned()
                    .ok_or_else(|| {
                        Error::Other(format!(
                            "cursor {c} is not one this request was given; a cursor is good only within the request that listed it"
                        ))
                    })?,
            ),
        };
        let keys = inner
            .txn
            .key_page(after.as_deref(), MAX_PAGE)
            .await
            .map_err(other)?;
        let cursor = match keys.last() {
            Some(last) if inner.cursors.len() < MAX_CURSORS => {
                inner.cursors.push(last.clone());
                Some(inner.cursors.len() as u64 - 1)
            }
            Some(_) => {
                return Err(Error::Other(format!(
                    "a request may page through at most {MAX_CURSORS} pages of keys"
                )));
            }
            None => None,
        };
        Ok(KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HttpInvocation {
    /// The store's counter, committed at once (not with the request), as
    /// `berth:service/kv.increment`.
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, Error> {
        let _timer = OpTimer::start("increment");
        check_open(self, &bucket)?;
        let delta = i64::try_from(delta).map_err(|_| {
            Error::Other(format!(
                "delta {delta} is past the counter's range (at most {})",
                i64::MAX
            ))
        })?;
        let value = self
            .kv
            .0
            .lock()
            .await
            .txn
            .add(&key, delta)
            .await
            .map_err(other)?;
        u64::try_from(value).map_err(|_| {
            Error::Other(format!(
                "the counter holds {value}, which `increment` cannot return as unsigned"
            ))
        })
    }
}

impl batch::Host for HttpInvocation {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, Error> {
        let _timer = OpTimer::start("get");
        check_open(self, &bucket)?;
        let mut inner = self.kv.0.lock().await;
        let mut found = Vec::with_capacity(keys.len());
        for key in keys {
            let value = inner.txn.read(&key).await.map_err(other)?;
            found.push(value.map(|v| (key, v)));
        }
        Ok(found)
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), Error> {
        let _timer = OpTimer::start("set");
        check_open(self, &bucket)?;
        let mut inner = self.kv.0.lock().await;
        for (key, value) in key_values {
            inner.txn.write(key, Some(value)).map_err(other)?;
        }
        Ok(())
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), Error> {
        let _timer = OpTimer::start("delete");
        check_open(self, &bucket)?;
        let mut inner = self.kv.0.lock().await;
        for key in keys {
            inner.txn.write(key, None).map_err(other)?;
        }
        Ok(())
    }
}
