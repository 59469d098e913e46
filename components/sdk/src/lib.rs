//! The guest side of Berth: bindings generated from `wit/` (in this package,
//! a link to the repository's `wit/` that `cargo package` stores as a file)
//! plus small helpers for JSON services. A component implements [`Handler`]
//! and calls [`export!`] (or, if it subscribes to events, also implements
//! [`Subscriber`] and calls [`export_subscriber!`]); the rest is sugar.

// Lets the generated code name this crate by its public path from inside it too.
extern crate self as berth_sdk;

pub mod events;
pub mod http;
pub mod services;
pub mod store;

/// Bindings generated from `wit/service.wit`, the one contract shared with the host.
pub mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        // The larger world: `export!` fills its event handler with a stub
        // (two worlds' bindings in one crate would define wit-bindgen's
        // export macros twice). Components in other languages can target
        // `service` and export no event handler at all.
        world: "subscribing-service",
        pub_export_macro: true,
        export_macro_name: "__export_raw",
        default_bindings_module: "berth_sdk::bindings",
        runtime_path: "berth_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

pub use bindings::berth::service::kv;
pub use bindings::berth::service::log::{Level, log};
pub use bindings::berth::service::types::{Header, Request, Response};
pub use bindings::exports::berth::service::handler::Guest as Handler;
pub use bindings::exports::berth::service::subscriber::{Event, Guest as Subscriber};

/// Export `$ty`, which implements [`Handler`], as the component's handler.
/// The component subscribes to nothing: an event sent to it is refused.
#[macro_export]
macro_rules! export {
    ($ty:ident) => {
        impl $crate::Subscriber for $ty {
            fn on_event(event: $crate::Event) -> ::core::result::Result<(), ::std::string::String> {
                ::core::result::Result::Err(::std::format!(
                    "this component subscribes to nothing, yet got an event on `{}`",
                    event.topic
                ))
            }
        }
        $crate::bindings::__export_raw!($ty);
    };
}

/// Export `$ty`, which implements both [`Handler`] and [`Subscriber`].
#[macro_export]
macro_rules! export_subscriber {
    ($ty:ident) => {
        $crate::bindings::__export_raw!($ty);
    };
}
