//! How PostgreSQL's failures reach berth: [`ConnectError`] for opening the
//! store (what the operator must fix, or what to retry), [`StoreError`] for
//! everything after, and [`redact`] for every message that names the URL.

use crate::store::StoreError;
use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

/// Why [`PostgresStore::connect`](super::PostgresStore::connect) failed.
/// No message holds the password: URLs are shown through [`redact`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse, or is not a `postgres://` or
    /// `postgresql://` URL.
    #[error(
        "`{url}` is not a PostgreSQL URL ({why}): write it as postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    Malformed { url: String, why: String },
    /// The server turned berth away: authentication failed, the database
    /// does not exist, or the user lacks a privilege. Retrying will not help.
    #[error(
        "PostgreSQL at {url} refused berth: {why}; check the user, password and database in the URL, and the user's privileges"
    )]
    Refused { url: String, why: String },
    /// The server could not be reached or is not taking connections yet
    /// (refused, timed out, unknown host, starting up or shutting down):
    /// the caller retries these with backoff.
    #[error("cannot reach PostgreSQL at {url}: {why}")]
    Unreachable { url: String, why: String },
    /// The database was migrated by a newer berth.
    #[error(
        "the database holds schema version {found}, this berth knows up to {known}: upgrade berth"
    )]
    NewerSchema { found: i32, known: i32 },
    /// Anything else the server or the client reported.
    #[error("PostgreSQL at {url}: {why}")]
    Other { url: String, why: String },
}

impl ConnectError {
    /// Whether the same connect may succeed later, so the caller should
    /// retry it with backoff rather than give up.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Unreachable { .. })
    }

    /// Classify an error met while connecting or migrating. `password` is
    /// scrubbed from the message, in case a library ever echoes it.
    pub(super) fn from_postgres(
        url: &str,
        password: Option<&[u8]>,
        e: &tokio_postgres::Error,
    ) -> ConnectError {
        let url = url.to_string();
        let why = scrub(describe(e), password);
        match e.code() {
            Some(code) if refused(code) => ConnectError::Refused { url, why },
            Some(code) if transient(code) => ConnectError::Unreachable { url, why },
            Some(_) => ConnectError::Other { url, why },
            // The client's own authentication step failed, e.g. the server
            // asked for a password and the URL has none.
            None if e.to_string().starts_with("authentication error") => {
                ConnectError::Refused { url, why }
            }
            None if lost(e) => ConnectError::Unreachable { url, why },
            None => ConnectError::Other { url, why },
        }
    }
}

/// `url` with its password replaced by `***`, wherever the URL parser would
/// find one: after the user in `USER:PASSWORD@`, or in a `password=`
/// parameter. The user, host, port, database and other parameters stay, so
/// the message still says which server was meant.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // Not a URL the parser reads (`postgres//u:p@h`, `u:p@h/db`), but
        // an `@` may still end a password typed before it: show nothing
        // before the last one.
        let query = url.find('?').unwrap_or(url.len());
        return match url[..query].rfind('@') {
            Some(at) => format!("***{}", hide_password_params(&url[at..])),
            None => hide_password_params(url),
        };
    };
    let mut shown = format!("{scheme}://");
    // tokio-postgres takes the credentials up to the first `@`, and the
    // user up to the first `:` in them. The password is hidden up to the
    // last `@` before the query, so that one with an `@` left unencoded
    // does not show its tail either.
    let with_password = rest
        .split_once('@')
        .and_then(|(credentials, after)| Some((credentials.split_once(':')?.0, after)));
    let rest = match with_password {
        Some((user, after)) => {
            shown.push_str(user);
            shown.push_str(":***");
            let query = after.find('?').unwrap_or(after.len());
            let last_at = after[..query].rfind('@').map_or(0, |i| i + 1);
            shown.push('@');
            &after[last_at..]
        }
        None => rest,
    };
    shown.push_str(&hide_password_params(rest));
    shown
}

/// Replace the value of every `password` parameter, in a URL's query
/// (`?password=x&...`) or a key-value string (`password = 'x y' ...`).
fn hide_password_params(text: &str) -> String {
    const NAME: &str = "password";
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(NAME) {
        let boundary = rest[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c == '?' || c == '&' || c.is_whitespace());
        let (head, tail) = rest.split_at(at + NAME.len());
        shown.push_str(head);
        rest = tail;
        let after_name = rest.trim_start();
        let Some(value) = after_name.strip_prefix('=').filter(|_| boundary) else {
            continue;
        };
        shown.push_str("=***");
        let value = value.trim_start();
        rest = &value[value_len(value)..];
    }
    shown.push_str(rest);
    shown
}

/// The length of the parameter value at the start of `text`: a quoted
/// value up to its closing quote (a backslash escapes the next character),
/// else up to the next `&` or white space.
fn value_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    if text.starts_with('\'') {
        chars.next();
        let mut escaped = false;
        for (i, c) in chars {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '\'' => return i + 1,
                _ => {}
            }
        }
        return text.len();
    }
    text.find(|c: char| c == '&' || c.is_whitespace())
        .unwrap_or(text.len())
}

/// Remove the password's text from a message.
fn scrub(message: String, password: Option<&[u8]>) -> String {
    match password.and_then(|p| std::str::from_utf8(p).ok()) {
        Some(password) if !password.is_empty() && message.contains(password) => {
            message.replace(password, "***")
        }
        _ => message,
    }
}

/// An error's whole story: the server's message and SQLSTATE, or the
/// client's error and its causes (tokio-postgres shows only the first).
pub(super) fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{} (SQLSTATE {})", db.message(), db.code().code());
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Authentication failed (class 28), the database does not exist, or the
/// user lacks a privilege.
fn refused(code: &SqlState) -> bool {
    code.code().starts_with("28")
        || *code == SqlState::INVALID_CATALOG_NAME
        || *code == SqlState::INSUFFICIENT_PRIVILEGE
}

/// Errors that waiting may cure: a connection exception (class 08), too
/// few resources (class 53: too many connections, a full disk, no memory),
/// a server starting up or shutting down (57P01-57P03), a read-only
/// server (a standby, or a primary during failover), a statement cancelled
/// by `statement_timeout` (57014) or a lock not granted within
/// `lock_timeout` (55P03).
fn transient(code: &SqlState) -> bool {
    let code = code.code();
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "25006" | "57014" | "55P03"
        )
}

/// The connection was lost or never made: closed, or an I/O error
/// (refused, reset, timed out, unknown host).
fn lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() || e.to_string().starts_with("timeout") {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if cause.is::<std::io::Error>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether a transaction lost a serialization race or was chosen as a
/// deadlock victim: nothing was written, and running it again may succeed.
pub(super) fn is_serialization_failure(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|code| {
        *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED
    })
}

/// A query's error, as the store's.
pub(super) fn store_error(e: tokio_postgres::Error) -> StoreError {
    let transient = match e.code() {
        Some(code) => transient(code),
        None => lost(&e),
    };
    if transient {
        StoreError::Unavailable(describe(&e))
    } else {
        StoreError::Failed(describe(&e))
    }
}

/// Why no pooled connection could be had.
pub(super) fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => store_error(e),
        PoolError::Closed => StoreError::Closed,
        PoolError::Timeout(_) => StoreError::Unavailable(format!(
            "no PostgreSQL connection could be had in time ({e}): every pooled connection is busy, or the server is slow to accept new ones"
        )),
        PoolError::NoRuntimeSpecified | PoolError::PostCreateHook(_) => {
            StoreError::Failed(e.to_string())
        }
    }
}
