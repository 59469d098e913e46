//! End-to-end tests: each starts the real `berth` binary on port 0 with a
//! fresh data directory and drives it over HTTP on loopback.

mod badinput;
mod cache;
mod cli;
mod crash;
mod durability;
mod events;
mod faults;
mod front;
mod fuzz;
mod http;
mod isolation;
mod limits;
mod ops;
mod orders;
mod shutdown;
mod support;
mod swap;
mod users;
