//! Version 2 of the hot-swap test service: `swap-v1`'s handler, built with
//! another version string.

const VERSION: &str = "v2";

#[path = "../../swap-v1/src/handler.rs"]
mod handler;
