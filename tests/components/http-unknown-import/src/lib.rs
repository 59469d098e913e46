//! A `wasi:http` component that imports `test:unknown/thing`, which Berth
//! does not provide: the tests check that it is refused by name before it
//! is compiled, and that nothing of it lands in the compile cache.

wit_bindgen::generate!({
    inline: "
        package test:unknown;

        interface thing {
            ping: func() -> u32;
        }

        world needs-thing {
            import thing;
        }
    ",
});

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct NeedsThing;

impl Guest for NeedsThing {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        // Called, so the import stays in the component.
        let answer = test::unknown::thing::ping();
        let response = OutgoingResponse::new(Fields::new());
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(out, Ok(response));
        let stream = body.write().expect("the stream is taken once");
        stream
            .blocking_write_and_flush(answer.to_string().as_bytes())
            .expect("writing the body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

wasi::http::proxy::export!(NeedsThing with_types_in wasi);
