//! Host bindings generated from `wit/`, the same files the guests read.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "service",
});

pub use berth::service::types::{Header, Request, Response};
