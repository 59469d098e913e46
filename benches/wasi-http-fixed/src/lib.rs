//! The `static` workload for `wasmtime serve`: every request gets the
//! original service's two users as fixed JSON, the same bytes Berth's
//! `fixed` component returns, through the standard `wasi:http` interfaces.

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

const BODY: &[u8] = br#"[{"id":1,"name":"John"},{"id":2,"name":"Jane"}]"#;

struct Fixed;

impl Guest for Fixed {
    fn handle(_request: IncomingRequest, response_out: ResponseOutparam) {
        let headers = Fields::from_list(&[
            ("content-type".to_string(), b"application/json".to_vec()),
            ("content-length".to_string(), BODY.len().to_string().into_bytes()),
        ])
        .expect("valid headers");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("the body is taken once");
        ResponseOutparam::set(response_out, Ok(response));
        let stream = body.write().expect("the stream is taken once");
        stream
            .blocking_write_and_flush(BODY)
            .expect("writing the body");
        drop(stream);
        OutgoingBody::finish(body, None).expect("finishing the body");
    }
}

wasi::http::proxy::export!(Fixed with_types_in wasi);
