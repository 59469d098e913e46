//! Grouped increments: the increments of one counter that one replica has
//! waiting at the same moment go to PostgreSQL as one statement adding
//! their sum, and each caller is handed its own value out of the range the
//! sum covers. Every `POST /users` increments the same id counter, and
//! without this each would queue for the counter's lock on the server: one
//! backend woken per increment, one statement, one transaction. With it, a
//! replica keeps at most one increment of a counter in flight, and whatever
//! arrives meanwhile rides on the next.
//!
//! The answers are those of some serial order of the same increments, as
//! for any increments that overlap in time: with deltas `d1, d2, ...` added
//! as one sum to a counter that was at `c`, the callers get `c + d1`,
//! `c + d1 + d2`, and so on. Only deltas of one sign are summed, so every
//! value handed out lies between the counter's old and new values and none
//! can overflow. A grouped statement that is refused (the sum overflows, or
//! the key holds something that is not a counter) is run again one delta
//! at a time, so each caller gets the answer its increment alone would.
//! Durability is the single increment's (see `add` in `mod.rs`).

use super::error::pool_error;
use crate::store::CounterError;
use deadpool_postgres::Pool;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;

/// Most increments one statement carries.
const MAX_GROUP: usize = 64;

/// One increment waiting for its statement.
struct Waiter {
    delta: i64,
    reply: oneshot::Sender<Result<i64, CounterError>>,
}

/// The counters with an increment in flight, and what waits for each.
type Flights = HashMap<(String, String), Vec<Waiter>>;

/// Groups one replica's concurrent increments of each counter.
#[derive(Default)]
pub(super) struct Counters {
    flights: Arc<Mutex<Flights>>,
    /// Statements sent, for the tests to see groups form.
    #[cfg_attr(not(test), allow(dead_code))]
    statements: Arc<std::sync::atomic::AtomicU64>,
}

impl Counters {
    /// Add `delta` (not 0) to the counter `key` in `ns` together with the
    /// increments of it that are waiting, and answer with the value this
    /// one gave it.
    pub(super) async fn add(
        &self,
        pool: &Pool,
        ns: &str,
        key: &str,
        delta: i64,
    ) -> Result<i64, CounterError> {
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter { delta, reply };
        let start = {
            let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
            match flights.entry((ns.to_string(), key.to_string())) {
                Entry::Occupied(mut waiting) => {
                    waiting.get_mut().push(waiter);
                    false
                }
                Entry::Vacant(slot) => {
                    slot.insert(vec![waiter]);
                    true
                }
            }
        };
        if start {
            // On a task of its own: the flight outlives a caller that goes
            // away, so nobody is left waiting on a flight that stopped.
            tokio::spawn(fly(
                pool.clone(),
                Arc::clone(&self.flights),
                Arc::clone(&self.statements),
                (ns.to_string(), key.to_string()),
            ));
        }
        answer.await.unwrap_or_else(|_| {
            Err(CounterError::Store(crate::store::StoreError::Failed(
                "the increment task ended before answering".into(),
            )))
        })
    }

    /// Statements sent so far.
    #[cfg(test)]
    pub(super) fn statements(&self) -> u64 {
        self.statements.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Send the waiting increments of `counter`, a group at a time, until none
/// are left; then end the flight.
async fn fly(
    pool: Pool,
    flights: Arc<Mutex<Flights>>,
    statements: Arc<std::sync::atomic::AtomicU64>,
    counter: (String, String),
) {
    let (ns, key) = (&counter.0, &counter.1);
    loop {
        let group = {
            let mut all = flights.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(waiting) = all.get_mut(&counter) else {
                return;
            };
            let group = take_group(waiting);
            if group.is_empty() {
                all.remove(&counter);
                return;
            }
            group
        };
        let conn = match pool.get().await {
            Ok(conn) => conn,
            Err(e) => {
                let e = pool_error(e);
                for waiter in group {
                    let _ = waiter.reply.send(Err(CounterError::Store(e.clone())));
                }
                continue;
            }
        };
        let sum = group.iter().map(|w| w.delta).sum::<i64>();
        statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match super::add(&conn, ns, key, sum).await {
            Ok(total) => {
                let mut value = total - sum;
                for waiter in group {
                    value += waiter.delta;
                    let _ = waiter.reply.send(Ok(value));
                }
            }
            Err(CounterError::Invalid(_)) if group.len() > 1 => {
                for waiter in group {
                    statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let alone = super::add(&conn, ns, key, waiter.delta).await;
                    let _ = waiter.reply.send(alone);
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

/// The oldest waiting increments with the first one's sign, at most
/// `MAX_GROUP`, whose sum fits an i64; the others keep their order for the
/// next statement.
fn take_group(waiting: &mut Vec<Waiter>) -> Vec<Waiter> {
    let Some(first) = waiting.first() else {
        return Vec::new();
    };
    let positive = first.delta > 0;
    let mut sum: i64 = 0;
    let mut group = Vec::new();
    let mut later = Vec::new();
    for waiter in waiting.drain(..) {
        let fits = group.len() < MAX_GROUP
            && (waiter.delta > 0) == positive
            && sum.checked_add(waiter.delta).is_some();
        if fits {
            sum += waiter.delta;
            group.push(waiter);
        } else {
            later.push(waiter);
        }
    }
    *waiting = later;
    group
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waiters(deltas: &[i64]) -> Vec<Waiter> {
        deltas
            .iter()
            .map(|&delta| Waiter {
                delta,
                reply: oneshot::channel().0,
            })
            .collect()
    }

    fn deltas(waiters: &[Waiter]) -> Vec<i64> {
        waiters.iter().map(|w| w.delta).collect()
    }

    #[test]
    fn a_group_takes_one_sign_and_leaves_the_rest_in_order() {
        let mut waiting = waiters(&[3, -1, 4, -5, 9]);
        assert_eq!(deltas(&take_group(&mut waiting)), [3, 4, 9]);
        assert_eq!(deltas(&waiting), [-1, -5]);
        assert_eq!(deltas(&take_group(&mut waiting)), [-1, -5]);
        assert!(take_group(&mut waiting).is_empty());
    }

    #[test]
    fn a_group_never_sums_past_an_i64() {
        let mut waiting = waiters(&[i64::MAX - 1, 1, 1, -3]);
        assert_eq!(deltas(&take_group(&mut waiting)), [i64::MAX - 1, 1]);
        assert_eq!(deltas(&waiting), [1, -3]);
        let mut waiting = waiters(&[i64::MIN + 1, -1, -1]);
        assert_eq!(deltas(&take_group(&mut waiting)), [i64::MIN + 1, -1]);
    }

    #[test]
    fn a_group_is_bounded() {
        let mut waiting = waiters(&[1; MAX_GROUP + 5]);
        assert_eq!(take_group(&mut waiting).len(), MAX_GROUP);
        assert_eq!(waiting.len(), 5);
    }
}
