//! The users service as a standard `wasi:http/proxy` component: `{id, name}`
//! records under /users, kept in `wasi:keyvalue` and seeded once with the
//! original Flask app's John and Jane. Its answers are those of Berth's own
//! `components/users` (a `berth:service` component), which also has `PUT`
//! and events; test.sh compares the two request by request.

mod http;
mod users;

use http::{Reply, Request, Result};
use serde::Deserialize;
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{IncomingRequest, ResponseOutparam};

/// Records per page when the client does not say, and the most it may ask for.
const DEFAULT_LIMIT: u64 = 100;
const MAX_LIMIT: u64 = 1000;

struct Users;

impl Guest for Users {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let reply = match Request::read(&request) {
            Ok(request) => route(&request).unwrap_or_else(|reply| reply),
            Err(reply) => reply,
        };
        reply.send(out);
    }
}

wasi::http::proxy::export!(Users with_types_in wasi);

fn route(request: &Request) -> Result<Reply> {
    let method = request.method.as_str();
    match request.segments().as_slice() {
        ["users"] | ["users", ""] => match method {
            "GET" => users::seed().and_then(|()| list(request)),
            "POST" => users::seed().and_then(|()| create(request)),
            _ => Ok(http::method_not_allowed(method, &["GET", "POST"])),
        },
        ["users", id] => {
            // A bad id is refused before the method is looked at.
            let id = http::parse_id("user", id)?;
            match method {
                "GET" => get(id),
                "DELETE" => users::seed().and_then(|()| delete(id)),
                _ => Ok(http::method_not_allowed(method, &["GET", "DELETE"])),
            }
        }
        _ => Err(http::error(
            404,
            &format!("no such resource: {}", request.path),
        )),
    }
}

/// One page of users in id order, with a `link` to the next page when
/// more remain.
fn list(request: &Request) -> Result<Reply> {
    let limit = request
        .query_int("limit", 1..=MAX_LIMIT)?
        .unwrap_or(DEFAULT_LIMIT);
    let after = request.query_int("after", 0..=http::MAX_ID)?.unwrap_or(0);
    let page = users::page(after, limit as usize)?;
    let reply = http::json_bytes(200, page.json);
    Ok(match page.next {
        Some(last) => reply.with_header(
            "link",
            &format!("</users?limit={limit}&after={last}>; rel=\"next\""),
        ),
        None => reply,
    })
}

/// One read when the user exists, the common case; only a miss checks
/// whether John and Jane still need seeding.
fn get(id: u64) -> Result<Reply> {
    if let Some(stored) = users::get(id)? {
        return Ok(http::json_bytes(200, stored));
    }
    users::seed()?;
    match users::get(id)? {
        Some(stored) => Ok(http::json_bytes(200, stored)),
        None => Err(not_found(id)),
    }
}

/// The body of `POST /users`. Its name and shape are those of Berth's
/// own users component, so serde's messages about a bad body (which name
/// the type and the fields) read the same.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserInput {
    #[serde(default, deserialize_with = "http::present")]
    id: Option<u64>,
    name: Option<String>,
}

fn create(request: &Request) -> Result<Reply> {
    let input: UserInput = request.json_object()?;
    let name = match input.name.as_deref().map(str::trim) {
        None => return Err(http::error(400, "missing field `name`")),
        Some("") => return Err(http::error(400, "field `name` must not be empty")),
        Some(name) => name.to_string(),
    };
    let user = match input.id {
        Some(0) => return Err(http::error(400, "field `id` must be a positive integer")),
        Some(id) => {
            let user = users::User { id, name };
            if !users::insert(&user)? {
                return Err(http::error(409, &format!("user {id} already exists")));
            }
            user
        }
        None => users::create(&name)?,
    };
    let location = format!("/users/{}", user.id);
    Ok(http::json(201, &user).with_header("location", &location))
}

fn delete(id: u64) -> Result<Reply> {
    if !users::delete(id)? {
        return Err(not_found(id));
    }
    Ok(http::no_content())
}

fn not_found(id: u64) -> Reply {
    http::error(404, &format!("user {id} does not exist"))
}
