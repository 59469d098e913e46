//! Users in `wasi:keyvalue`: each record is the JSON `{"id","name"}` under
//! `user/<id, zero-padded to 20 digits>`, so that the store's byte order of
//! keys is id order; ids come from an `atomics.increment` counter, which the
//! host makes durable at once and never rolls back.

use crate::http::{self, Result};
use serde::Serialize;

/// `wasi:keyvalue@0.2.0-draft` from the WIT Berth implements. The `wasi`
/// crate does not cover it; a module of its own keeps the generated `wasi`
/// module from shadowing the crate.
mod kv {
    wit_bindgen::generate!({
        path: "../../host/wit-keyvalue",
        world: "imports",
    });

    pub use self::wasi::keyvalue::atomics::increment;
    pub use self::wasi::keyvalue::store::{Bucket, Error, open};
}

/// The largest id a client may choose: 2^53 - 1, the largest integer every
/// JSON parser holds exactly, far below the counter's limit.
const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// Most bytes of records on one listing page (a larger record comes alone):
/// well under the host's response cap, and little memory per request.
const PAGE_BYTES: usize = 1024 * 1024;

/// Tries at allocating an id before giving up: clients may have taken ids
/// ahead of the counter, and a bound keeps a broken counter from spinning
/// until the deadline.
const CREATE_TRIES: usize = 1000;

const PREFIX: &str = "user/";
const COUNTER: &str = "meta/user/next-id";
const SEEDED: &str = "meta/user/seeded";
const SEED_CLAIMS: &str = "meta/user/seed-claims";

#[derive(Serialize)]
pub struct User {
    pub id: u64,
    pub name: String,
}

/// One page of a listing.
pub struct Page {
    /// The users as a JSON array, in id order.
    pub json: Vec<u8>,
    /// The last id on the page when more follow (the next page's `after`).
    pub next: Option<u64>,
}

fn key(id: u64) -> String {
    format!("{PREFIX}{id:020}")
}

/// The default bucket: the component's own namespace in Berth's store.
fn bucket() -> Result<kv::Bucket> {
    kv::open("").map_err(store_error)
}

/// The stored JSON of user `id`, if there is one.
pub fn get(id: u64) -> Result<Option<Vec<u8>>> {
    bucket()?.get(&key(id)).map_err(store_error)
}

/// Store the original's John and Jane, once. The marker answers the common
/// case in one read; the claim, an increment that only one request ever
/// sees as 1, keeps two first requests from both seeding, so a sample user
/// deleted in between is not brought back.
pub fn seed() -> Result<()> {
    let bucket = bucket()?;
    if bucket.get(SEEDED).map_err(store_error)?.is_some() {
        return Ok(());
    }
    if kv::increment(&bucket, SEED_CLAIMS, 1).map_err(store_error)? != 1 {
        return Ok(());
    }
    bucket.set(SEEDED, b"1").map_err(store_error)?;
    for (id, name) in [(1, "John"), (2, "Jane")] {
        insert(&User {
            id,
            name: name.to_string(),
        })?;
    }
    Ok(())
}

/// Store `user` under its id unless that id is taken; returns whether it
/// was stored. The draft has no compare-and-swap: two requests inserting
/// the same id at the same moment can both succeed, the later write
/// winning. Ids above [`MAX_CLIENT_ID`] are refused with 400, so the
/// counter keeps room to allocate after them.
pub fn insert(user: &User) -> Result<bool> {
    if user.id > MAX_CLIENT_ID {
        return Err(http::error(
            400,
            &format!("field `id` must be at most {MAX_CLIENT_ID}"),
        ));
    }
    let bucket = bucket()?;
    let key = key(user.id);
    if bucket.exists(&key).map_err(store_error)? {
        return Ok(false);
    }
    bucket.set(&key, &encode(user)?).map_err(store_error)?;
    raise_counter_to(&bucket, user.id)?;
    Ok(true)
}

/// Allocate the next free id from the counter and store a user under it.
/// Every id the counter hands out is handed out once, even if this request
/// fails later.
pub fn create(name: &str) -> Result<User> {
    let bucket = bucket()?;
    for _ in 0..CREATE_TRIES {
        let id = kv::increment(&bucket, COUNTER, 1).map_err(store_error)?;
        let key = key(id);
        if bucket.exists(&key).map_err(store_error)? {
            continue;
        }
        let user = User {
            id,
            name: name.to_string(),
        };
        bucket.set(&key, &encode(&user)?).map_err(store_error)?;
        return Ok(user);
    }
    Err(http::error(503, "could not allocate a free id; try again"))
}

/// Remove user `id`; returns whether it existed.
pub fn delete(id: u64) -> Result<bool> {
    let bucket = bucket()?;
    let key = key(id);
    if !bucket.exists(&key).map_err(store_error)? {
        return Ok(false);
    }
    bucket.delete(&key).map_err(store_error)?;
    Ok(true)
}

/// Up to `limit` users with ids above `after`, in id order, the page ending
/// early once its records reach [`PAGE_BYTES`].
///
/// The draft's `list-keys` starts only at the beginning (its cursor is the
/// host's, valid in one request), so the page walks the keys from the first
/// to `after`: a page costs reads in proportion to the users before it.
/// Berth bounds the reads of one request (32 MiB), which holds over a
/// million keys of this shape.
pub fn page(after: u64, limit: usize) -> Result<Page> {
    let bucket = bucket()?;
    let mut json = b"[".to_vec();
    let (mut count, mut bytes, mut last) = (0usize, 0usize, 0u64);
    let mut cursor = None;
    loop {
        let listed = bucket.list_keys(cursor).map_err(store_error)?;
        if listed.keys.is_empty() {
            break;
        }
        for key in &listed.keys {
            let Some(id) = key
                .strip_prefix(PREFIX)
                .and_then(|id| id.parse::<u64>().ok())
            else {
                continue;
            };
            if id <= after {
                continue;
            }
            if count >= limit {
                return Ok(page_of(json, Some(last)));
            }
            // Listed and gone is a user deleted since: it is not listed.
            let Some(record) = bucket.get(key).map_err(store_error)? else {
                continue;
            };
            if count > 0 && bytes + record.len() > PAGE_BYTES {
                return Ok(page_of(json, Some(last)));
            }
            if count > 0 {
                json.push(b',');
            }
            json.extend_from_slice(&record);
            count += 1;
            bytes += record.len();
            last = id;
        }
        // Keys come in byte order: past the users, nothing more is theirs.
        let past_users = listed
            .keys
            .last()
            .is_some_and(|k| k.as_str() > PREFIX && !k.starts_with(PREFIX));
        match listed.cursor {
            Some(next) if !past_users => cursor = Some(next),
            _ => break,
        }
    }
    Ok(page_of(json, None))
}

fn page_of(mut json: Vec<u8>, next: Option<u64>) -> Page {
    json.push(b']');
    Page { json, next }
}

/// Make sure the counter never hands out `id` or anything below it.
fn raise_counter_to(bucket: &kv::Bucket, id: u64) -> Result<()> {
    let current = kv::increment(bucket, COUNTER, 0).map_err(store_error)?;
    if current < id {
        kv::increment(bucket, COUNTER, id - current).map_err(store_error)?;
    }
    Ok(())
}

fn encode(user: &User) -> Result<Vec<u8>> {
    serde_json::to_vec(user).map_err(|e| http::error(500, &format!("could not encode a user: {e}")))
}

/// A store failure, as the client sees it.
fn store_error(e: kv::Error) -> http::Reply {
    let reason = match e {
        kv::Error::NoSuchStore => "no such store".to_string(),
        kv::Error::AccessDenied => "access denied".to_string(),
        kv::Error::Other(reason) => reason,
    };
    http::error(503, &format!("store unavailable: {reason}"))
}
