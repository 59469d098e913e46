//! The native baseline of the benchmarks: the endpoints the benchmark
//! workloads use, written as plain hyper handlers with no sandbox, over the
//! same store as Berth (`berth::store::SqliteStore`: SQLite in WAL mode,
//! `synchronous=FULL`, group commit) and with the same durability: a write
//! is answered only once its commit is on disk.
//!
//! It does the work the users and orders components do, in the same shape
//! (a list is the first page of a key range):
//! records are JSON under `user/<20-digit id>`, ids come from a counter, a
//! new record is inserted only if its key is absent, and an order checks
//! that its user exists. `--commit serial` lets one commit run at a time,
//! which is the one-fsync-per-request baseline group commit is measured
//! against.

use anyhow::Context as _;
use berth::store::{Commit, Scan, SqliteStore, Store, WriteBatch};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Directory of the store.
    #[arg(long)]
    data: PathBuf,
    /// `group`: concurrent writes share commits, as in Berth. `serial`: one
    /// commit (one fsync) at a time.
    #[arg(long, value_enum, default_value_t = CommitMode::Group)]
    commit: CommitMode,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CommitMode {
    Group,
    Serial,
}

const FIXED: &[u8] = br#"[{"id":1,"name":"John"},{"id":2,"name":"Jane"}]"#;

struct Baseline {
    store: SqliteStore,
    /// Held across a write's commit in `serial` mode.
    serial: Option<tokio::sync::Mutex<()>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = SqliteStore::open(&args.data)?;
    let baseline = Arc::new(Baseline {
        store,
        serial: (args.commit == CommitMode::Serial).then(|| tokio::sync::Mutex::new(())),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        baseline.seed().await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        println!("listening on http://{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let baseline = baseline.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let baseline = baseline.clone();
                    async move { Ok::<_, std::convert::Infallible>(baseline.handle(req).await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

impl Baseline {
    /// The original's two users, as the users component seeds them.
    async fn seed(&self) -> anyhow::Result<()> {
        if self.store.get("users", &user_key(1)).await?.is_some() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (id, name) in [(1, "John"), (2, "Jane")] {
            let record = serde_json::json!({ "id": id, "name": name }).to_string();
            batch.writes.insert(user_key(id), Some(record.into_bytes()));
        }
        batch
            .writes
            .insert("meta/user/next-id".into(), Some(b"2".to_vec()));
        self.store.commit("users", batch).await?;
        Ok(())
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method(), segments.as_slice()) {
            (&Method::GET, ["static"]) => reply(StatusCode::OK, FIXED.to_vec()),
            // A first page of users, as the users component lists them:
            // a key range of at most 100 records and 1 MiB.
            (&Method::GET, ["users"]) => {
                let scan = Scan {
                    prefix: "user/",
                    after: None,
                    limit: 100,
                    max_bytes: 1024 * 1024,
                    values: true,
                };
                match self.store.scan("users", &scan).await {
                    Ok(page) => {
                        let mut body = b"[".to_vec();
                        for (i, (_, record)) in page.entries.iter().enumerate() {
                            if i > 0 {
                                body.push(b',');
                            }
                            body.extend_from_slice(record);
                        }
                        body.push(b']');
                        reply(StatusCode::OK, body)
                    }
                    Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                }
            }
            (&Method::GET, ["users", id]) => match id.parse::<u64>() {
                Ok(id) => match self.store.get("users", &user_key(id)).await {
                    Ok(Some(record)) => reply(StatusCode::OK, record),
                    Ok(None) => error(StatusCode::NOT_FOUND, "no such user"),
                    Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                },
                Err(_) => error(StatusCode::BAD_REQUEST, "bad id"),
            },
            (&Method::POST, ["users"]) => {
                let Some(body) = json_body(req).await else {
                    return error(StatusCode::BAD_REQUEST, "bad JSON");
                };
                let Some(name) = body.get("name").and_then(|n| n.as_str()) else {
                    return error(StatusCode::BAD_REQUEST, "name is required");
                };
                let name = name.to_string();
                self.create(
                    "users",
                    "user",
                    |id| serde_json::json!({ "id": id, "name": name }),
                )
                .await
            }
            (&Method::POST, ["orders"]) => {
                let Some(body) = json_body(req).await else {
                    return error(StatusCode::BAD_REQUEST, "bad JSON");
                };
                let Some(user_id) = body.get("user_id").and_then(|n| n.as_u64()) else {
                    return error(StatusCode::BAD_REQUEST, "user_id is required");
                };
                match self.store.get("users", &user_key(user_id)).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return error(StatusCode::UNPROCESSABLE_ENTITY, "no such user"),
                    Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                }
                self.create(
                    "orders",
                    "order",
                    |id| serde_json::json!({ "id": id, "user_id": user_id, "status": "pending" }),
                )
                .await
            }
            _ => error(StatusCode::NOT_FOUND, "no such route"),
        }
    }

    /// Allocate an id, insert the record under it if absent, and answer 201
    /// once the commit is durable.
    async fn create(
        &self,
        ns: &str,
        kind: &str,
        make: impl Fn(u64) -> serde_json::Value,
    ) -> Response<Full<Bytes>> {
        let _serial = match &self.serial {
            Some(lock) => Some(lock.lock().await),
            None => None,
        };
        for _ in 0..8 {
            let counter = format!("meta/{kind}/next-id");
            let id = match self.store.increment(ns, &counter, 1).await {
                Ok(id) => id as u64,
                Err(_) => return error(StatusCode::SERVICE_UNAVAILABLE, "counter failed"),
            };
            let key = format!("{kind}/{id:020}");
            let record = make(id).to_string().into_bytes();
            let mut batch = WriteBatch::default();
            batch.expects.insert(key.clone(), None);
            batch.writes.insert(key, Some(record.clone()));
            match self.store.commit(ns, batch).await {
                Ok(Commit::Done) => return reply(StatusCode::CREATED, record),
                Ok(Commit::Conflict(_) | Commit::AlreadyDelivered) => continue,
                Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
            }
        }
        error(StatusCode::SERVICE_UNAVAILABLE, "contention")
    }
}

fn user_key(id: u64) -> String {
    format!("user/{id:020}")
}

async fn json_body(req: Request<Incoming>) -> Option<serde_json::Value> {
    let body = req.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

fn reply(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    reply(
        status,
        serde_json::json!({ "error": message })
            .to_string()
            .into_bytes(),
    )
}
