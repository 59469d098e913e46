//! The {{name}} service: JSON records `{"id": 1, "name": "..."}` under
//! /{{name}}, kept in the component's own key-value namespace.
//!
//!   GET  /{{name}}        the records, in id order (`?limit=` and `?after=` page)
//!   POST /{{name}}        create one from `{"name": "..."}`; 201 with it
//!   GET  /{{name}}/{id}   one record, or 404

use berth_sdk::http::{self, Result};
use berth_sdk::store::Collection;
use berth_sdk::{Handler, Level, Request, Response, log};
use serde::{Deserialize, Serialize};

/// The records, under keys `item/{id}` in this component's namespace.
const ITEMS: Collection = Collection::new("item");

#[derive(Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
}

/// The body of POST /{{name}}.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewItem {
    name: String,
}

struct Service;

impl Handler for Service {
    fn handle(request: Request) -> Response {
        route(&request).unwrap_or_else(|response| response)
    }
}

berth_sdk::export!(Service);

/// Berth passes the whole path (the manifest's `strip_prefix` is off).
fn route(request: &Request) -> Result<Response> {
    let method = request.method.as_str();
    match request.segments().as_slice() {
        ["{{name}}"] | ["{{name}}", ""] => match method {
            "GET" => list(request),
            "POST" => create(request),
            _ => Ok(http::method_not_allowed(method, &["GET", "POST"])),
        },
        ["{{name}}", id] => {
            let id = http::parse_id("{{name}} record", id)?;
            match method {
                "GET" => get(id),
                _ => Ok(http::method_not_allowed(method, &["GET"])),
            }
        }
        _ => Err(http::error(
            404,
            &format!("no such resource: {}", request.path),
        )),
    }
}

fn list(request: &Request) -> Result<Response> {
    let paging = http::Paging::from_query(request)?;
    let page = ITEMS.page::<Item>(paging.after, paging.limit, |_| true)?;
    Ok(http::listing(&page, |after| {
        format!("/{{name}}?limit={}&after={after}", paging.limit)
    }))
}

fn create(request: &Request) -> Result<Response> {
    let input: NewItem = request.json_object()?;
    let name = input.name.trim();
    if name.is_empty() {
        return Err(http::error(400, "field `name` must not be empty"));
    }
    let item = ITEMS.create(|id| Item {
        id,
        name: name.to_string(),
    })?;
    log(Level::Info, &format!("created {{name}} record {}", item.id));
    let location = format!("/{{name}}/{}", item.id);
    Ok(http::with_header(
        http::json(201, &item),
        "location",
        &location,
    ))
}

fn get(id: u64) -> Result<Response> {
    match ITEMS.get::<Item>(id)? {
        Some((item, _)) => Ok(http::json(200, &item)),
        None => Err(http::error(
            404,
            &format!("{{name}} record {id} does not exist"),
        )),
    }
}
