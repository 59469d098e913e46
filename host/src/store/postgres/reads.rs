//! Grouped reads: the `get`s one replica has waiting at the same moment go
//! to PostgreSQL as one statement that looks each key up, instead of one
//! round trip and one pooled connection each. Every `POST /users` reads
//! twice before it writes (the users component's `seeded` marker, and the
//! new id's key for `insert`), so under load most of the statements a
//! replica sent were single-row reads, each costing a backend wake-up and
//! a socket round trip on both sides.
//!
//! A read is never answered from a statement that began before it was
//! asked: a `get` that arrives while the groups in flight are busy waits
//! for the next one. So it sees every commit acknowledged before it was
//! called, as an ungrouped read would; grouping changes the cost, not what
//! is seen. Like any two reads of one request, two grouped reads may see
//! different snapshots; the commit re-checks what the request relied on.

use super::batch::read;
use super::error::{pool_error, store_error};
use crate::store::StoreError;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// Most keys one statement carries.
const MAX_GROUP: usize = 64;

/// One statement for many keys. Each key is looked up in a subquery, which
/// plans as an index lookup even when prepared on an empty table (a join
/// with `kv` would not; see `batch::CHANGED`). One row per key, in order;
/// NULL where the key is absent (a stored value is never NULL).
pub(super) const READ_MANY: &str =
    "SELECT (SELECT kv.value FROM kv WHERE kv.ns = u.ns AND kv.key = u.key)
     FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS u(ns, key, n)
     ORDER BY u.n";

/// Read statements under way at once: two, so one group is read while
/// the next forms, and one slow read (a large value) does not hold up all
/// the others. On this project's machine one replica served 16,500, 14,900
/// and 12,800 `GET /users/1` a second with 1, 2 and 4 in flight, and
/// 4,390, 4,240 and 3,880 `POST /users`: more make smaller groups.
pub(super) fn in_flight(pool_size: usize) -> usize {
    pool_size.clamp(1, 2)
}

type Answer = Result<Option<Vec<u8>>, StoreError>;

/// One `get` waiting for its statement.
struct Waiter {
    ns: String,
    key: String,
    reply: oneshot::Sender<Answer>,
}

/// The reads waiting, and how many groups are in flight.
#[derive(Default)]
struct Queue {
    waiting: Vec<Waiter>,
    flying: usize,
}

/// Groups one replica's concurrent reads.
pub(super) struct Reads {
    queue: Arc<Mutex<Queue>>,
    in_flight: usize,
    /// Statements sent, for the tests to see groups form.
    #[cfg_attr(not(test), allow(dead_code))]
    statements: Arc<AtomicU64>,
}

impl Reads {
    /// Group reads, with at most `in_flight` statements under way at once.
    pub(super) fn new(in_flight: usize) -> Reads {
        Reads {
            queue: Arc::default(),
            in_flight: in_flight.max(1),
            statements: Arc::default(),
        }
    }

    /// The value of `key` in `ns`, read together with whatever other reads
    /// are waiting.
    pub(super) async fn get(&self, pool: &Pool, ns: &str, key: &str) -> Answer {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push(Waiter {
                ns: ns.to_string(),
                key: key.to_string(),
                reply,
            });
            let start = queue.flying < self.in_flight;
            if start {
                queue.flying += 1;
            }
            start
        };
        if start {
            // On a task of its own: the flight outlives a caller that goes
            // away, so nobody is left waiting on a flight that stopped.
            tokio::spawn(fly(
                pool.clone(),
                Arc::clone(&self.queue),
                Arc::clone(&self.statements),
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Failed(
                "the read task ended before answering".into(),
            ))
        })
    }

    /// Statements sent so far.
    #[cfg(test)]
    pub(super) fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}

/// Send the waiting reads, a group at a time, until none are left; then
/// end the flight.
async fn fly(pool: Pool, queue: Arc<Mutex<Queue>>, statements: Arc<AtomicU64>) {
    loop {
        let group: Vec<Waiter> = {
            let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
            if queue.waiting.is_empty() {
                queue.flying -= 1;
                return;
            }
            let take = queue.waiting.len().min(MAX_GROUP);
            queue.waiting.drain(..take).collect()
        };
        let values = match pool.get().await {
            Ok(conn) => {
                statements.fetch_add(1, Ordering::Relaxed);
                read_group(&conn, &group).await
            }
            Err(e) => Err(pool_error(e)),
        };
        match values {
            Ok(values) => {
                for (waiter, value) in group.into_iter().zip(values) {
                    let _ = waiter.reply.send(Ok(value));
                }
            }
            Err(e) => {
                for waiter in group {
                    let _ = waiter.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The value of each waiter's key, in the waiters' order. A key asked for
/// twice is looked up once.
async fn read_group(
    conn: &deadpool_postgres::Client,
    group: &[Waiter],
) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
    if let [alone] = group {
        return Ok(vec![read(conn, &alone.ns, &alone.key).await?]);
    }
    let mut index = HashMap::new();
    let (mut namespaces, mut keys) = (Vec::new(), Vec::new());
    let slots: Vec<usize> = group
        .iter()
        .map(|w| {
            *index
                .entry((w.ns.as_str(), w.key.as_str()))
                .or_insert_with(|| {
                    namespaces.push(w.ns.as_str());
                    keys.push(w.key.as_str());
                    keys.len() - 1
                })
        })
        .collect();
    let statement = conn.prepare_cached(READ_MANY).await.map_err(store_error)?;
    let rows = conn
        .query(&statement, &[&namespaces, &keys])
        .await
        .map_err(store_error)?;
    let values = rows
        .iter()
        .map(|row| row.try_get::<_, Option<Vec<u8>>>(0))
        .collect::<Result<Vec<_>, _>>()
        .map_err(store_error)?;
    if values.len() != keys.len() {
        return Err(StoreError::Failed(format!(
            "a grouped read of {} keys returned {} rows",
            keys.len(),
            values.len()
        )));
    }
    Ok(slots.into_iter().map(|slot| values[slot].clone()).collect())
}
