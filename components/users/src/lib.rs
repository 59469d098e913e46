//! The users service: `{id, name}` records under /users, stored in the
//! component's key-value namespace and seeded with the original's John and Jane.

use berth_sdk::http::{self, Result};
use berth_sdk::store::Collection;
use berth_sdk::{Handler, Level, Request, Response, events, log};
use serde::{Deserialize, Serialize};

const USERS: Collection = Collection::new("user");

#[derive(Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// The body of POST /users and PUT /users/{id}.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserInput {
    #[serde(default, deserialize_with = "http::present")]
    id: Option<u64>,
    name: Option<String>,
}

impl UserInput {
    fn name(&self) -> Result<String> {
        match self.name.as_deref().map(str::trim) {
            None => Err(http::error(400, "missing field `name`")),
            Some("") => Err(http::error(400, "field `name` must not be empty")),
            Some(name) => Ok(name.to_string()),
        }
    }
}

struct Users;

impl Handler for Users {
    fn handle(request: Request) -> Response {
        route(&request).unwrap_or_else(|response| response)
    }
}

berth_sdk::export!(Users);

/// Store the original's John and Jane, once: the first request that needs
/// them seeds them. Every write seeds first, so a stored user means the
/// seeding is done.
fn seed() -> Result<()> {
    USERS.seed(&[
        (
            1,
            User {
                id: 1,
                name: "John".into(),
            },
        ),
        (
            2,
            User {
                id: 2,
                name: "Jane".into(),
            },
        ),
    ])
}

fn route(request: &Request) -> Result<Response> {
    let method = request.method.as_str();
    match request.segments().as_slice() {
        ["users"] | ["users", ""] => match method {
            "GET" => seed().and_then(|()| list(request)),
            "POST" => seed().and_then(|()| create(request)),
            _ => Ok(http::method_not_allowed(method, &["GET", "POST"])),
        },
        ["users", id] => {
            let id = http::parse_id("user", id)?;
            match method {
                "GET" => get(id),
                "PUT" => seed().and_then(|()| update(id, request)),
                "DELETE" => seed().and_then(|()| delete(id)),
                _ => Ok(http::method_not_allowed(method, &["GET", "PUT", "DELETE"])),
            }
        }
        _ => Ok(http::error(
            404,
            &format!("no such resource: {}", request.path),
        )),
    }
}

/// One page of users, in id order: `?limit=` (default 100, at most 1000)
/// and `?after=` (the cursor), with a `Link` to the next page if any.
fn list(request: &Request) -> Result<Response> {
    let paging = http::Paging::from_query(request)?;
    let page = USERS.page::<User>(paging.after, paging.limit, |_| true)?;
    Ok(http::listing(&page, |after| {
        format!("/users?limit={}&after={after}", paging.limit)
    }))
}

/// One read when the user exists, the common case; only a miss checks
/// whether the sample users still need seeding.
fn get(id: u64) -> Result<Response> {
    if let Some((user, _)) = USERS.get::<User>(id)? {
        return Ok(http::json(200, &user));
    }
    seed()?;
    match USERS.get::<User>(id)? {
        Some((user, _)) => Ok(http::json(200, &user)),
        None => Err(not_found(id)),
    }
}

fn create(request: &Request) -> Result<Response> {
    let input: UserInput = request.json_object()?;
    let name = input.name()?;
    let user = match input.id {
        Some(0) => return Err(http::error(400, "field `id` must be a positive integer")),
        Some(id) => {
            let user = User { id, name };
            if !USERS.insert(id, &user)? {
                return Err(http::error(409, &format!("user {id} already exists")));
            }
            user
        }
        None => USERS.create(|id| User {
            id,
            name: name.clone(),
        })?,
    };
    log(Level::Info, &format!("created user {}", user.id));
    let location = format!("/users/{}", user.id);
    Ok(http::with_header(
        http::json(201, &user),
        "location",
        &location,
    ))
}

fn update(id: u64, request: &Request) -> Result<Response> {
    let input: UserInput = request.json_object()?;
    if input.id.is_some() {
        return Err(http::error(
            400,
            "field `id` cannot be changed: the path names the user; leave `id` out",
        ));
    }
    let name = input.name()?;
    let Some((_, previous)) = USERS.get::<User>(id)? else {
        return Err(not_found(id));
    };
    let user = User { id, name };
    if !USERS.replace(id, &previous, &user)? {
        return Err(http::error(
            409,
            &format!("user {id} was changed concurrently; retry"),
        ));
    }
    Ok(http::json(200, &user))
}

fn delete(id: u64) -> Result<Response> {
    let Some((user, _)) = USERS.get::<User>(id)? else {
        return Err(not_found(id));
    };
    // `delete` reads the record again and the commit checks what it saw, so
    // of two concurrent deletes only one finds the record; the other answers
    // 404 and publishes nothing.
    if !USERS.delete(id)? {
        return Err(not_found(id));
    }
    // The event commits with the delete: subscribers hear of it if and only
    // if the user is gone.
    let payload = serde_json::json!({ "id": id }).to_string();
    if let Err(e) = events::publish("user.deleted", &payload) {
        // An error response still commits what is staged: put the record
        // back, so a refused event leaves the user as it was.
        USERS.insert(id, &user)?;
        return Err(http::error(
            500,
            &format!("could not publish user.deleted: {e}"),
        ));
    }
    log(Level::Info, &format!("deleted user {id}"));
    Ok(http::no_content())
}

fn not_found(id: u64) -> Response {
    http::error(404, &format!("user {id} does not exist"))
}
