//! The host side of each WIT import, one file per interface. Every function
//! here runs on behalf of exactly one component: the [`Invocation`] in the
//! store says which, and its name scopes everything the import can reach.
//!
//! [`Invocation`]: crate::invocation::Invocation

pub mod kv;
pub mod log;
pub mod services;
pub mod stderr;

/// `berth:service/types` holds only records, so there is nothing to implement.
impl crate::bindings::berth::service::types::Host for crate::invocation::Invocation {}
