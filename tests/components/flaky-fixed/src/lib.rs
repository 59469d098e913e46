//! `flaky` with its bug fixed: the same service (see `flaky`), except that
//! `flaky.never` is applied like any other topic. Tests hot-swap it in to
//! show a dead-lettered event applied once after a fix.

/// Whether `flaky.never` is applied: yes, in this build.
const FIXED: bool = true;

include!("../../flaky/src/service.rs");
