//! The PostgreSQL schema as a numbered list of migrations, applied in order
//! at connect by whichever replica gets there first, under an advisory lock
//! so replicas starting together never apply one twice.

use deadpool_postgres::GenericClient;

/// Migration `n` (from 1) is `MIGRATIONS[n - 1]`. Append only: a migration
/// that has shipped is never edited, since databases already hold it.
pub const MIGRATIONS: &[&str] = &[
    // 1: every component's keys, the outbox, and the write probe's row.
    //
    // Keys collate as "C", by their UTF-8 bytes like SQLite's BINARY, so a
    // scan pages through them in the same order on both. A delivery is due
    // at `next_at`, not again before `leased_until` once claimed (both in
    // ms since the epoch), and kept with `dead` once dead-lettered.
    r#"
    CREATE TABLE kv (
        ns text NOT NULL,
        key text COLLATE "C" NOT NULL,
        value bytea NOT NULL,
        PRIMARY KEY (ns, key)
    );
    CREATE TABLE deliveries (
        id bigserial PRIMARY KEY,
        event_id text NOT NULL,
        topic text NOT NULL,
        payload text NOT NULL,
        source text NOT NULL,
        recipient text NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        next_at bigint NOT NULL,
        dead boolean NOT NULL DEFAULT false,
        last_error text,
        leased_until bigint NOT NULL DEFAULT 0
    );
    CREATE INDEX deliveries_due ON deliveries (next_at, id) WHERE NOT dead;
    CREATE INDEX deliveries_dead ON deliveries (id) WHERE dead;
    CREATE TABLE meta (
        key text PRIMARY KEY,
        value text NOT NULL
    );
    "#,
    // 2: component versions shared by the replicas (store/postgres/
    // versions.rs): the wasm of the versions a pointer names, the live and
    // previous pointers per component, and every version a manifest offered.
    r#"
    CREATE TABLE component_versions (
        component text NOT NULL,
        sha256 text NOT NULL,
        wasm bytea NOT NULL,
        uploaded_at_ms bigint NOT NULL,
        uploaded_by text NOT NULL,
        PRIMARY KEY (component, sha256)
    );
    CREATE TABLE component_live (
        component text PRIMARY KEY,
        sha256 text NOT NULL,
        previous text,
        changed_at_ms bigint NOT NULL,
        changed_by text NOT NULL
    );
    CREATE TABLE component_manifest_seen (
        component text NOT NULL,
        sha256 text NOT NULL,
        PRIMARY KEY (component, sha256)
    );
    "#,
    // 3: which namespace applied which event (`WriteBatch::applies`), so
    // an event a broker delivers again is refused rather than applied
    // twice; `at` (ms since the epoch) lets old records be pruned.
    r#"
    CREATE TABLE applied (
        ns text NOT NULL,
        event_id text NOT NULL,
        at bigint NOT NULL,
        PRIMARY KEY (ns, event_id)
    );
    CREATE INDEX applied_at ON applied (at);
    "#,
];

/// The advisory lock migrations hold, in the two-int4 key space, which
/// never overlaps the one-bigint keys the per-key locks use.
const LOCK_CLASS: i32 = 0x6265_7274; // "bert"
const LOCK_MIGRATIONS: i32 = 1;

/// Why the schema could not be brought up to date.
#[derive(Debug)]
pub(super) enum MigrateError {
    Newer { found: i32, known: i32 },
    WrongEncoding(String),
    Postgres(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for MigrateError {
    fn from(e: tokio_postgres::Error) -> Self {
        MigrateError::Postgres(e)
    }
}

/// The schema version this code knows up to.
pub(super) fn known_version() -> i32 {
    i32::try_from(MIGRATIONS.len()).expect("fewer than 2^31 migrations")
}

/// Apply every migration the database lacks, all in one transaction that
/// holds the migrations' advisory lock: a replica that starts at the same
/// time waits for it, then finds the work done. Refuses a database whose
/// schema is newer than this code, or whose encoding is not UTF-8 (keys'
/// byte lengths and order are those of UTF-8).
pub(super) async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), MigrateError> {
    let encoding: String = client
        .query_one("SELECT current_setting('server_encoding')", &[])
        .await?
        .try_get(0)?;
    if encoding != "UTF8" {
        return Err(MigrateError::WrongEncoding(encoding));
    }
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_MIGRATIONS],
    )
    .await?;
    let found = version(&tx).await?;
    let known = known_version();
    if found > known {
        return Err(MigrateError::Newer { found, known });
    }
    if found == known {
        return Ok(tx.commit().await?);
    }
    // Created only when missing, so a user without the CREATE privilege can
    // run on a database an administrator migrated.
    tx.batch_execute("CREATE TABLE IF NOT EXISTS berth_schema (version integer PRIMARY KEY)")
        .await?;
    for (version, sql) in (found + 1..).zip(&MIGRATIONS[usize::try_from(found).unwrap_or(0)..]) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO berth_schema (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "migrated the PostgreSQL schema");
    }
    Ok(tx.commit().await?)
}

/// The highest migration applied; 0 for an empty database.
async fn version(client: &impl GenericClient) -> Result<i32, tokio_postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('berth_schema') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    if !exists {
        return Ok(0);
    }
    client
        .query_one("SELECT coalesce(max(version), 0) FROM berth_schema", &[])
        .await?
        .try_get(0)
}
