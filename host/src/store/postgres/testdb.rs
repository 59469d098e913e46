//! For tests: a fresh database per test on the PostgreSQL server that
//! `BERTH_TEST_POSTGRES` names (`./test.sh` starts one), dropped afterwards.
//! Without it the test is skipped, unless `BERTH_REQUIRE_POSTGRES=1`.

/// The server's URL, or `None` (having said why) when the test is skipped.
/// Panics when `BERTH_REQUIRE_POSTGRES=1` and there is none, so CI cannot
/// pass without testing PostgreSQL.
pub(crate) fn server() -> Option<String> {
    match std::env::var("BERTH_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let why = "BERTH_TEST_POSTGRES is not set (./test.sh sets it when PostgreSQL's binaries are installed; or run tests/pg/cluster.sh start DIR and export the URL it prints)";
            assert!(
                std::env::var("BERTH_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "BERTH_REQUIRE_POSTGRES=1 but {why}"
            );
            eprintln!("skipped: {why}");
            None
        }
    }
}

/// Run `test` with the URL of a database made for it alone, then drop the
/// database, whether the test passed or panicked. Skipped (see [`server`])
/// without a server.
pub(crate) async fn with_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(server) = server() else {
        return;
    };
    let name = unique_name();
    let admin = admin(&server).await;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating a test database");
    let outcome = tokio::spawn(test(with_dbname(&server, &name))).await;
    drop_database(&admin, &name).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Drop database `name`, cutting off its sessions. An autovacuum worker
/// in it belongs to the server, which the test's user may not cut off: it
/// ends on its own within moments, so the drop is tried again.
async fn drop_database(admin: &tokio_postgres::Client, name: &str) {
    let mut attempts = 0;
    loop {
        match admin
            .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await
        {
            Ok(()) => return,
            Err(e) if attempts < 100 => {
                attempts += 1;
                if attempts == 1 {
                    eprintln!("dropping test database {name} again: {e}");
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("dropping test database {name}: {e}"),
        }
    }
}

/// A connection to the server's own database, for creating others.
pub(crate) async fn admin(server: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to BERTH_TEST_POSTGRES: {e}"));
    tokio::spawn(connection);
    client
}

/// A database name no other test (in this run or another) uses.
pub(crate) fn unique_name() -> String {
    format!(
        "berth_t_{}",
        crate::capabilities::services::new_event_id().replace('-', "_")
    )
}

/// `url` naming database `name` instead of its own.
pub(crate) fn with_dbname(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{name}{query}", &base[..authority_end])
}
