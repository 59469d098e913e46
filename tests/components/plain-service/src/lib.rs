//! A component of Berth's plain `service` world, bound with wit-bindgen
//! directly rather than through the SDK (which always exports an event
//! handler): it exports `handler` and nothing else, as a Python or
//! JavaScript component that subscribes to nothing does. Every request gets
//! 200 and `plain`.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "service",
});

use berth::service::types::{Header, Request, Response};
use exports::berth::service::handler::Guest;

struct Plain;

impl Guest for Plain {
    fn handle(_request: Request) -> Response {
        Response {
            status: 200,
            headers: vec![Header {
                name: "content-type".into(),
                value: "text/plain".into(),
            }],
            body: b"plain".to_vec(),
        }
    }
}

export!(Plain);
