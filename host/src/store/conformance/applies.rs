//! The properties of a batch that applies an event (a subscriber consuming
//! from a broker): recorded with its writes, refused whole when the event
//! was applied already, per namespace, and pruned after a while.

use super::*;

/// A batch applying `event_id` that writes `key` and publishes an event
/// caused by it.
fn applying(event_id: &str, key: &str) -> WriteBatch {
    WriteBatch {
        writes: BTreeMap::from([(key.to_string(), Some(b"applied".to_vec()))]),
        events: vec![event(&format!("caused-by-{key}"), &["audit"])],
        applies: Some(event_id.to_string()),
        ..WriteBatch::default()
    }
}

/// The event ids of every live delivery, claimed past any lease.
async fn due_events<B: Outbox>(store: &B) -> Vec<String> {
    let far = now_ms() + 10 * DELIVERY_LEASE_MS;
    let mut ids: Vec<String> = store
        .claim_due(far, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    ids.sort();
    ids
}

pub(super) async fn an_event_is_applied_once_per_namespace<B: Store + Outbox>(store: Arc<B>) {
    assert!(!store.applied(NS, "e1").await.unwrap());
    assert_eq!(
        store.commit(NS, applying("e1", "first")).await.unwrap(),
        Commit::Done
    );
    assert!(store.applied(NS, "e1").await.unwrap());
    assert!(!store.applied(NS, "e2").await.unwrap());
    assert!(!store.applied("other", "e1").await.unwrap());

    // Applying it again is refused whole: no write, no event.
    assert_eq!(
        store.commit(NS, applying("e1", "second")).await.unwrap(),
        Commit::AlreadyDelivered
    );
    assert_eq!(get(&*store, "second").await, None);
    assert_eq!(get(&*store, "first").await, Some(b"applied".to_vec()));
    assert_eq!(due_events(&*store).await, ["caused-by-first"]);

    // Refused as applied even when a precondition fails too: running the
    // subscriber again would not help.
    let mut stale = applying("e1", "third");
    stale
        .expects
        .insert("first".to_string(), Some(b"stale".to_vec()));
    assert_eq!(
        store.commit(NS, stale).await.unwrap(),
        Commit::AlreadyDelivered
    );
    // But a batch that applies a new event still meets its preconditions.
    let mut stale = applying("e2", "third");
    stale
        .expects
        .insert("first".to_string(), Some(b"stale".to_vec()));
    assert_eq!(
        store.commit(NS, stale).await.unwrap(),
        Commit::Conflict("first".to_string())
    );
    assert!(!store.applied(NS, "e2").await.unwrap());

    // Another namespace applies the same event on its own.
    assert_eq!(
        store
            .commit("other", applying("e1", "first"))
            .await
            .unwrap(),
        Commit::Done
    );
    assert!(store.applied("other", "e1").await.unwrap());
    assert_eq!(
        store.get("other", "first").await.unwrap(),
        Some(b"applied".to_vec())
    );

    // A batch with nothing but the record still commits it.
    let bare = WriteBatch {
        applies: Some("e3".to_string()),
        ..WriteBatch::default()
    };
    assert!(!bare.is_empty());
    assert_eq!(store.commit(NS, bare.clone()).await.unwrap(), Commit::Done);
    assert!(store.applied(NS, "e3").await.unwrap());
    assert_eq!(
        store.commit(NS, bare).await.unwrap(),
        Commit::AlreadyDelivered
    );
}

pub(super) async fn racing_appliers_let_one_win<B: Store + Outbox>(store: Arc<B>) {
    let outcomes = concurrently(8, |i| {
        let store = store.clone();
        async move {
            store
                .commit(NS, applying("e", &format!("k{i}")))
                .await
                .unwrap()
        }
    })
    .await;
    let done = outcomes.iter().filter(|o| **o == Commit::Done).count();
    assert_eq!(done, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Commit::Done | Commit::AlreadyDelivered)),
        "{outcomes:?}"
    );
    let written = keys(&*store, NS, "k", None).await;
    let winner = outcomes.iter().position(|o| *o == Commit::Done).unwrap();
    assert_eq!(written, [format!("k{winner}")]);
    assert_eq!(due_events(&*store).await, [format!("caused-by-k{winner}")]);
}

pub(super) async fn pruning_forgets_only_old_records<B: Store + Outbox>(store: Arc<B>) {
    assert_eq!(store.prune_applied(now_ms() + 1000).await.unwrap(), 0);
    assert_eq!(
        store.commit(NS, applying("old", "a")).await.unwrap(),
        Commit::Done
    );
    assert_eq!(
        store.commit("other", applying("old", "a")).await.unwrap(),
        Commit::Done
    );
    // Every record above was made at or before the clock read after it;
    // waiting puts the cut strictly after them and before the next.
    let committed = now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let cut = now_ms();
    assert!(cut > committed);
    assert_eq!(
        store.commit(NS, applying("new", "b")).await.unwrap(),
        Commit::Done
    );
    assert_eq!(store.prune_applied(committed - 60_000).await.unwrap(), 0);
    assert_eq!(store.prune_applied(cut).await.unwrap(), 2);
    assert_eq!(store.prune_applied(cut).await.unwrap(), 0);
    assert!(!store.applied(NS, "old").await.unwrap());
    assert!(!store.applied("other", "old").await.unwrap());
    assert!(store.applied(NS, "new").await.unwrap());
    assert_eq!(
        store.commit(NS, applying("new", "c")).await.unwrap(),
        Commit::AlreadyDelivered
    );
    // What was applied stays applied; only the record is forgotten.
    assert_eq!(get(&*store, "a").await, Some(b"applied".to_vec()));
    assert_eq!(store.prune_applied(now_ms() + 1000).await.unwrap(), 1);
    assert!(!store.applied(NS, "new").await.unwrap());
}
