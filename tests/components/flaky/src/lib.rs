//! A test-only subscriber. `POST /flaky/publish/TOPIC` publishes an event;
//! on `flaky.twice` the handler refuses the first two deliveries and applies
//! its effect on the third, on `flaky.never` it always refuses, on
//! `flaky.slow` it takes five seconds and applies nothing. `GET
//! /flaky/state` shows how many deliveries arrived and how many effects
//! were applied, so a test can check "exactly once".
//!
//! `flaky-fixed` is the same service with the bug fixed: it applies
//! `flaky.never` like any other topic. Tests hot-swap it in.

/// Whether `flaky.never` is applied: never, in this build.
const FIXED: bool = false;

include!("service.rs");
