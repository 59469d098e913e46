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

/// The component's own durable key-value namespace: raw bytes under string
/// keys. A request's writes commit together when its handler returns; see
/// [`store::Collection`] for records with ids.
pub use bindings::berth::service::kv;
/// How loud a [`log`] line is: trace, debug, info, warn or error.
pub use bindings::berth::service::log::Level;
/// Write a line to the host's log at a [`Level`], tagged with the
/// component's name.
pub use bindings::berth::service::log::log;
/// One header, its name lower-cased.
pub use bindings::berth::service::types::Header;
/// A request the host routed to this component; see [`http`] for helpers
/// ([`Request::json`], [`Request::segments`], query parameters).
pub use bindings::berth::service::types::Request;
/// The component's answer: status, headers and a body, sent whole.
pub use bindings::berth::service::types::Response;
/// What a service implements: `handle(request) -> response`, called once
/// per request, in a fresh instance unless the manifest sets `reuse`.
/// Export the implementing type with [`export!`].
pub use bindings::exports::berth::service::handler::Guest as Handler;
/// One delivery of an event: its id, topic, JSON payload, source and attempt.
pub use bindings::exports::berth::service::subscriber::Event;
/// What a subscribing service implements: `on_event(event)`, called for
/// each event on a topic its manifest entry `subscribes` to; an `Err` asks
/// for a retry later. Export it with [`export_subscriber!`].
pub use bindings::exports::berth::service::subscriber::Guest as Subscriber;

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
