//! Berth runs microservices as sandboxed WebAssembly components: it loads
//! the components a manifest names, routes HTTP requests to them, and gives
//! each a private, durable key-value namespace. See ARCHITECTURE.md.

pub mod accept;
pub mod admin;
pub mod admin_client;
pub mod app;
pub mod bindings;
pub mod body;
pub mod broker;
pub mod builtin;
pub mod capabilities;
pub mod compile_cache;
pub mod conn;
pub mod dev;
pub mod dispatch;
pub mod events;
pub mod executor;
pub mod fleet;
pub mod guest_build;
pub mod invocation;
pub mod logging;
pub mod manifest;
pub mod mesh;
pub mod metrics;
pub mod openapi;
pub mod reload;
pub mod reply;
pub mod reuse;
pub mod router;
pub mod runtime;
pub mod scaffold;
pub mod server;
pub mod shape;
pub mod store;
pub mod wasi_http;
pub mod watch;
