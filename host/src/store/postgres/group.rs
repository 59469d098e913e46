//! Group commit: the request batches one replica has ready at the same
//! moment go to PostgreSQL as one transaction, so they share its round
//! trips, its `COMMIT` and its WAL flush, as the SQLite store's writer
//! thread shares one fsync. A batch is answered only once the `COMMIT` that
//! carries it has returned, so durability is unchanged.
//!
//! Batches in one group touch disjoint keys (a batch that shares a key with
//! the group waits for the next one), so each batch's preconditions can be
//! checked against the committed state, all in the transaction's first
//! round trip, and the writes of those that pass go out in its second.
//! A group that fails as a whole for a reason one batch may have caused is
//! split: each of its batches is committed alone, so one bad batch fails
//! only itself. Deliveries' acknowledgements (`completes`, `applies`) keep
//! the one-batch path: they check rows, not keys.

use super::batch::{self, Expected, Statements, Step, locks, write_steps};
use super::error::{is_serialization_failure, pool_error, store_error};
use crate::store::{Commit, StoreError, WriteBatch, now_ms};
use deadpool_postgres::Pool;
use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Groups committing at once: two, so one group's statements travel while
/// the other waits for its flush. More would make smaller groups, and more
/// transactions for the same writes: on this project's machine one replica
/// wrote 1,458, 1,991, 1,637 and 1,475 users a second with 1, 2, 4 and 8
/// groups in flight over 16 connections. Batches that arrive while both are
/// busy queue, and so the next group is larger when the database is
/// slower; the rest of the pool stays free for reads and increments.
pub(super) fn groups_in_flight(pool_size: usize) -> usize {
    pool_size.clamp(1, 2)
}

/// Commits one replica's request batches in groups (see the module docs).
pub(super) struct Committer {
    queue: mpsc::UnboundedSender<Pending>,
    /// Group transactions begun, for the tests to see groups form.
    #[cfg_attr(not(test), allow(dead_code))]
    groups: Arc<std::sync::atomic::AtomicU64>,
}

/// One batch waiting for its group's `COMMIT`.
struct Pending {
    ns: String,
    batch: WriteBatch,
    /// The batch's key locks, ascending.
    locks: Vec<i64>,
    reply: oneshot::Sender<Result<Commit, StoreError>>,
}

impl Committer {
    /// Start the task that forms groups of at most `max_group` batches and
    /// commits at most `in_flight` of them at once, through `pool`. It ends
    /// when the committer is dropped.
    pub(super) fn start(pool: Pool, max_group: usize, in_flight: usize) -> Committer {
        // Unbounded, but what it holds is bounded: a batch waits here only
        // while its request waits for the answer, and requests in flight
        // are capped by the server.
        let (queue, waiting) = mpsc::unbounded_channel();
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        let groups = Arc::default();
        tokio::spawn(form_groups(
            pool,
            waiting,
            max_group.max(1),
            slots,
            Arc::clone(&groups),
        ));
        Committer { queue, groups }
    }

    /// Group transactions begun so far.
    #[cfg(test)]
    pub(super) fn groups(&self) -> u64 {
        self.groups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Commit `batch` into `ns` with whatever other batches are ready, and
    /// answer once their `COMMIT` has returned.
    pub(super) async fn commit(&self, ns: &str, batch: WriteBatch) -> Result<Commit, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            locks: locks(ns, &batch),
            ns: ns.to_string(),
            batch,
            reply,
        };
        self.queue.send(pending).map_err(|_| StoreError::Closed)?;
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Failed(
                "the group commit task ended before answering".into(),
            ))
        })
    }
}

/// The committer's task: whenever a group may start, take every batch
/// that is ready into it, up to `max_group` with disjoint keys.
async fn form_groups(
    pool: Pool,
    mut arriving: mpsc::UnboundedReceiver<Pending>,
    max_group: usize,
    slots: Arc<Semaphore>,
    groups: Arc<std::sync::atomic::AtomicU64>,
) {
    let mut waiting = VecDeque::new();
    loop {
        if waiting.is_empty() {
            match arriving.recv().await {
                Some(pending) => waiting.push_back(pending),
                None => return,
            }
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        // Whatever arrived while the last groups were committing joins now.
        while let Ok(pending) = arriving.try_recv() {
            waiting.push_back(pending);
        }
        let group = take_group(&mut waiting, max_group);
        groups.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pool = pool.clone();
        tokio::spawn(async move {
            commit_group(&pool, group).await;
            drop(slot);
        });
    }
}

/// The oldest waiting batches whose keys are disjoint from each other's,
/// at most `max_group`; the others keep their order for the next group.
fn take_group(waiting: &mut VecDeque<Pending>, max_group: usize) -> Vec<Pending> {
    let mut held = HashSet::new();
    let mut group = Vec::new();
    let mut later = VecDeque::new();
    for pending in waiting.drain(..) {
        if group.len() < max_group && pending.locks.iter().all(|lock| !held.contains(lock)) {
            held.extend(pending.locks.iter().copied());
            group.push(pending);
        } else {
            later.push_back(pending);
        }
    }
    *waiting = later;
    group
}

/// Commit `group` in one transaction and answer each of its batches.
async fn commit_group(pool: &Pool, group: Vec<Pending>) {
    let mut conn = match pool.get().await {
        Ok(conn) => conn,
        Err(e) => {
            let e = pool_error(e);
            for pending in group {
                let _ = pending.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    let outcome = apply_group(&conn, &group).await;
    let e = match outcome {
        Ok(commits) => {
            for (pending, commit) in group.into_iter().zip(commits) {
                let _ = pending.reply.send(Ok(commit));
            }
            return;
        }
        Err(e) => e,
    };
    let _ = conn.batch_execute("ROLLBACK").await;
    if is_serialization_failure(&e) {
        // Nothing was written: each request runs again, as for any conflict.
        for pending in group {
            let conflict = Commit::Conflict(any_key(&pending.batch));
            let _ = pending.reply.send(Ok(conflict));
        }
        return;
    }
    let failed = store_error(e);
    if group.len() == 1 || matches!(failed, StoreError::Unavailable(_)) {
        // The database, not a batch, is at fault: splitting would fail again.
        for pending in group {
            let _ = pending.reply.send(Err(failed.clone()));
        }
        return;
    }
    for pending in group {
        let alone = batch::apply(&mut conn, &pending.ns, &pending.batch)
            .await
            .or_else(|e| match is_serialization_failure(&e) {
                true => Ok(Commit::Conflict(any_key(&pending.batch))),
                false => Err(store_error(e)),
            });
        let _ = pending.reply.send(alone);
    }
}

/// A key the batch touches, to name in the conflict that re-runs it.
fn any_key(batch: &WriteBatch) -> String {
    (batch.expects.keys().chain(batch.writes.keys()))
        .next()
        .cloned()
        .unwrap_or_default()
}

/// The group's transaction: `BEGIN`, every key lock (ascending, so groups
/// and single batches never wait for each other in opposite orders) and
/// each batch's precondition check in the first round trip; the writes of
/// the batches that passed and `COMMIT` in the second. With no
/// preconditions in the group, both go out as one.
async fn apply_group(
    conn: &deadpool_postgres::Client,
    group: &[Pending],
) -> Result<Vec<Commit>, tokio_postgres::Error> {
    let st = Statements::prepare(conn).await?;
    let now = now_ms();
    let mut all_locks: Vec<i64> = group.iter().flat_map(|p| p.locks.iter().copied()).collect();
    all_locks.sort_unstable();
    let checked = group.iter().any(|p| !p.batch.expects.is_empty());

    let mut commits = vec![Commit::Done; group.len()];
    let batches: Vec<(&str, &WriteBatch)> =
        group.iter().map(|p| (p.ns.as_str(), &p.batch)).collect();
    if checked {
        let expected = Expected::of(&batches);
        let (_, _, changed) = tokio::try_join!(
            // In order, every poll: the statements go out in this order on
            // the first, and the error reported is the first statement's
            // (a lock timeout or deadlock), not the "transaction is
            // aborted" of those pipelined after it.
            biased;
            conn.batch_execute("BEGIN"),
            async { conn.execute(&st.lock, &[&all_locks]).await },
            expected.check(conn, &st),
        )?;
        for (commit, key) in commits.iter_mut().zip(changed) {
            if let Some(key) = key {
                *commit = Commit::Conflict(key);
            }
        }
    }

    let mut steps: Vec<Step<'_>> = Vec::new();
    if !checked {
        steps.push(Box::pin(async {
            conn.batch_execute("BEGIN").await.map(|()| 0)
        }));
        let (all_locks, lock) = (&all_locks, &st.lock);
        steps.push(Box::pin(
            async move { conn.execute(lock, &[all_locks]).await },
        ));
    }
    let passed: Vec<(&str, &WriteBatch)> = batches
        .iter()
        .zip(&commits)
        .filter(|(_, commit)| matches!(commit, Commit::Done))
        .map(|(batch, _)| *batch)
        .collect();
    steps.extend(write_steps(conn, &st, &passed, now));
    steps.push(Box::pin(async {
        conn.batch_execute("COMMIT").await.map(|()| 0)
    }));
    // Polled in order, each step sends its statement on its first poll.
    futures_util::future::try_join_all(steps).await?;
    Ok(commits)
}
