//! Host bindings generated from `wit/`, the same files the guests read.

wasmtime::component::bindgen!({
    path: "../wit",
    // The larger world, so both exports have bindings; a component of the
    // smaller `service` world links too, as exports are looked up one
    // interface at a time.
    world: "subscribing-service",
    // Exports are async so a guest runs as a future: its deadline can yield
    // to other requests on the same thread, and WASI's async host calls
    // never block inside the runtime. Of the imports, `call` is async since
    // it runs another component, and every `kv` function that reaches the
    // store since a store read may be a network round trip (PostgreSQL);
    // `set` only buffers, and `log` and `publish` answer at once.
    imports: {
        "berth:service/services.call": async,
        "berth:service/kv.get": async,
        "berth:service/kv.delete": async,
        "berth:service/kv.list-keys": async,
        "berth:service/kv.scan": async,
        "berth:service/kv.insert": async,
        "berth:service/kv.compare-and-swap": async,
        "berth:service/kv.increment": async,
    },
    exports: { default: async },
});

pub use self::berth::service::types::{Header, Request, Response};
pub use self::exports::berth::service::subscriber::Event;
/// What the host links components against: the imports both worlds share.
pub use SubscribingService as Service;
