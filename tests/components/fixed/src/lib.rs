//! The `static` benchmark workload: every request gets the original
//! service's two users as fixed JSON, with no store access and no parsing,
//! so a load test of it measures the host's own overhead per request.

use berth_sdk::{Handler, Header, Request, Response};

const BODY: &[u8] = br#"[{"id":1,"name":"John"},{"id":2,"name":"Jane"}]"#;

struct Fixed;

impl Handler for Fixed {
    fn handle(_request: Request) -> Response {
        Response {
            status: 200,
            headers: vec![Header {
                name: "content-type".into(),
                value: "application/json".into(),
            }],
            body: BODY.to_vec(),
        }
    }
}

berth_sdk::export!(Fixed);
