//! Host bindings generated from `wit/`, the same files the guests read.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "service",
    // Exports are async so a guest runs as a future: its deadline can yield
    // to other requests on the same thread, and WASI's async host calls
    // never block inside the runtime. Of the imports, `call` is async since
    // it runs another component, and `increment` since it waits for the
    // store's writer thread; the rest answer at once.
    imports: {
        "berth:service/services.call": async,
        "berth:service/kv.increment": async,
    },
    exports: { default: async },
});

pub use self::berth::service::types::{Header, Request, Response};
pub use self::exports::berth::service::subscriber::Event;
