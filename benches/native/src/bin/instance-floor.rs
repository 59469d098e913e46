//! The floor under Berth's request path: what one call into a component
//! costs with no HTTP at all. It loads components through Berth's own
//! runtime, with the settings `berth serve` uses (pooling allocator,
//! keep-resident memory with pagemap scanning, epoch deadline, memory cap,
//! concurrency cap), and calls them back to back on one thread through
//! `dispatch::invoke`, the function the HTTP server calls, so each call
//! runs in a fresh instance and commits its writes, as a request would.
//!
//! `benches/run.sh floor` runs it pinned to one core and sets its time per
//! call beside native hyper's time per request: the sandbox alone costs
//! this much, whatever the HTTP server in front of it does.

use anyhow::Context as _;
use berth::bindings::{Header, Request};
use berth::dispatch::invoke;
use berth::executor::Executor;
use berth::runtime::{CallEnv, CallLimits, EngineConfig, Runtime};
use berth::store::SqliteStore;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// The bench component answering fixed JSON (`fixed.wasm`).
    #[arg(long)]
    fixed: PathBuf,
    /// A fresh directory for the store the users component reads.
    #[arg(long)]
    data: PathBuf,
    /// Timed calls per case, after as many again untimed.
    #[arg(long, default_value_t = 20_000)]
    calls: u32,
    /// Run only this case (`static` or `read`).
    #[arg(long)]
    only: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let runtime = Runtime::new(&EngineConfig {
        max_instances: 256,
        max_memory_bytes: 32 * 1024 * 1024,
        cache_dir: None,
        ..EngineConfig::default()
    })?;
    let limits = || CallLimits::new(Duration::from_secs(10), 32 * 1024 * 1024, 128);
    let fixed =
        std::fs::read(&args.fixed).with_context(|| format!("reading {}", args.fixed.display()))?;
    let fixed = runtime.load("fixed", &fixed, "fixed", limits())?;
    let users = runtime.load("users", berth::builtin::USERS, "users", limits())?;
    let store: Arc<dyn berth::store::Store> = Arc::new(SqliteStore::open(&args.data)?);
    let env = CallEnv {
        store,
        log_sink: None,
        services: None,
        request_id: "floor".into(),
        depth: 0,
        deadline: Instant::now() + Duration::from_secs(3600),
    };
    // The users component seeds its two users on its first write; do one so
    // every timed read finds user 1 with a single store read.
    let seed = request("POST", "/users", br#"{"name":"Seed"}"#);
    call(&users, &env, &seed, 201).await?;

    let wanted = |case: &str| args.only.as_deref().is_none_or(|only| only == case);
    if wanted("static") {
        let static_request = request("GET", "/static", b"");
        measure("static", &fixed, &env, &static_request, args.calls).await?;
    }
    if wanted("read") {
        let read_request = request("GET", "/users/1", b"");
        measure("read", &users, &env, &read_request, args.calls).await?;
    }
    Ok(())
}

/// The request wrk sends, as Berth hands it to a component.
fn request(method: &str, path: &str, body: &[u8]) -> Request {
    let mut headers = vec![
        Header {
            name: "host".into(),
            value: "127.0.0.1".into(),
        },
        Header {
            name: "x-request-id".into(),
            value: "floor".into(),
        },
    ];
    if !body.is_empty() {
        headers.push(Header {
            name: "content-type".into(),
            value: "application/json".into(),
        });
    }
    Request {
        method: method.into(),
        path: path.into(),
        query: String::new(),
        headers,
        body: body.to_vec(),
    }
}

/// One request through `component`, which must answer `status`.
async fn call(
    component: &Executor,
    env: &CallEnv,
    request: &Request,
    status: u16,
) -> anyhow::Result<()> {
    let response = invoke(component, env.clone(), request)
        .await
        .map_err(|e| anyhow::anyhow!("{} {}: {e}", request.method, request.path))?;
    anyhow::ensure!(
        response.status == status,
        "{} {} answered {}",
        request.method,
        request.path,
        response.status
    );
    Ok(())
}

/// Call `component` `calls` times untimed, then `calls` times timed, and
/// print the time per call.
async fn measure(
    case: &str,
    component: &Executor,
    env: &CallEnv,
    request: &Request,
    calls: u32,
) -> anyhow::Result<()> {
    let mut timed = Duration::ZERO;
    for round in 0..2 {
        let started = Instant::now();
        for _ in 0..calls {
            call(component, env, request, 200).await?;
        }
        if round == 1 {
            timed = started.elapsed();
        }
    }
    let us = timed.as_secs_f64() * 1e6 / f64::from(calls);
    println!(
        "RESULT case={case} calls={calls} us_per_call={us:.2} calls_per_s={:.0}",
        1e6 / us
    );
    Ok(())
}
