//! End-to-end tests: each starts the real `berth` binary on port 0 with a
//! fresh data directory and drives it over HTTP on loopback.

mod api_contract;
mod badinput;
mod broker;
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
mod lists;
mod obs_flags;
mod obs_pool;
mod obs_watch;
mod observability;
mod ops;
mod orders;
mod pg;
mod rabbitmq;
mod replicas;
mod shutdown;
mod store_integrity;
mod store_locking;
mod store_readiness;
mod store_saga;
mod store_support;
mod support;
mod swap;
mod users;
mod wasi_http;
mod wasi_keyvalue;
