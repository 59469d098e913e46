//! The users and orders components, compiled for wasm32-wasip2 by build.rs
//! and embedded, so the `berth` binary serves them with no files beside it.

pub const USERS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/users.wasm"));
pub const ORDERS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/orders.wasm"));

/// Names accepted after `builtin:` in a manifest.
pub const NAMES: &[&str] = &["users", "orders"];

/// The wasm of built-in component `name`.
pub fn wasm(name: &str) -> Option<&'static [u8]> {
    match name {
        "users" => Some(USERS),
        "orders" => Some(ORDERS),
        _ => None,
    }
}
