//! End-to-end tests: each starts the real `berth` binary on port 0 with a
//! fresh data directory and drives it over HTTP on loopback.

mod cli;
mod durability;
mod events;
mod faults;
mod http;
mod orders;
mod support;
mod swap;
mod users;
