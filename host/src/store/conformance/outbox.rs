//! The outbox properties: fan-out, leased claims, retries, dead letters,
//! acknowledging a delivery once, completing one without writes, and the
//! backlog.

use super::*;

pub(super) async fn events_fan_out_to_recipients<B: Store + Outbox>(store: Arc<B>) {
    let before = now_ms();
    let batch = WriteBatch {
        writes: BTreeMap::from([("u1".to_string(), Some(b"{}".to_vec()))]),
        events: vec![
            event("e1", &["orders", "audit"]),
            event("e2", &[]),
            event("e3", &["orders"]),
        ],
        ..WriteBatch::default()
    };
    assert_eq!(store.commit("users", batch).await.unwrap(), Commit::Done);
    // Due at once: claimable a second from now, not a second before.
    assert!(store.claim_due(before - 1000, 10).await.unwrap().is_empty());
    let claimed = store.claim_due(now_ms() + 1000, 10).await.unwrap();
    let got: Vec<_> = claimed
        .iter()
        .map(|d| (d.event_id.as_str(), d.recipient.as_str()))
        .collect();
    assert_eq!(got, [("e1", "orders"), ("e1", "audit"), ("e3", "orders")]);
    let first = &claimed[0];
    assert_eq!(first.topic, "user.created");
    assert_eq!(first.payload, r#"{"id":"e1"}"#);
    assert_eq!(first.source, "users");
    assert_eq!(first.attempts, 0);
    assert_eq!(first.last_error, None);
    let mut ids: Vec<i64> = claimed.iter().map(|d| d.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    assert!(store.dead_letters().await.unwrap().is_empty());
}

pub(super) async fn claims_lease_deliveries<B: Store + Outbox>(store: Arc<B>) {
    let batch = WriteBatch {
        events: vec![event("e1", &["a", "b", "c"])],
        ..WriteBatch::default()
    };
    assert_eq!(store.commit("users", batch).await.unwrap(), Commit::Done);
    let now = now_ms() + 1000;
    let recipients = |claimed: &[Delivery]| -> Vec<String> {
        claimed.iter().map(|d| d.recipient.clone()).collect()
    };
    let first = store.claim_due(now, 2).await.unwrap();
    assert_eq!(recipients(&first), ["a", "b"]);
    // Leased deliveries are not claimed again; the third still is.
    let second = store.claim_due(now, 10).await.unwrap();
    assert_eq!(recipients(&second), ["c"]);
    assert!(store.claim_due(now, 10).await.unwrap().is_empty());
    assert!(
        store
            .claim_due(now + DELIVERY_LEASE_MS - 1, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Once the lease runs out they are due again, to whoever claims first.
    let again = store.claim_due(now + DELIVERY_LEASE_MS, 10).await.unwrap();
    assert_eq!(again.len(), 3);
    assert_eq!(again[0], first[0]);
}

pub(super) async fn failed_deliveries_retry_then_dead_letter<B: Store + Outbox>(store: Arc<B>) {
    let delivery = one_delivery(&*store, "e1").await;
    let at = now_ms() + 60_000;
    store
        .fail_delivery(delivery.id, "503 from orders", Retry::At(at))
        .await
        .unwrap();
    // Failing ends the lease: due again at the retry time, not before.
    assert!(store.claim_due(at - 1, 10).await.unwrap().is_empty());
    let retried = store.claim_due(at, 10).await.unwrap();
    assert_eq!(retried.len(), 1);
    assert_eq!(retried[0].id, delivery.id);
    assert_eq!(retried[0].attempts, 1);
    assert_eq!(retried[0].last_error.as_deref(), Some("503 from orders"));
    store
        .fail_delivery(delivery.id, "trap", Retry::DeadLetter)
        .await
        .unwrap();
    let dead = store.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].id, delivery.id);
    assert_eq!(dead[0].attempts, 2);
    assert_eq!(dead[0].last_error.as_deref(), Some("trap"));
    assert!(store.claim_due(i64::MAX / 2, 10).await.unwrap().is_empty());
    // Only a dead letter can be retried.
    assert!(!store.retry_dead_letter(delivery.id + 1000).await.unwrap());
    assert!(store.retry_dead_letter(delivery.id).await.unwrap());
    assert!(!store.retry_dead_letter(delivery.id).await.unwrap());
    assert!(store.dead_letters().await.unwrap().is_empty());
    let back = store.claim_due(now_ms() + 1000, 10).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].attempts, 0);
    assert_eq!(back[0].event_id, "e1");
}

pub(super) async fn a_delivery_is_acknowledged_once<B: Store + Outbox>(store: Arc<B>) {
    let delivery = one_delivery(&*store, "e1").await;
    let ack = |key: &str| WriteBatch {
        writes: BTreeMap::from([(key.to_string(), Some(b"applied".to_vec()))]),
        events: vec![event(&format!("caused-by-{key}"), &["audit"])],
        completes: Some(delivery.id),
        ..WriteBatch::default()
    };
    assert_eq!(
        store.commit("orders", ack("first")).await.unwrap(),
        Commit::Done
    );
    assert_eq!(
        store.commit("orders", ack("second")).await.unwrap(),
        Commit::AlreadyDelivered
    );
    assert!(store.get("orders", "second").await.unwrap().is_none());
    assert!(store.get("orders", "first").await.unwrap().is_some());
    // The acknowledged delivery is gone (past any lease), and only the
    // first acknowledgement's event was published.
    let due: Vec<String> = store
        .claim_due(now_ms() + 2 * DELIVERY_LEASE_MS, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    assert_eq!(due, ["caused-by-first"]);
    // A dead-lettered delivery is not acknowledged either.
    let dead = one_delivery(&*store, "e2").await;
    store
        .fail_delivery(dead.id, "gave up", Retry::DeadLetter)
        .await
        .unwrap();
    let batch = WriteBatch {
        writes: BTreeMap::from([("late".to_string(), Some(b"x".to_vec()))]),
        completes: Some(dead.id),
        ..WriteBatch::default()
    };
    assert_eq!(
        store.commit("orders", batch).await.unwrap(),
        Commit::AlreadyDelivered
    );
    assert!(store.get("orders", "late").await.unwrap().is_none());
    assert_eq!(store.dead_letters().await.unwrap().len(), 1);
}

pub(super) async fn a_delivery_is_completed_once<B: Store + Outbox>(store: Arc<B>) {
    let delivery = one_delivery(&*store, "e1").await;
    let other = one_delivery(&*store, "e2").await;
    assert!(store.complete(delivery.id).await.unwrap());
    assert!(!store.complete(delivery.id).await.unwrap());
    assert!(!store.complete(other.id + 1000).await.unwrap());
    // Gone past any lease; the other delivery is untouched.
    let due: Vec<i64> = store
        .claim_due(now_ms() + 2 * DELIVERY_LEASE_MS, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(due, [other.id]);
    // A commit acknowledging the completed delivery finds it gone.
    let batch = WriteBatch {
        writes: BTreeMap::from([("late".to_string(), Some(b"x".to_vec()))]),
        completes: Some(delivery.id),
        ..WriteBatch::default()
    };
    assert_eq!(
        store.commit("orders", batch).await.unwrap(),
        Commit::AlreadyDelivered
    );
    assert!(store.get("orders", "late").await.unwrap().is_none());
    // A dead letter is not pending, so it is not completed.
    store
        .fail_delivery(other.id, "gave up", Retry::DeadLetter)
        .await
        .unwrap();
    assert!(!store.complete(other.id).await.unwrap());
    assert_eq!(store.dead_letters().await.unwrap().len(), 1);
}

pub(super) async fn backlog_counts_live_deliveries<B: Store + Outbox>(store: Arc<B>) {
    assert_eq!(store.backlog().await.unwrap(), 0);
    let batch = WriteBatch {
        events: vec![event("e1", &["a", "b", "c", "d"]), event("e2", &[])],
        ..WriteBatch::default()
    };
    assert_eq!(store.commit("users", batch).await.unwrap(), Commit::Done);
    assert_eq!(store.backlog().await.unwrap(), 4);
    // Leased, or waiting for a retry, a delivery still waits.
    let claimed = store.claim_due(now_ms() + 1000, 3).await.unwrap();
    assert_eq!(store.backlog().await.unwrap(), 4);
    let later = Retry::At(now_ms() + 3_600_000);
    store
        .fail_delivery(claimed[0].id, "503", later)
        .await
        .unwrap();
    assert_eq!(store.backlog().await.unwrap(), 4);
    // Dead, completed or acknowledged, it does not.
    store
        .fail_delivery(claimed[1].id, "trap", Retry::DeadLetter)
        .await
        .unwrap();
    assert_eq!(store.backlog().await.unwrap(), 3);
    assert!(store.complete(claimed[2].id).await.unwrap());
    assert_eq!(store.backlog().await.unwrap(), 2);
    let last = store.claim_due(now_ms() + 1000, 10).await.unwrap();
    assert_eq!(last.len(), 1);
    let ack = WriteBatch {
        completes: Some(last[0].id),
        ..WriteBatch::default()
    };
    assert_eq!(store.commit("d", ack).await.unwrap(), Commit::Done);
    assert_eq!(store.backlog().await.unwrap(), 1);
    assert!(store.retry_dead_letter(claimed[1].id).await.unwrap());
    assert_eq!(store.backlog().await.unwrap(), 2);
}
