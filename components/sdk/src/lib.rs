//! The guest side of Berth: bindings generated from the repository's `wit/`
//! plus small helpers for JSON services. A component implements [`Handler`]
//! and calls [`export!`]; everything else here is optional sugar.

// Lets the generated code name this crate by its public path from inside it too.
extern crate self as berth_sdk;

pub mod http;
pub mod store;

/// Bindings generated from `wit/service.wit`, the one contract shared with the host.
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "service",
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "berth_sdk::bindings",
        runtime_path: "berth_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::berth::service::kv;
pub use bindings::berth::service::log::{Level, log};
pub use bindings::berth::service::types::{Header, Request, Response};
pub use bindings::export;
pub use bindings::exports::berth::service::handler::Guest as Handler;
