//! The orders service: `{id, user_id, status}` records under /orders, with
//! the status moving only from `pending` to `completed` or `cancelled`.

use berth_sdk::http::{self, Result};
use berth_sdk::services;
use berth_sdk::store::{Collection, store_error};
use berth_sdk::{Event, Handler, Level, Request, Response, Subscriber, kv, log};
use serde::{Deserialize, Serialize};

const ORDERS: Collection = Collection::new("order");

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "lowercase")]
enum Status {
    Pending,
    Completed,
    Cancelled,
}

impl Status {
    fn parse(raw: &str) -> Result<Status> {
        match raw {
            "pending" => Ok(Status::Pending),
            "completed" => Ok(Status::Completed),
            "cancelled" => Ok(Status::Cancelled),
            other => Err(http::error(
                400,
                &format!("unknown status `{other}`: expected pending, completed or cancelled"),
            )),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Completed => "completed",
            Status::Cancelled => "cancelled",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Order {
    id: u64,
    user_id: u64,
    status: Status,
}

/// The body of POST /orders and PATCH /orders/{id}. `status` is read as a
/// string so an unknown value gets a message naming the allowed ones.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderInput {
    #[serde(default, deserialize_with = "http::present")]
    id: Option<u64>,
    #[serde(default, deserialize_with = "http::present")]
    user_id: Option<u64>,
    #[serde(default, deserialize_with = "http::present")]
    status: Option<String>,
}

impl OrderInput {
    fn status(&self) -> Result<Option<Status>> {
        self.status.as_deref().map(Status::parse).transpose()
    }
}

struct Orders;

impl Handler for Orders {
    fn handle(request: Request) -> Response {
        route(&request).unwrap_or_else(|response| response)
    }
}

impl Subscriber for Orders {
    fn on_event(event: Event) -> std::result::Result<(), String> {
        match event.topic.as_str() {
            "user.deleted" => cancel_pending_orders_of(&event.payload, &event.id),
            // Topics this version does not know are acknowledged, not retried.
            _ => Ok(()),
        }
    }
}

berth_sdk::export_subscriber!(Orders);

/// A deleted user's pending orders become cancelled; others stay as they
/// are. Cancelling is idempotent, so a redelivered event changes nothing.
fn cancel_pending_orders_of(payload: &str, event_id: &str) -> std::result::Result<(), String> {
    #[derive(Deserialize)]
    struct Deleted {
        id: u64,
    }
    let deleted: Deleted =
        serde_json::from_str(payload).map_err(|e| format!("bad user.deleted payload: {e}"))?;
    // The sample orders count: seeded later, John's pending order would
    // outlive his deletion.
    seed().map_err(|r| describe(&r))?;
    // Before reading the orders: an order for this user committed after
    // this point makes this delivery conflict and run again, and then it
    // sees the order.
    mark_user_deleted(deleted.id, event_id).map_err(|r| describe(&r))?;
    let orders: Vec<Order> = ORDERS.all().map_err(|r| describe(&r))?;
    for order in orders
        .iter()
        .filter(|o| o.user_id == deleted.id && o.status == Status::Pending)
    {
        let Some((mut current, previous)) =
            ORDERS.get::<Order>(order.id).map_err(|r| describe(&r))?
        else {
            continue;
        };
        current.status = Status::Cancelled;
        ORDERS
            .replace(order.id, &previous, &current)
            .map_err(|r| describe(&r))?;
        log(
            Level::Info,
            &format!(
                "cancelled order {} of deleted user {}",
                order.id, deleted.id
            ),
        );
    }
    Ok(())
}

fn describe(response: &Response) -> String {
    format!(
        "{} {}",
        response.status,
        String::from_utf8_lossy(&response.body)
    )
}

// The saga's guard. The users service says whether a user exists, but its
// answer is not part of this component's commit: a `user.deleted` delivery
// could run between that call and the order's commit and leave a pending
// order of a deleted user. Two keys per user close the gap inside this
// component's own transactions, so that of an order and the handler,
// whichever commits second sees the other, at any delivery delay:
// - `guard/user/<id>/state`: `deleted:<event id>` once a `user.deleted`
//   handler has run (each run writes a value of its own), else `live`. An
//   order reads it before asking users, and its commit expects it
//   unchanged (a compare-and-swap to `live`, which leaves `live` as it is,
//   so orders do not conflict with one another). A handler that commits in
//   between makes the order run again, and users then answers 404: 422.
// - `guard/user/<id>/last-order`: every order naming the user overwrites
//   it with a value of its own. The handler reads it before the orders and
//   its commit expects it unchanged, so an order committed after that read
//   makes the handler run again, and then it sees and cancels the order.
// A user created again with a deleted user's id is `live` again with its
// first order, since users then answers 200 after the handler ran.

fn state_key(user_id: u64) -> String {
    format!("guard/user/{user_id:020}/state")
}

fn last_order_key(user_id: u64) -> String {
    format!("guard/user/{user_id:020}/last-order")
}

const LIVE: &[u8] = b"live";

/// Compare-and-swap attempts on a guard key before answering 503; one only
/// fails when another request changes the key between its read and swap.
const GUARD_ATTEMPTS: usize = 8;

/// Check with the users service that `user_id` exists (422 if not) and make
/// this request's commit depend on no `user.deleted` handler for the user
/// committing since before that check. Call before staging the order: an
/// error response still commits what was staged.
fn hold_user(user_id: u64) -> Result<()> {
    let key = state_key(user_id);
    for _ in 0..GUARD_ATTEMPTS {
        let state = kv::get(&key).map_err(store_error)?;
        check_user(user_id)?;
        if kv::compare_and_swap(&key, state.as_deref(), LIVE).map_err(store_error)? {
            return Ok(());
        }
    }
    Err(http::error(
        503,
        &format!("user {user_id} kept changing under concurrent requests; retry"),
    ))
}

/// Record that order `order_id` now names `user_id`, with a value no other
/// write produces (the order id and the clock), so a concurrent handler
/// for the user conflicts.
fn touch_user(user_id: u64, order_id: u64) -> Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    kv::set(
        &last_order_key(user_id),
        format!("{order_id}@{nanos}").as_bytes(),
    )
    .map_err(store_error)
}

/// In the handler of event `event_id`, before it reads the orders: make its
/// commit depend on no order naming `user_id` committing after this point
/// (`last-order` keeps the value read, and the commit checks it still holds
/// it), and set the user's state to this run's tombstone.
fn mark_user_deleted(user_id: u64, event_id: &str) -> Result<()> {
    let tombstone = format!("deleted:{event_id}").into_bytes();
    for (key, keep) in [(last_order_key(user_id), true), (state_key(user_id), false)] {
        let mut swapped = false;
        for _ in 0..GUARD_ATTEMPTS {
            let current = kv::get(&key).map_err(store_error)?;
            let new = match (&current, keep) {
                (Some(value), true) => value.clone(),
                (None, true) => b"none".to_vec(),
                (_, false) => tombstone.clone(),
            };
            swapped = kv::compare_and_swap(&key, current.as_deref(), &new).map_err(store_error)?;
            if swapped {
                break;
            }
        }
        if !swapped {
            return Err(http::error(
                503,
                &format!("`{key}` kept changing under concurrent requests; retry"),
            ));
        }
    }
    Ok(())
}

/// Ask the users service whether `user_id` exists: 422 if it does not, 503
/// if the users service cannot say.
fn check_user(user_id: u64) -> Result<()> {
    let request = Request::new("GET", &format!("/users/{user_id}"));
    match services::call("users", &request) {
        Ok(response) if response.status == 200 => Ok(()),
        Ok(response) if response.status == 404 => {
            Err(http::error(422, &format!("user {user_id} does not exist")))
        }
        Ok(response) => Err(http::error(
            503,
            &format!("users service answered {}; try again", response.status),
        )),
        Err(e) => Err(http::error(503, &format!("users service unavailable: {e}"))),
    }
}

/// Store the original's two orders, once: the first request that needs
/// them seeds them. Every write seeds first, so a stored order means the
/// seeding is done.
fn seed() -> Result<()> {
    ORDERS.seed(&[
        (
            1,
            Order {
                id: 1,
                user_id: 1,
                status: Status::Pending,
            },
        ),
        (
            2,
            Order {
                id: 2,
                user_id: 2,
                status: Status::Completed,
            },
        ),
    ])
}

fn route(request: &Request) -> Result<Response> {
    let method = request.method.as_str();
    match request.segments().as_slice() {
        ["orders"] | ["orders", ""] => match method {
            "GET" => seed().and_then(|()| list(request)),
            "POST" => seed().and_then(|()| create(request)),
            _ => Ok(http::method_not_allowed(method, &["GET", "POST"])),
        },
        ["orders", id] => {
            let id = http::parse_id("order", id)?;
            match method {
                "GET" => get(id),
                "PATCH" => seed().and_then(|()| patch(id, request)),
                "DELETE" => seed().and_then(|()| delete(id)),
                _ => Ok(http::method_not_allowed(
                    method,
                    &["GET", "PATCH", "DELETE"],
                )),
            }
        }
        _ => Ok(http::error(
            404,
            &format!("no such resource: {}", request.path),
        )),
    }
}

/// One page of orders, in id order, optionally of one user: `?limit=`
/// (default 100, at most 1000), `?after=` (the cursor) and `?user_id=`, with
/// a `Link` to the next page if any. A filtered page looks at a bounded
/// number of orders, so it may come back short, even empty, with a `Link`.
fn list(request: &Request) -> Result<Response> {
    let user_filter = request.query_int("user_id", 1..=http::MAX_ID)?;
    let paging = http::Paging::from_query(request)?;
    let page = ORDERS.page::<Order>(paging.after, paging.limit, |o| {
        user_filter.is_none_or(|uid| o.user_id == uid)
    })?;
    Ok(http::listing(&page, |after| {
        let user = user_filter.map_or(String::new(), |uid| format!("&user_id={uid}"));
        format!("/orders?limit={}&after={after}{user}", paging.limit)
    }))
}

/// One read when the order exists, the common case; only a miss checks
/// whether the sample orders still need seeding.
fn get(id: u64) -> Result<Response> {
    if let Some((order, _)) = ORDERS.get::<Order>(id)? {
        return Ok(http::json(200, &order));
    }
    seed()?;
    match ORDERS.get::<Order>(id)? {
        Some((order, _)) => Ok(http::json(200, &order)),
        None => Err(not_found(id)),
    }
}

fn create(request: &Request) -> Result<Response> {
    let input: OrderInput = request.json_object()?;
    let user_id = match input.user_id {
        None => return Err(http::error(400, "missing field `user_id`")),
        Some(uid) => http::check_id_field("user_id", uid)?,
    };
    let status = input.status()?.unwrap_or(Status::Pending);
    hold_user(user_id)?;
    let order = match input.id {
        Some(0) => return Err(http::error(400, "field `id` must be a positive integer")),
        Some(id) => {
            let order = Order {
                id,
                user_id,
                status,
            };
            if !ORDERS.insert(id, &order)? {
                return Err(http::error(409, &format!("order {id} already exists")));
            }
            order
        }
        None => ORDERS.create(|id| Order {
            id,
            user_id,
            status,
        })?,
    };
    touch_user(user_id, order.id)?;
    log(
        Level::Info,
        &format!("created order {} for user {user_id}", order.id),
    );
    let location = format!("/orders/{}", order.id);
    Ok(http::with_header(
        http::json(201, &order),
        "location",
        &location,
    ))
}

fn patch(id: u64, request: &Request) -> Result<Response> {
    let input: OrderInput = request.json_object()?;
    if input.id.is_some() {
        return Err(http::error(
            400,
            "field `id` cannot be changed: the path names the order; leave `id` out",
        ));
    }
    if let Some(uid) = input.user_id {
        http::check_id_field("user_id", uid)?;
    }
    let status = input.status()?;
    if status.is_none() && input.user_id.is_none() {
        return Err(http::error(
            400,
            "nothing to change: give `status` or `user_id`",
        ));
    }
    let Some((mut order, previous)) = ORDERS.get::<Order>(id)? else {
        return Err(not_found(id));
    };
    if let Some(next) = status
        && next != order.status
    {
        if order.status != Status::Pending {
            return Err(http::error(
                409,
                &format!(
                    "order {id} is {} and can no longer change to {}",
                    order.status.name(),
                    next.name()
                ),
            ));
        }
        order.status = next;
    }
    if let Some(uid) = input.user_id
        && uid != order.user_id
    {
        hold_user(uid)?;
        touch_user(uid, id)?;
        order.user_id = uid;
    }
    if !ORDERS.replace(id, &previous, &order)? {
        return Err(http::error(
            409,
            &format!("order {id} was changed concurrently; retry"),
        ));
    }
    Ok(http::json(200, &order))
}

fn delete(id: u64) -> Result<Response> {
    if ORDERS.delete(id)? {
        Ok(http::no_content())
    } else {
        Err(not_found(id))
    }
}

fn not_found(id: u64) -> Response {
    http::error(404, &format!("order {id} does not exist"))
}
