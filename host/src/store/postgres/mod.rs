//! The shared store: PostgreSQL through a bounded pool of connections, so
//! several `berth serve` replicas commit into one database. It behaves as
//! the SQLite store does; per-key advisory locks stand in for SQLite's one
//! writer, and leases with `SKIP LOCKED` share the outbox between replicas.

mod batch;
mod counters;
mod error;
mod group;
mod reads;
mod schema;
#[cfg(test)]
pub(crate) mod testdb;
#[cfg(test)]
mod tests;
mod versions;

pub use error::{ConnectError, redact};
pub use versions::PgVersions;

use super::health::Health;
use super::{
    Commit, CounterError, DELIVERY_LEASE_MS, Delivery, Outbox, Retry, Scan, ScanPage, Store,
    StoreError, WriteBatch, add_to_counter, now_ms, prefix_end,
};
use batch::{apply, lock_id, read};
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use error::{describe, is_serialization_failure, pool_error, store_error};
use schema::MigrateError;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

/// Connections in the pool unless the caller says otherwise.
pub const DEFAULT_POOL_SIZE: usize = 16;

/// Most request batches committed in one transaction unless the caller
/// says otherwise (see [`PostgresStore::with_max_group`]).
pub const DEFAULT_MAX_GROUP: usize = 32;

/// How long opening one connection may take, handshake included.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a caller waits for a pooled connection when all are busy
/// before the store answers `Unavailable`.
const POOL_WAIT: Duration = Duration::from_secs(5);

/// Set on every session at its start, before the URL's own `options`, so a
/// deployment may change them: how long one statement may run, how long it
/// may wait for a lock (a key's advisory lock, a row), and how long a
/// session may sit idle inside a transaction. Each ends the statement or
/// the session with an error berth answers as `Unavailable` (503), instead
/// of letting one stuck session hold keys and connections for good. A
/// request's own deadline is shorter; these bound what the server keeps
/// doing after berth has given up on it.
const SESSION_LIMITS: &str =
    "-c statement_timeout=30s -c lock_timeout=10s -c idle_in_transaction_session_timeout=60s";

/// Set on every session at its start, before the URL's own `options`: each
/// prepared statement runs its generic plan, planned once per connection,
/// instead of being planned again at every execution. PostgreSQL's default
/// keeps re-planning a statement whose custom plans look cheaper than its
/// generic one, which every statement taking arrays does (it cannot see
/// their length in a generic plan); under load that planning was a sixth
/// of the database's CPU per write. Every statement berth prepares is
/// written to plan well without seeing its parameters, and a test holds
/// each generic plan to index lookups on an empty table
/// (`tests::statements_plan_index_lookups_even_on_an_empty_table`).
const SESSION_PLANS: &str = "-c plan_cache_mode=force_generic_plan";

/// Set on every session after the URL's `options`, so nothing overrides it:
/// a commit is acknowledged only once its WAL is flushed (and, with
/// synchronous standbys, replicated), however the server or the database is
/// configured.
const SESSION_DURABILITY: &str = "-c synchronous_commit=on";

/// A key-value store and outbox in a PostgreSQL database, shared by every
/// replica connected to it.
pub struct PostgresStore {
    pool: Pool,
    /// The session settings the pool connects with, for
    /// [`PostgresStore::dedicated`] connections.
    config: tokio_postgres::Config,
    /// Whether commits succeed, for `/readyz`.
    health: Health,
    /// Request batches go through it, several to a transaction; `None`
    /// commits each alone.
    committer: Option<group::Committer>,
    /// Increments of one counter go through it, several to a statement;
    /// `None` sends each alone. On exactly when `committer` is.
    counters: Option<counters::Counters>,
    reads: Option<reads::Reads>,
}

/// Check that `url` is a PostgreSQL URL the client can use, without
/// connecting: what can be refused before a server binds its port.
pub fn check_url(url: &str) -> Result<(), ConnectError> {
    parse_url(url).map(drop)
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, ConnectError> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(ConnectError::Malformed {
            url: redact(url),
            why: "it must start with postgres:// or postgresql://".into(),
        });
    }
    url.parse().map_err(|e| ConnectError::Malformed {
        url: redact(url),
        why: describe(&e),
    })
}

impl PostgresStore {
    /// Connect to the database at `url` (`postgres://` or `postgresql://`)
    /// through a pool of at most `pool_size` connections (at least one),
    /// and bring its schema up to date. Connections are not encrypted
    /// (`NoTls`): berth expects PostgreSQL on a private network or the same
    /// host, as it is deployed beside the database.
    pub async fn connect(url: &str, pool_size: usize) -> Result<PostgresStore, ConnectError> {
        let shown = redact(url);
        let mut config = parse_url(url)?;
        let password = config.get_password().map(<[u8]>::to_vec);
        let options = match config.get_options() {
            Some(theirs) if !theirs.trim().is_empty() => {
                format!("{SESSION_LIMITS} {SESSION_PLANS} {theirs} {SESSION_DURABILITY}")
            }
            _ => format!("{SESSION_LIMITS} {SESSION_PLANS} {SESSION_DURABILITY}"),
        };
        config.options(options);
        if config.get_application_name().is_none() {
            config.application_name("berth");
        }
        config
            .connect_timeout(CONNECT_TIMEOUT)
            // A server that vanished (host down, network cut) is noticed
            // within about half a minute instead of TCP's hours.
            .keepalives_idle(Duration::from_secs(15))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(30));
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                // A pooled connection is reused unless it is known closed; a
                // query on one that died unnoticed fails as `Unavailable`.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let other = |why: String| ConnectError::Other {
            url: shown.clone(),
            why,
        };
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| other(e.to_string()))?;
        let classify =
            |e: &tokio_postgres::Error| ConnectError::from_postgres(&shown, password.as_deref(), e);
        let mut client = pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) => classify(&e),
            deadpool_postgres::PoolError::Timeout(_) => ConnectError::Unreachable {
                url: shown.clone(),
                why: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            },
            e => other(e.to_string()),
        })?;
        schema::migrate(&mut client).await.map_err(|e| match e {
            MigrateError::Newer { found, known } => ConnectError::NewerSchema { found, known },
            MigrateError::WrongEncoding(encoding) => other(format!(
                "the database's encoding is {encoding}; berth needs UTF8: create the database with ENCODING 'UTF8'"
            )),
            MigrateError::Postgres(e) => classify(&e),
        })?;
        let committer = group::Committer::start(
            pool.clone(),
            DEFAULT_MAX_GROUP,
            group::groups_in_flight(pool_size),
        );
        Ok(PostgresStore {
            pool,
            config,
            health: Health::default(),
            committer: Some(committer),
            counters: Some(counters::Counters::default()),
            reads: Some(reads::Reads::new(reads::in_flight(pool_size))),
        })
    }

    /// Commit at most `max_group` concurrent request batches in one
    /// transaction (group commit; see `group.rs`); 1 commits each batch in
    /// a transaction of its own, and sends each increment in a statement
    /// of its own (see `counters.rs`): one round trip per operation.
    pub fn with_max_group(mut self, max_group: usize) -> PostgresStore {
        let in_flight = group::groups_in_flight(self.pool.status().max_size);
        self.committer = (max_group > 1)
            .then(|| group::Committer::start(self.pool.clone(), max_group, in_flight));
        self.counters = (max_group > 1).then(counters::Counters::default);
        self.reads = (max_group > 1)
            .then(|| reads::Reads::new(reads::in_flight(self.pool.status().max_size)));
        self
    }

    /// The pool every store operation draws from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Stop handing out connections, for shutdown: operations started
    /// after this fail with [`StoreError::Closed`]; those under way finish,
    /// and their connections close as they come back.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Open one more connection with the pool's settings, outside the pool,
    /// for a session that must stay open (`LISTEN`). The caller drives the
    /// returned `Connection` (it delivers the notifications).
    pub async fn dedicated(
        &self,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        StoreError,
    > {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.config.connect(NoTls)).await {
            Ok(connected) => connected.map_err(store_error),
            Err(_) => Err(StoreError::Unavailable(format!(
                "PostgreSQL did not accept a connection within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Commit a small write to the `meta` table, to prove the database
    /// takes writes. Its outcome also sets what [`Store::write_failure`]
    /// reports.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let outcome = async {
            let conn = self.conn().await?;
            let stmt = prepared(
                &conn,
                "INSERT INTO meta (key, value) VALUES ('write-probe', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .await?;
            conn.execute(&stmt, &[&now_ms().to_string()])
                .await
                .map_err(store_error)?;
            Ok(())
        }
        .await;
        self.wrote(outcome)
    }

    /// Until `stop` resolves, probe the database once a second unless a
    /// commit succeeded in that second, so `/readyz` turns 503 when it stops
    /// taking writes (disk full, a standby after failover) even with no
    /// traffic, and 200 again once it takes them.
    pub async fn probe_writes(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let probe = || async { drop(self.probe().await) };
        self.health.probe_writes(probe, stop).await;
    }

    async fn conn(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Record a write's outcome for `/readyz`, logging a failure (but not
    /// a store closed for shutdown).
    fn record(&self, outcome: Result<(), &StoreError>) {
        match outcome {
            Ok(()) => self.health.record(Ok(())),
            Err(StoreError::Closed) => {}
            Err(e) => {
                self.health.record(Err(e));
                log_write_failure(e);
            }
        }
    }

    /// [`record`](Self::record) `outcome` and pass it on.
    fn wrote<T>(&self, outcome: Result<T, StoreError>) -> Result<T, StoreError> {
        self.record(outcome.as_ref().map(drop));
        outcome
    }

    /// One batch in a transaction of its own.
    async fn commit_alone(&self, ns: &str, batch: WriteBatch) -> Result<Commit, StoreError> {
        let mut conn = match self.conn().await {
            Ok(conn) => conn,
            Err(e) => return self.wrote(Err(e)),
        };
        // On a task of its own: a request dropped mid-commit (its client
        // went away) must not return the connection to the pool in the
        // middle of a transaction, nor leave a commit half-sent.
        let applying = {
            let ns = ns.to_string();
            tokio::spawn(async move {
                let applied = apply(&mut conn, &ns, &batch).await;
                (applied, batch)
            })
        };
        let (applied, batch) = match applying.await {
            Ok(done) => done,
            Err(e) => {
                return self.wrote(Err(StoreError::Failed(format!(
                    "the commit task failed: {e}"
                ))));
            }
        };
        match applied {
            Ok(Commit::Done) => self.wrote(Ok(Commit::Done)),
            Ok(refused) => Ok(refused),
            // The database rolled the transaction back: nothing was written,
            // and the caller runs the request again as for any conflict.
            Err(e) if is_serialization_failure(&e) => {
                let key = batch.expects.keys().chain(batch.writes.keys()).next();
                Ok(Commit::Conflict(key.cloned().unwrap_or_default()))
            }
            Err(e) => self.wrote(Err(store_error(e))),
        }
    }

    async fn try_increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, CounterError> {
        if delta == 0 {
            // Nothing to add: read, and write only a missing counter's 0,
            // leaving the stored text as it is (as the other backends do).
            let conn = self.conn().await?;
            return match read(&conn, ns, key).await? {
                Some(current) => add_to_counter(Some(&current), 0),
                None => add(&conn, ns, key, 0).await,
            };
        }
        match &self.counters {
            Some(counters) => counters.add(&self.pool, ns, key, delta).await,
            None => add(&self.conn().await?, ns, key, delta).await,
        }
    }
}

/// [`add`]'s statement. Text that is not a decimal i64 as Rust reads one
/// fails the cast in the ELSE branch (it depends on the row, so it is not
/// folded at planning); an overflowing sum fails the addition.
const ADD: &str = "
    WITH locked AS (
        SELECT pg_advisory_xact_lock($4),
               set_config('synchronous_commit', 'off', true)
    )
    INSERT INTO kv (ns, key, value)
    SELECT $1, $2, convert_to($3::bigint::text, 'UTF8') FROM locked
    ON CONFLICT (ns, key) DO UPDATE SET value = convert_to((
        CASE WHEN convert_from(kv.value, 'UTF8') ~ '^[+-]?[0-9]+$'
             THEN convert_from(kv.value, 'UTF8')::bigint
             ELSE (convert_from(kv.value, 'UTF8') || ' is not a counter')::bigint
        END + $3)::text, 'UTF8')
    RETURNING convert_from(value, 'UTF8')::bigint";

/// The whole increment in one statement, one round trip: take the key's
/// lock, then insert `delta` or add it to the decimal text there. The
/// statement's own transaction commits without waiting for the flush:
/// the key's lock is then held for the statement, not for a disk write,
/// so increments of one counter (every POST /users) do not queue behind
/// each other's fsync. It stays durable no later than any batch
/// committed after it, as the trait promises: that batch's synchronous
/// commit flushes the WAL up to its own record, which lies past this
/// one; an increment lost in a crash before then was never used by an
/// acknowledged write.
async fn add(
    conn: &deadpool_postgres::Client,
    ns: &str,
    key: &str,
    delta: i64,
) -> Result<i64, CounterError> {
    let statement = conn.prepare_cached(ADD).await.map_err(store_error)?;
    match conn
        .query_one(&statement, &[&ns, &key, &delta, &lock_id(ns, key)])
        .await
    {
        Ok(row) => Ok(row.get(0)),
        Err(e) => match e.code().map(|c| c.code()) {
            Some("22003") => Err(CounterError::Invalid(format!(
                "counter overflow: adding {delta} to the counter under `{key}`"
            ))),
            Some("22P02" | "22021") => Err(CounterError::Invalid(
                "the key holds a value that is not a counter".into(),
            )),
            _ => Err(CounterError::Store(store_error(e))),
        },
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    async fn get(&self, ns: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if key.contains('\0') {
            return Ok(None);
        }
        match &self.reads {
            Some(reads) => reads.get(&self.pool, ns, key).await,
            None => read(&self.conn().await?, ns, key).await,
        }
    }

    async fn scan(&self, ns: &str, scan: &Scan<'_>) -> Result<ScanPage, StoreError> {
        if scan.prefix.contains('\0') {
            return Ok(ScanPage::default());
        }
        // Among keys without U+0000, those above `a\0...` are those above `a`.
        let after = scan.after.map(|a| a.split('\0').next().unwrap_or(""));
        let end = prefix_end(scan.prefix);
        // One row past the limit tells whether the range goes on.
        let fetch = i64::try_from(scan.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let limit = i64::try_from(scan.limit).unwrap_or(i64::MAX);
        let budget = i64::try_from(scan.max_bytes).unwrap_or(i64::MAX);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&ns, &scan.prefix, &fetch];
        if let Some(after) = &after {
            params.push(after);
        }
        if let Some(end) = &end {
            params.push(end);
        }
        if scan.values {
            params.push(&limit);
            params.push(&budget);
        }
        let sql = scan_sql(after.is_some(), end.is_some(), scan.values);
        let conn = self.conn().await?;
        let stmt = prepared(&conn, &sql).await?;
        let rows = conn.query(&stmt, &params).await.map_err(store_error)?;
        let mut page = ScanPage::default();
        let mut bytes = 0;
        for row in rows {
            let key: String = row.try_get(0).map_err(store_error)?;
            let size: i32 = row.try_get(1).map_err(store_error)?;
            if !page.admit(
                scan,
                &mut bytes,
                usize::try_from(size).unwrap_or(usize::MAX),
            ) {
                break;
            }
            let value: Option<Vec<u8>> = row.try_get(2).map_err(store_error)?;
            page.entries.push((key, value.unwrap_or_default()));
        }
        Ok(page)
    }

    async fn increment(&self, ns: &str, key: &str, delta: i64) -> Result<i64, CounterError> {
        refuse_nul([key])?;
        let outcome = self.try_increment(ns, key, delta).await;
        match &outcome {
            Ok(_) => self.record(Ok(())),
            Err(CounterError::Store(e)) => self.record(Err(e)),
            Err(CounterError::Invalid(_)) => {}
        }
        outcome
    }

    async fn commit(&self, ns: &str, batch: WriteBatch) -> Result<Commit, StoreError> {
        if batch.is_empty() && batch.expects.is_empty() {
            return Ok(Commit::Done);
        }
        refuse_nul(
            batch
                .writes
                .keys()
                .chain(batch.expects.keys())
                .map(String::as_str),
        )?;
        if let Some(event_id) = batch.applies.as_ref().filter(|id| id.contains('\0')) {
            return Err(StoreError::Failed(format!(
                "the event id {event_id:?} contains U+0000, which PostgreSQL cannot store"
            )));
        }
        // Deliveries' acknowledgements check rows that a group's key locks
        // do not cover: they commit alone.
        let alone = batch.completes.is_some() || batch.applies.is_some();
        match &self.committer {
            Some(committer) if !alone => {
                let outcome = committer.commit(ns, batch).await;
                match outcome {
                    Ok(Commit::Done) => self.wrote(Ok(Commit::Done)),
                    Ok(refused) => Ok(refused),
                    Err(e) => self.wrote(Err(e)),
                }
            }
            _ => self.commit_alone(ns, batch).await,
        }
    }

    fn write_failure(&self) -> Option<String> {
        self.health.failure()
    }
}

#[async_trait::async_trait]
impl Outbox for PostgresStore {
    async fn claim_due(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let leased_until = now_ms.saturating_add(DELIVERY_LEASE_MS);
        let conn = self.conn().await?;
        let stmt = prepared(&conn, &claim_sql()).await?;
        let rows = conn
            .query(&stmt, &[&now_ms, &limit, &leased_until])
            .await
            .map_err(store_error)?;
        let mut due = rows
            .iter()
            .map(|row| Ok((row.try_get::<_, i64>(8)?, delivery(row)?)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()
            .map_err(store_error)?;
        // RETURNING comes in no particular order.
        due.sort_by_key(|(next_at, d)| (*next_at, d.id));
        Ok(due.into_iter().map(|(_, d)| d).collect())
    }

    async fn fail_delivery(&self, id: i64, error: &str, retry: Retry) -> Result<(), StoreError> {
        let (dead, next_at) = match retry {
            Retry::At(at) => (false, at),
            Retry::DeadLetter => (true, 0),
        };
        let outcome = async {
            let conn = self.conn().await?;
            let stmt = prepared(
                &conn,
                "UPDATE deliveries SET attempts = attempts + 1, last_error = $2, dead = $3,
                 next_at = $4, leased_until = 0 WHERE id = $1",
            )
            .await?;
            conn.execute(&stmt, &[&id, &error, &dead, &next_at])
                .await
                .map_err(store_error)
        }
        .await;
        self.wrote(outcome).map(drop)
    }

    async fn dead_letters(&self) -> Result<Vec<Delivery>, StoreError> {
        let conn = self.conn().await?;
        let stmt = prepared(
            &conn,
            &format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE dead ORDER BY id"),
        )
        .await?;
        let rows = conn.query(&stmt, &[]).await.map_err(store_error)?;
        rows.iter()
            .map(delivery)
            .collect::<Result<_, _>>()
            .map_err(store_error)
    }

    async fn retry_dead_letter(&self, id: i64) -> Result<bool, StoreError> {
        let outcome = async {
            let conn = self.conn().await?;
            let stmt = prepared(
                &conn,
                "UPDATE deliveries SET dead = false, attempts = 0, next_at = $2, leased_until = 0
                 WHERE id = $1 AND dead",
            )
            .await?;
            conn.execute(&stmt, &[&id, &now_ms()])
                .await
                .map_err(store_error)
        }
        .await;
        self.wrote(outcome).map(|changed| changed == 1)
    }

    async fn complete(&self, id: i64) -> Result<bool, StoreError> {
        let outcome = async {
            let conn = self.conn().await?;
            // A commit acknowledging the same delivery holds its row lock;
            // this waits for it, then finds the row gone.
            let stmt = prepared(&conn, "DELETE FROM deliveries WHERE id = $1 AND NOT dead").await?;
            conn.execute(&stmt, &[&id]).await.map_err(store_error)
        }
        .await;
        self.wrote(outcome).map(|deleted| deleted == 1)
    }

    async fn backlog(&self) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        // Counted on the partial index `deliveries_due`, which holds
        // exactly the live rows.
        let stmt = prepared(&conn, "SELECT count(*) FROM deliveries WHERE NOT dead").await?;
        let row = conn.query_one(&stmt, &[]).await.map_err(store_error)?;
        let count: i64 = row.try_get(0).map_err(store_error)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn applied(&self, ns: &str, event_id: &str) -> Result<bool, StoreError> {
        if event_id.contains('\0') {
            return Ok(false);
        }
        let conn = self.conn().await?;
        let stmt = prepared(&conn, APPLIED).await?;
        let row = conn
            .query_one(&stmt, &[&ns, &event_id])
            .await
            .map_err(store_error)?;
        row.try_get(0).map_err(store_error)
    }

    async fn prune_applied(&self, before_ms: i64) -> Result<u64, StoreError> {
        let outcome = async {
            let conn = self.conn().await?;
            let stmt = prepared(&conn, PRUNE_APPLIED).await?;
            conn.execute(&stmt, &[&before_ms])
                .await
                .map_err(store_error)
        }
        .await;
        self.wrote(outcome)
    }
}

/// The statement for one page of a scan: `$1` the namespace, `$2` the
/// prefix, `$3` the rows to fetch; then, in this order and only when
/// present, the key to start after, the end of the prefix's range, and (for
/// values) the page's row limit and byte budget.
fn scan_sql(after: bool, end: bool, values: bool) -> String {
    let mut range = String::new();
    let mut n = 3;
    if after {
        n += 1;
        range.push_str(&format!(" AND key > ${n}"));
    }
    if end {
        n += 1;
        range.push_str(&format!(" AND key < ${n}"));
    }
    if !values {
        return format!(
            "SELECT key, octet_length(key), NULL::bytea FROM kv
             WHERE ns = $1 AND key >= $2{range} ORDER BY key LIMIT $3"
        );
    }
    let (limit, budget) = (n + 1, n + 2);
    // The running byte count is computed on the server, and a value is sent
    // only for a row that fits the page: the row that ends it (and the one
    // past the limit) come back as a key and a size. `octet_length` reads a
    // large value's size without its data.
    format!(
        "SELECT key, size, CASE WHEN n <= ${limit} AND (n = 1 OR total <= ${budget})
                           THEN value END
         FROM (SELECT key, value, octet_length(key) + octet_length(value) AS size,
                      row_number() OVER w AS n,
                      sum(octet_length(key) + octet_length(value)) OVER w AS total
               FROM kv WHERE ns = $1 AND key >= $2{range}
               WINDOW w AS (ORDER BY key ROWS UNBOUNDED PRECEDING)
               ORDER BY key LIMIT $3) AS page
         ORDER BY key"
    )
}

/// A statement from the connection's cache, prepared on first use.
async fn prepared(
    client: &impl GenericClient,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    client.prepare_cached(sql).await.map_err(store_error)
}

/// PostgreSQL's text cannot hold U+0000, which keys may contain elsewhere:
/// refuse such a key with a message that says so, rather than the
/// server's encoding error.
fn refuse_nul<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<(), StoreError> {
    match keys.into_iter().find(|key| key.contains('\0')) {
        Some(key) => Err(StoreError::Failed(format!(
            "the key {key:?} contains U+0000, which PostgreSQL cannot store"
        ))),
        None => Ok(()),
    }
}

/// Due deliveries, leased to the caller. `SKIP LOCKED`: rows another
/// replica is claiming right now are left to it rather than waited for, so
/// two claims never return the same delivery and never queue behind each
/// other.
fn claim_sql() -> String {
    format!(
        "UPDATE deliveries SET leased_until = $3
         WHERE id IN (SELECT id FROM deliveries
                      WHERE NOT dead AND next_at <= $1 AND leased_until <= $1
                      ORDER BY next_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
         RETURNING {DELIVERY_COLUMNS}, next_at"
    )
}

const APPLIED: &str = "SELECT EXISTS (SELECT 1 FROM applied WHERE ns = $1 AND event_id = $2)";

const PRUNE_APPLIED: &str = "DELETE FROM applied WHERE at < $1";

const DELIVERY_COLUMNS: &str =
    "id, event_id, topic, payload, source, recipient, attempts, last_error";

fn delivery(row: &tokio_postgres::Row) -> Result<Delivery, tokio_postgres::Error> {
    let attempts: i32 = row.try_get(6)?;
    Ok(Delivery {
        id: row.try_get(0)?,
        event_id: row.try_get(1)?,
        topic: row.try_get(2)?,
        payload: row.try_get(3)?,
        source: row.try_get(4)?,
        recipient: row.try_get(5)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_error: row.try_get(7)?,
    })
}

/// Log a failed write at most once per
/// [`Throttle::EVERY`](crate::logging::Throttle::EVERY): while the database
/// is down every request fails, and a line for each would flood the log.
fn log_write_failure(e: &StoreError) {
    static THROTTLE: crate::logging::Throttle = crate::logging::Throttle::new();
    if let Some(suppressed) = THROTTLE.allow() {
        tracing::error!(error = %e, suppressed, "PostgreSQL write failed; check that the server is up and takes writes (disk space, a primary rather than a standby)");
    }
}
