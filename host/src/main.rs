//! The `berth` command line: parse arguments, load everything, bind, serve.

use anyhow::{Context as _, bail};
use berth::admin::{self, AdminConfig, AdminToken};
use berth::app::App;
use berth::broker::{Broker, BrokerConfig};
use berth::dev;
use berth::events::{self, DeadLetters, DeliveryConfig};
use berth::manifest::Manifest;
use berth::mesh::Mesh;
use berth::runtime::{EngineConfig, Runtime};
use berth::server::{self, ServerConfig, Startup};
use berth::store::{Backend, DataLock, PgVersions, PostgresStore, SqliteStore, redact};
use berth::watch;
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Serve microservices as sandboxed WebAssembly components.
#[derive(Parser)]
#[command(name = "berth", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `text` for people, `json` (one object per line)
    /// for log collectors. RUST_LOG filters as usual (default `info`).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
// Parsed once at start; boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// Load the manifest's components and serve them over HTTP.
    Serve(ServeArgs),
    /// Compile the manifest's components into a compile cache and exit, so
    /// that `berth serve --cache-dir DIR` (an image built with it, say)
    /// starts without compiling.
    Compile(CompileArgs),
    /// See and retry events that exhausted their delivery attempts. Works on
    /// the store directly, whether or not a server is running on it.
    #[command(subcommand)]
    DeadLetters(DeadLettersCommand),
    /// Upload a new version of a component to a running berth through its
    /// admin API; print the version now live, the one it replaced and how
    /// to roll back.
    Push(PushArgs),
    /// Swap a running berth's component back to the version the live one
    /// replaced (a second rollback undoes the first).
    Rollback(RollbackArgs),
    /// Create a component project (Rust, Python or JavaScript) with a
    /// manifest, a test under berth-test and a README, ready to build.
    New(NewArgs),
    /// Develop a component: build the project in DIR, serve its manifest
    /// (DIR/berth.toml) with every `serve` flag available, and on each
    /// saved change build again and hot-swap the result in. A failed build
    /// prints its errors and the running version keeps serving.
    Dev(DevArgs),
}

#[derive(clap::Args)]
struct DevArgs {
    /// The project: its files are watched and its build runs there.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// The command that builds the project, run by `sh -c` in DIR. Default:
    /// `cargo build --release` when DIR has a Cargo.toml, else `./build.sh`.
    #[arg(long, value_name = "COMMAND")]
    build: Option<String>,
    /// Seconds a build may run before it is killed and counts as failed.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=HOUR))]
    build_timeout_secs: u64,
    /// The `serve` flags; --manifest defaults to DIR/berth.toml and
    /// --watch is always on.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(clap::Args)]
struct NewArgs {
    /// The component's name, as the manifest will call it: lower-case
    /// letters, digits and dashes, starting with a letter.
    name: String,
    /// The component's language: rust, python or js.
    #[arg(long, default_value = "rust", value_name = "LANG")]
    lang: String,
    /// Where to create the project (default: ./NAME). It must be absent or
    /// empty.
    #[arg(long, value_name = "PATH")]
    dir: Option<PathBuf>,
    /// The Berth checkout whose SDK and berth-test the project depends on
    /// (default: the one this berth was built from).
    #[arg(long, value_name = "PATH")]
    berth_src: Option<PathBuf>,
}

#[derive(clap::Args)]
struct PushArgs {
    /// The component's name in the running berth's manifest.
    name: String,
    /// The new version's .wasm file.
    file: PathBuf,
    #[command(flatten)]
    admin: AdminTarget,
}

#[derive(clap::Args)]
struct RollbackArgs {
    /// The component's name in the running berth's manifest.
    name: String,
    #[command(flatten)]
    admin: AdminTarget,
}

/// Which running berth to talk to, and the token it was started with.
#[derive(clap::Args)]
struct AdminTarget {
    /// The admin listener's base URL, as `berth serve --admin` printed it
    /// (`admin listening on http://...`).
    #[arg(long, env = "BERTH_ADMIN", value_name = "URL")]
    admin: String,
    /// A file holding the admin token; without it, the BERTH_ADMIN_TOKEN
    /// environment variable.
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct CompileArgs {
    /// The manifest whose components to compile; without it, the built-in
    /// users and orders.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// The compile cache to fill: the directory `berth serve --cache-dir`
    /// will read (with an embedded store and no --cache-dir, `DATA/compiled`).
    #[arg(long)]
    cache_dir: PathBuf,
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Print the dead-lettered deliveries as a JSON array.
    List {
        #[command(flatten)]
        place: DeadLetterArgs,
    },
    /// Queue a dead-lettered delivery again, with a fresh attempt count.
    Retry {
        /// The dead letter's `id`, as `list` shows it: a number for the
        /// store's, COMPONENT/EVENT-ID for the broker's.
        id: String,
        #[command(flatten)]
        place: DeadLetterArgs,
    },
}

/// Where dead letters are: the store's outbox, or with --broker the
/// dead-letter queues of the manifest's subscribers.
#[derive(clap::Args)]
struct DeadLetterArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The broker whose dead-letter queues to use (the one `serve
    /// --broker` delivers through), instead of the store.
    #[arg(long, env = "BERTH_BROKER", hide_env_values = true, value_name = "URL")]
    broker: Option<String>,
    /// The manifest the servers run, which names the subscribers whose
    /// dead-letter queues to read (with --broker). Default: the built-in one.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

/// Which store: the embedded one in --data, or a shared one at --store.
#[derive(clap::Args)]
struct StoreArgs {
    /// Directory of the embedded store (SQLite), created if missing.
    #[arg(long, default_value = "./data", conflicts_with = "store")]
    data: PathBuf,
    /// A PostgreSQL database to use instead of --data's SQLite file, shared
    /// by any number of berth processes: postgres://USER:PASS@HOST:PORT/DB.
    /// Also read from the BERTH_STORE environment variable, so the password
    /// need not sit on a command line; it never appears in a log line.
    #[arg(long, env = "BERTH_STORE", hide_env_values = true, value_name = "URL")]
    store: Option<String>,
    /// Most connections to the --store database from this process.
    #[arg(long, default_value_t = 16, value_parser = usize_in(1..=1000))]
    store_connections: usize,
    /// Most concurrent requests' writes committed in one --store
    /// transaction (group commit: they share its round trips and its
    /// flush); 1 commits each request's writes on its own, and sends each
    /// increment of a counter in a statement of its own rather than
    /// summed with the others waiting for it, and each read alone rather
    /// than with the other reads waiting.
    #[arg(long, default_value_t = berth::store::DEFAULT_MAX_GROUP, value_parser = usize_in(1..=1000))]
    store_group: usize,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port. The port opens at
    /// once, with /readyz answering 503 until start-up is done; then berth
    /// prints `listening on http://IP:PORT` to stdout.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// Directory for compiled components, kept between starts. Default:
    /// DATA/compiled with the embedded store; with --store, a `berth`
    /// folder under $XDG_CACHE_HOME (or ~/.cache), else under the
    /// temporary directory. With --store, berth writes nothing else to disk.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Manifest (TOML) naming the components and their routes. Without it,
    /// berth serves its built-in users and orders services.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Most open connections at once. At the cap, the keep-alive
    /// connection idle longest is closed for a new client; if every one is
    /// busy, new clients wait in the backlog.
    #[arg(long, default_value_t = 1024, value_parser = usize_in(1..=1_000_000))]
    max_connections: usize,
    /// Most requests handled at once; beyond it requests get 503 with
    /// Retry-After. The instance pool is sized from it and --max-call-depth.
    #[arg(long, default_value_t = 256, value_parser = usize_in(1..=100_000))]
    max_in_flight: usize,
    /// Largest request body in bytes; larger requests get 413.
    #[arg(long, default_value_t = 1024 * 1024, value_parser = usize_in(0..=GIB))]
    max_body_bytes: usize,
    /// Largest response body a component may return, in bytes; a larger
    /// one becomes a 500 and is not sent.
    #[arg(long, default_value_t = 16 * 1024 * 1024, value_parser = usize_in(1..=GIB))]
    max_response_bytes: usize,
    /// Seconds a client has to send a request's headers before the
    /// connection is closed, so slow clients cannot hold connections.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=HOUR))]
    header_timeout_secs: u64,
    /// Seconds to wait for each next piece of a request body (and of an
    /// admin upload); a client that pauses longer, or averages under 64
    /// KiB/s, gets 408. Bodies are read whole before a request takes an
    /// in-flight slot.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=HOUR))]
    body_timeout_secs: u64,
    /// Seconds a response may wait for a client that reads nothing before
    /// the connection is dropped, and the response's memory freed.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=HOUR))]
    write_timeout_secs: u64,
    /// Largest request line plus headers in bytes; larger requests get 431.
    #[arg(long, default_value_t = 32 * 1024, value_parser = usize_in(1024..=1024 * 1024))]
    max_header_bytes: usize,
    /// Seconds to let in-flight requests finish after SIGTERM or Ctrl-C.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=HOUR))]
    drain_timeout_secs: u64,
    /// Seconds to keep serving after SIGTERM with /readyz answering 503, so
    /// a load balancer stops sending traffic before the drain begins.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=HOUR))]
    shutdown_delay_secs: u64,
    /// Deepest chain of cross-service calls; a deeper call fails with `too-deep`.
    #[arg(
        long,
        default_value_t = berth::mesh::DEFAULT_MAX_CALL_DEPTH,
        value_parser = clap::value_parser!(u32).range(0..=64)
    )]
    max_call_depth: u32,
    /// MiB of each pooled linear memory kept mapped between instances and
    /// reset in place: instances start faster when it covers what a
    /// component's heap starts with (an interpreter's 12 MiB, say), and
    /// each idle pool slot may hold that much memory.
    #[arg(long, default_value_t = 1, value_parser = usize_in(0..=1024))]
    keep_resident_mb: usize,
    /// Delivery attempts before an event goes to the dead-letter list (with
    /// --broker, the subscriber's dead-letter queue).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    event_max_attempts: u32,
    /// Milliseconds before the second delivery attempt; doubled for each later one.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=HOUR * 1000))]
    event_backoff_ms: u64,
    /// Deliver events through this RabbitMQ broker, shared by every replica:
    /// amqp://USER:PASS@HOST:PORT/VHOST (amqps:// for TLS). Also read from
    /// BERTH_BROKER. Without it, this process delivers events itself. While
    /// the broker is unreachable, writes go on and their events wait in the
    /// store's outbox.
    #[arg(long, env = "BERTH_BROKER", hide_env_values = true, value_name = "URL")]
    broker: Option<String>,
    /// With --broker: most unacknowledged events this process takes at once
    /// from each subscriber's queue, which bounds its concurrent deliveries.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1000))]
    event_prefetch: u16,
    /// Milliseconds between looks for due deliveries when the queue is idle.
    /// A request that publishes wakes delivery at once; the poll finds
    /// retries that fall due, and events committed by other replicas.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    event_poll_ms: u64,
    /// Watch each component's wasm file and hot-swap a new build in once it
    /// has settled. A file that fails to compile or is not a `service`
    /// component is rejected (and logged); the old version keeps serving.
    #[arg(long)]
    watch: bool,
    /// Serve the admin API (list, upload, roll back components) on this
    /// address, e.g. 127.0.0.1:9090. Off unless given. Once ready, berth
    /// prints `admin listening on http://IP:PORT` after the `listening on`
    /// line. Requests need `Authorization: Bearer <token>`, the token coming
    /// from --admin-token-file or the BERTH_ADMIN_TOKEN environment variable.
    #[arg(long, value_name = "ADDR")]
    admin: Option<SocketAddr>,
    /// File holding the admin token (surrounding whitespace ignored); takes
    /// precedence over BERTH_ADMIN_TOKEN.
    #[arg(long, value_name = "FILE", requires = "admin")]
    admin_token_file: Option<PathBuf>,
    /// Allow --admin on an address other than loopback. The admin API
    /// replaces running code: only expose it on a trusted network.
    #[arg(long, requires = "admin")]
    admin_allow_remote: bool,
    /// Largest wasm the admin API accepts, in bytes; larger uploads get 413.
    /// --watch reads no larger file either.
    #[arg(
        long,
        default_value_t = 64 * 1024 * 1024,
        value_name = "BYTES",
        value_parser = usize_in(1..=GIB)
    )]
    admin_max_wasm_bytes: usize,
}

// Every numeric flag of `serve` has a range, checked by clap while parsing:
// a value outside it is refused with a message naming the flag and the
// range (exit code 2), never clamped. `usize` flags use `usize_in(..)`,
// the others `clap::value_parser!(u64).range(..)` (or `u32`).

/// A gibibyte, the ceiling of the byte-size flags.
const GIB: u64 = 1024 * 1024 * 1024;
/// An hour in seconds, the ceiling of the time flags.
const HOUR: u64 = 3600;

/// The parser of a `usize` flag, refusing values outside `range`.
fn usize_in(range: std::ops::RangeInclusive<u64>) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::new().range(range)
}

/// The environment variable that holds the admin token.
const ADMIN_TOKEN_ENV: &str = "BERTH_ADMIN_TOKEN";

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let stderr = berth::logging::BufferedStderr::start();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(stderr.clone());
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    let format = match cli.log_format {
        LogFormat::Text => berth::logging::Format::Text,
        LogFormat::Json => berth::logging::Format::Json,
    };
    berth::logging::install_request_log(stderr.clone(), format);
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Compile(args) => compile(args),
        Command::DeadLetters(command) => dead_letters(command),
        Command::Push(args) => push(args),
        Command::Rollback(args) => rollback(args),
        Command::New(args) => new(args),
        Command::Dev(args) => dev(args),
    };
    stderr.flush_now();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `berth dead-letters`: on the store or broker itself, beside a running
/// server or not.
fn dead_letters(command: DeadLettersCommand) -> anyhow::Result<()> {
    let (args, retry) = match command {
        DeadLettersCommand::List { place } => (place, None),
        DeadLettersCommand::Retry { place, id } => (place, Some(id)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let dead = match &args.broker {
            Some(url) => {
                berth::broker::check_url(url)?;
                let manifest = match &args.manifest {
                    Some(path) => Manifest::from_file(path)?,
                    None => Manifest::builtin(),
                };
                let broker = Broker::new(BrokerConfig {
                    url: url.clone(),
                    delivery: DeliveryConfig::default(),
                    prefetch: 1,
                    replica: berth::fleet::replica_name(),
                });
                DeadLetters::Broker {
                    broker,
                    components: manifest.subscribers(),
                }
            }
            None => DeadLetters::Store(open_outbox(&args.store).await?),
        };
        match retry {
            None => println!("{}", serde_json::to_string_pretty(&dead.list().await?)?),
            Some(id) => {
                dead.retry(&id).await?;
                println!("dead letter {id} queued again");
            }
        }
        Ok(())
    })
}

/// The outbox of the store `args` names, opened beside any server using it.
async fn open_outbox(args: &StoreArgs) -> anyhow::Result<Arc<dyn berth::store::Outbox>> {
    Ok(match &args.store {
        Some(url) => Arc::new(PostgresStore::connect(url, 1).await?),
        None => {
            if !args.data.join("berth.db").exists() {
                bail!("there is no store in {}", args.data.display());
            }
            Arc::new(SqliteStore::open(&args.data)?)
        }
    })
}

/// The pool's memory slots fit the largest `max_memory_mb`.
fn largest_memory(manifest: &Manifest) -> usize {
    manifest
        .components
        .values()
        .map(|c| c.max_memory_bytes)
        .max()
        .unwrap_or(0)
}

/// `berth compile`: every component compiled (or found already) in the
/// cache, one line each, or exit 1 naming the first that fails.
/// The admin token's text from `--admin-token-file` or BERTH_ADMIN_TOKEN,
/// for `berth serve --admin` and the commands that talk to it alike;
/// `needing` names what asked for it in the error.
fn admin_secret(file: Option<&std::path::Path>, needing: &str) -> anyhow::Result<String> {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the admin token file {}", path.display())),
        None => std::env::var(ADMIN_TOKEN_ENV).map_err(|_| {
            anyhow::anyhow!(
                "{needing} needs a token: set {ADMIN_TOKEN_ENV} or pass --admin-token-file FILE"
            )
        }),
    }
}

/// Send one admin request and return its JSON answer if it succeeded; an
/// error answer becomes one line naming the status and the reason.
fn admin_call(
    target: &AdminTarget,
    method: hyper::Method,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<serde_json::Value> {
    let client = berth::admin_client::AdminClient::new(
        &target.admin,
        &admin_secret(target.admin_token_file.as_deref(), "the admin API")?,
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let (status, answer) = rt.block_on(client.send(method, path, body))?;
    if !status.is_success() {
        bail!(
            "the admin API answered {status}: {}",
            berth::admin_client::error_message(&answer)
        );
    }
    Ok(answer)
}

/// A version's short form for people: the first 12 hex digits.
fn short(version: &serde_json::Value) -> String {
    version
        .as_str()
        .map_or_else(|| "(none)".to_string(), |v| v.chars().take(12).collect())
}

fn push(args: PushArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let answer = admin_call(
        &args.admin,
        hyper::Method::PUT,
        &format!("/components/{}", args.name),
        wasm,
    )?;
    let version = short(&answer["version"]);
    if answer["swapped"] == false {
        println!(
            "{}: version {version} was live already; nothing changed",
            args.name
        );
        return Ok(());
    }
    println!(
        "{}: version {version} is live, replacing {}",
        args.name,
        short(&answer["previous"]["version"])
    );
    println!(
        "roll back with: berth rollback {} --admin {}",
        args.name, args.admin.admin
    );
    Ok(())
}

fn new(args: NewArgs) -> anyhow::Result<()> {
    let lang = berth::scaffold::Lang::parse(&args.lang)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    let options = berth::scaffold::Options {
        name: args.name,
        lang,
        dir,
        berth_src: args.berth_src,
    };
    let dir = berth::scaffold::create(&options)?;
    println!(
        "created `{}` in {}; next, in that directory:",
        options.name,
        dir.display()
    );
    for step in berth::scaffold::next_steps(lang) {
        println!("  {step}");
    }
    Ok(())
}

fn rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let answer = admin_call(
        &args.admin,
        hyper::Method::POST,
        &format!("/components/{}/rollback", args.name),
        Vec::new(),
    )?;
    println!(
        "{}: rolled back; version {} is live, {} is kept (roll back again to return to it)",
        args.name,
        short(&answer["version"]),
        short(&answer["previous"]["version"])
    );
    Ok(())
}

fn compile(args: CompileArgs) -> anyhow::Result<()> {
    let manifest = match &args.manifest {
        Some(path) => Manifest::from_file(path)?,
        None => Manifest::builtin(),
    };
    std::fs::create_dir_all(&args.cache_dir).with_context(|| {
        format!(
            "creating the compile cache directory {}",
            args.cache_dir.display()
        )
    })?;
    // Compiled code does not depend on the pool's size, only on the
    // engine's code settings, which every Runtime shares: what this
    // writes, `serve` finds whatever its flags.
    let runtime = Runtime::new(&EngineConfig {
        max_memory_bytes: largest_memory(&manifest),
        per_instance: berth::app::pool_needs(&manifest),
        cache_dir: Some(args.cache_dir.clone()),
        ..EngineConfig::default()
    })?;
    let started = Instant::now();
    for compiled in berth::app::compile_all(&manifest, &runtime)? {
        println!(
            "{}: {} ({})",
            compiled.name,
            compiled.sha256,
            compiled.component.kind().as_str()
        );
    }
    println!(
        "compiled {} component(s) into {} in {:.1} s",
        manifest.components.len(),
        args.cache_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `berth dev`: build once, then serve with `--watch` while a task
/// rebuilds on every change of the project's sources.
fn dev(args: DevArgs) -> anyhow::Result<()> {
    let DevArgs {
        dir,
        build,
        build_timeout_secs,
        serve: mut serve_args,
    } = args;
    if !dir.is_dir() {
        bail!(
            "{} is not a directory: give the project's directory",
            dir.display()
        );
    }
    let manifest_path = serve_args
        .manifest
        .clone()
        .unwrap_or_else(|| dir.join("berth.toml"));
    if !manifest_path.is_file() {
        bail!(
            "there is no manifest at {}: write one (`berth new` makes a project with it) or pass --manifest FILE",
            manifest_path.display()
        );
    }
    serve_args.manifest = Some(manifest_path.clone());
    serve_args.watch = true;
    let build = dev::Build::detect(&dir, build, Duration::from_secs(build_timeout_secs))?;
    // The build's outputs, the store and the cache change as it runs and
    // serves; they are not sources.
    let manifest = Manifest::from_file(&manifest_path)?;
    let outputs = manifest.components.values().filter_map(|c| match &c.wasm {
        berth::manifest::WasmSource::File(path) => path.parent().map(Path::to_path_buf),
        berth::manifest::WasmSource::Builtin(_) => None,
    });
    let mut ignored: Vec<PathBuf> = outputs
        .filter(|out| std::path::absolute(out).ok() != std::path::absolute(&dir).ok())
        .collect();
    ignored.push(serve_args.store.data.clone());
    ignored.extend(serve_args.cache_dir.clone());
    let sources = dev::Sources::new(&dir, ignored);
    let (before, _) = sources.scan();
    tracing::info!(
        "dev: building with `{}` in {}",
        build.command,
        dir.display()
    );
    match build.run(&AtomicBool::new(false)) {
        Ok(took) => tracing::info!("dev: built in {:.1} s", took.as_secs_f64()),
        Err(failed) => {
            let missing: Vec<String> = manifest
                .components
                .values()
                .filter_map(|c| match &c.wasm {
                    berth::manifest::WasmSource::File(path) if !path.is_file() => {
                        Some(path.display().to_string())
                    }
                    _ => None,
                })
                .collect();
            if !missing.is_empty() {
                eprintln!("{}", failed.output.trim_end());
                bail!(
                    "the first build (`{}`) failed ({}) and left nothing to serve ({} missing): fix it and run berth dev again",
                    build.command,
                    failed.reason,
                    missing.join(", ")
                );
            }
            tracing::warn!(
                "dev: the first build failed ({}); serving the previous build. Its output:\n{}",
                failed.reason,
                failed.output.trim_end()
            );
        }
    }
    serve_with(serve_args, Some((build, sources, before)))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    serve_with(args, None)
}

/// What `berth dev` adds to serving: the build, the sources it watches,
/// and how they looked when the first build started.
type DevLoop = (dev::Build, dev::Sources, dev::Snapshot);

fn serve_with(args: ServeArgs, dev_loop: Option<DevLoop>) -> anyhow::Result<()> {
    // Check what can be checked cheaply before binding: a bad manifest, flag
    // or admin token never opens the port.
    let manifest = match &args.manifest {
        Some(path) => Manifest::from_file(path)?,
        None => Manifest::builtin(),
    };
    // The merged /openapi.json, for its documents' errors; built again at load.
    berth::openapi::document(&manifest)?;
    if let Some(url) = &args.store.store {
        berth::store::check_url(url)?;
    }
    if let Some(url) = &args.broker {
        berth::broker::check_url(url)?;
    }
    let admin_config = admin_config(&args)?;
    let delivery = DeliveryConfig {
        max_attempts: args.event_max_attempts,
        backoff: Duration::from_millis(args.event_backoff_ms),
        poll: Duration::from_millis(args.event_poll_ms),
        ..DeliveryConfig::default()
    };
    let config = ServerConfig {
        max_connections: args.max_connections,
        max_in_flight: args.max_in_flight,
        max_body_bytes: args.max_body_bytes,
        max_header_bytes: args.max_header_bytes,
        max_response_bytes: args.max_response_bytes,
        header_read_timeout: Duration::from_secs(args.header_timeout_secs),
        body_timeout: Duration::from_secs(args.body_timeout_secs),
        write_timeout: Duration::from_secs(args.write_timeout_secs),
        drain_timeout: Duration::from_secs(args.drain_timeout_secs),
        shutdown_delay: Duration::from_secs(args.shutdown_delay_secs),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| {
            format!(
                "cannot listen on {}: is another server using it? Pick another address with --listen, or port 0 for any free port",
                args.listen
            )
        })?;
        let admin_listener = match (args.admin, &admin_config) {
            (Some(addr), Some(_)) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for the admin API: is another server using it? Pick another address with --admin, or port 0 for any free port")
            })?),
            _ => None,
        };
        let addr = listener.local_addr()?;
        // Taken over now, so a SIGHUP during start-up does not end the
        // process (its default action); it reloads once start-up is done.
        let hangups = hangup_signal();
        // Every part stops on the one signal: the receivers all see it.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        });
        // Serve from the start, so /healthz answers and /readyz says what
        // start-up is waiting for.
        tracing::info!(%addr, "bound; starting up, /readyz answers 503 until ready");
        let startup = Startup::new();
        let server = tokio::spawn(server::serve(
            listener,
            startup.clone(),
            config,
            stopped(stop_rx.clone()),
        ));
        let loaded = tokio::select! {
            loaded = start_up(&args, &manifest, &startup) => loaded?,
            () = stopped(stop_rx.clone()) => {
                tracing::info!("shutdown signalled during start-up");
                return server.await.context("the HTTP server panicked")?;
            }
        };
        let Loaded { store, app } = loaded;
        let broker = args.broker.as_ref().map(|url| {
            Broker::new(BrokerConfig {
                url: url.clone(),
                delivery: delivery.clone(),
                prefetch: args.event_prefetch,
                replica: berth::fleet::replica_name(),
            })
        });
        let mesh = Mesh::new(app.clone(), args.max_call_depth, broker.clone());
        startup.ready(mesh.clone());
        let mut stdout = std::io::stdout();
        writeln!(stdout, "listening on http://{addr}")?;
        stdout.flush()?;
        tracing::info!(%addr, "ready");
        let admin = match (admin_listener, admin_config) {
            (Some(admin_listener), Some(admin_config)) => {
                let admin_addr = admin_listener.local_addr()?;
                writeln!(stdout, "admin listening on http://{admin_addr}")?;
                stdout.flush()?;
                let dead_letters = match &broker {
                    Some(broker) => DeadLetters::Broker {
                        broker: broker.clone(),
                        components: manifest.subscribers(),
                    },
                    None => DeadLetters::Store(app.outbox.clone()),
                };
                Some(tokio::spawn(admin::serve(
                    admin_listener,
                    app.clone(),
                    dead_letters,
                    admin_config,
                    stopped(stop_rx.clone()),
                )))
            }
            _ => None,
        };
        let watcher = args.watch.then(|| {
            tokio::spawn(watch::watch(
                app.clone(),
                args.admin_max_wasm_bytes,
                args.manifest.clone(),
                stopped(stop_rx.clone()),
            ))
        });
        let rebuilder = dev_loop.map(|(build, sources, built)| {
            tokio::spawn(dev::rebuild_on_change(
                build,
                sources,
                built,
                stopped(stop_rx.clone()),
            ))
        });
        let reloader = tokio::spawn(reload_on_hangup(
            hangups,
            app.clone(),
            args.manifest.clone(),
            stopped(stop_rx.clone()),
        ));
        let store = Arc::new(store);
        let probe = {
            let store = store.clone();
            let stop = stopped(stop_rx.clone());
            tokio::spawn(async move { store.probe_writes(stop).await })
        };
        let follower = tokio::spawn(berth::fleet::follow(app.clone(), stopped(stop_rx.clone())));
        let deliveries = match broker {
            Some(broker) => tokio::spawn(berth::broker::run(mesh, broker, stopped(stop_rx))),
            None => tokio::spawn(events::run(mesh, delivery, stopped(stop_rx))),
        };
        let served = server.await.context("the HTTP server panicked")?;
        deliveries.await.context("the event delivery task panicked")?;
        probe.await.context("the store probe panicked")?;
        follower.await.context("the version follower panicked")?;
        if let Some(admin) = admin {
            admin.await.context("the admin server panicked")??;
        }
        if let Some(watcher) = watcher {
            watcher.await.context("the file watcher panicked")?;
        }
        reloader.await.context("the manifest reloader panicked")?;
        if let Some(rebuilder) = rebuilder {
            rebuilder.await.context("the dev rebuilder panicked")?;
        }
        if let Ok(store) = Arc::try_unwrap(store) {
            store.close();
        }
        served
    });
    // Everything that matters has finished and the store is closed; a
    // blocking task that is still stuck (a read of a hung mount, say) must
    // not keep the process from exiting.
    rt.shutdown_timeout(Duration::from_secs(1));
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// What start-up produces.
struct Loaded {
    store: Opened,
    app: Arc<App>,
}

/// The store serving, and what must live as long as it does.
enum Opened {
    Embedded {
        /// Held while serving: no second `berth serve` on the same data.
        lock: DataLock,
        store: Arc<SqliteStore>,
    },
    Shared(Arc<PostgresStore>),
}

impl Opened {
    fn backend(&self) -> Backend {
        match self {
            Opened::Embedded { store, .. } => Backend::local(store.clone()),
            Opened::Shared(store) => Backend::local(store.clone())
                .shared_with(Arc::new(PgVersions::start(store.clone()))),
        }
    }

    /// Probe the store's writes until `stop`, for /readyz.
    async fn probe_writes(&self, stop: impl Future<Output = ()>) {
        match self {
            Opened::Embedded { store, .. } => store.clone().probe_writes(stop).await,
            Opened::Shared(store) => store.clone().probe_writes(stop).await,
        }
    }

    /// Commit a small write, to prove the store takes writes.
    async fn probe(&self) -> Result<(), berth::store::StoreError> {
        match self {
            Opened::Embedded { store, .. } => store.probe().await.map(drop),
            Opened::Shared(store) => store.probe().await,
        }
    }

    fn close(self) {
        match self {
            Opened::Embedded { lock, store } => {
                store.close();
                drop(lock);
            }
            Opened::Shared(_) => {}
        }
    }
}

/// Open the store (waiting, unready, for the data directory's lock or for
/// the database to answer), then compile every component.
async fn start_up(
    args: &ServeArgs,
    manifest: &Manifest,
    startup: &Startup,
) -> anyhow::Result<Loaded> {
    let (store, cache_dir) = match &args.store.store {
        None => {
            let data = &args.store.data;
            let lock = wait_for_lock(data, startup).await?;
            let sqlite = tokio::task::block_in_place(|| SqliteStore::open(data))?;
            // The lock is ours: no other process is delivering these.
            sqlite.release_claims()?;
            let cache_dir = args
                .cache_dir
                .clone()
                .unwrap_or_else(|| data.join("compiled"));
            let store = Opened::Embedded {
                lock,
                store: Arc::new(sqlite),
            };
            (store, cache_dir)
        }
        Some(url) => {
            let store = connect(url, args.store.store_connections, startup)
                .await?
                .with_max_group(args.store.store_group);
            let cache_dir = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
            (Opened::Shared(Arc::new(store)), cache_dir)
        }
    };
    startup.stage("loading components");
    let max_memory = largest_memory(manifest);
    let engine_config = EngineConfig {
        max_instances: berth::runtime::pool_instances(args.max_in_flight, args.max_call_depth),
        max_memory_bytes: max_memory,
        keep_resident_bytes: args.keep_resident_mb * 1024 * 1024,
        per_instance: berth::app::pool_needs(manifest),
        cache_dir: Some(cache_dir),
    };
    let manifest = manifest.clone();
    let backend = store.backend();
    // Compiling is CPU-bound: off the async threads, so /readyz keeps answering.
    let app = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let runtime = Runtime::new(&engine_config)?;
        let app = App::load(&manifest, &runtime, &backend, &berth::fleet::replica_name())?;
        runtime.prune_cache();
        Ok(Arc::new(app))
    })
    .await
    .context("start-up panicked")??;
    adopt_shared_versions(&app, startup).await;
    wait_until_writable(&store, startup).await;
    Ok(Loaded { store, app })
}

/// Connect to the shared store, retrying with backoff while it cannot be
/// reached (it may be starting beside us); a malformed URL, a refused
/// login or a schema from a newer berth end start-up at once.
async fn connect(
    url: &str,
    connections: usize,
    startup: &Startup,
) -> anyhow::Result<PostgresStore> {
    let mut wait = Duration::from_millis(100);
    let mut logged = false;
    loop {
        match PostgresStore::connect(url, connections).await {
            Ok(store) => {
                if logged {
                    tracing::info!(store = %redact(url), "the store answers");
                }
                return Ok(store);
            }
            Err(e) if e.is_transient() => {
                let message = format!("waiting for the store: {e}");
                if !logged {
                    tracing::warn!("{message}; retrying with backoff");
                    logged = true;
                }
                startup.stage(message);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// With a shared store, offer the manifest's versions and take what the
/// store says is live, retrying while the store cannot be read.
async fn adopt_shared_versions(app: &App, startup: &Startup) {
    let mut logged = false;
    while let Err(e) = app.adopt_shared().await {
        let message = format!("waiting for the shared store's component versions: {e}");
        if !logged {
            tracing::warn!("{message}");
            logged = true;
        }
        startup.stage(message);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Where compiled components go when --cache-dir is not given with --store.
fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|home| PathBuf::from(home).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("berth")
}

/// Ready means able to serve writes, so commit a real write first. While
/// the store refuses (a full disk, a read-only file, a database that went
/// away), wait, unready, with /readyz saying why, and try again every second.
async fn wait_until_writable(store: &Opened, startup: &Startup) {
    let mut logged = false;
    loop {
        let error = match store.probe().await {
            Ok(()) => return,
            Err(e) => e,
        };
        let message = format!("waiting for the store to accept writes: {error}");
        if !logged {
            tracing::error!(
                "{message}; free disk space, fix the data directory's permissions, or check the database"
            );
            logged = true;
        }
        startup.stage(message);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The data directory's lock. While another process holds it (the old pod
/// of a rolling update, say), wait with /readyz reporting why.
async fn wait_for_lock(data: &std::path::Path, startup: &Startup) -> anyhow::Result<DataLock> {
    let mut logged = false;
    loop {
        if let Some(lock) = DataLock::try_acquire(data)? {
            return Ok(lock);
        }
        if !logged {
            let message = format!(
                "waiting for the lock on {}: another berth process is serving this data directory",
                data.display()
            );
            tracing::warn!("{message}");
            startup.stage(message);
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The admin API's settings, checked before anything binds: a token is
/// required, and a non-loopback address needs --admin-allow-remote.
fn admin_config(args: &ServeArgs) -> anyhow::Result<Option<AdminConfig>> {
    let Some(addr) = args.admin else {
        return Ok(None);
    };
    if !addr.ip().is_loopback() && !args.admin_allow_remote {
        bail!(
            "refusing to serve the admin API on {addr}, which is not a loopback address: anyone who reaches it with the token can replace running code. Use 127.0.0.1, or pass --admin-allow-remote on a trusted network"
        );
    }
    let secret = admin_secret(args.admin_token_file.as_deref(), "--admin")?;
    let token = AdminToken::new(&secret).context("--admin needs a token")?;
    let mut config = AdminConfig::new(token);
    config.max_wasm_bytes = args.admin_max_wasm_bytes;
    config.drain_timeout = Duration::from_secs(args.drain_timeout_secs);
    config.body_timeout = Duration::from_secs(args.body_timeout_secs);
    config.write_timeout = Duration::from_secs(args.write_timeout_secs);
    Ok(Some(config))
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// SIGHUP, taken over from its default action (ending the process).
#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangup_signal() -> Hangups {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot watch SIGHUP; the manifest cannot be reloaded"))
            .ok()
    }
    #[cfg(not(unix))]
    None
}

/// Reload the manifest on every SIGHUP until `stop` resolves (see
/// `berth::reload`). Without `--manifest` there is nothing to reload.
async fn reload_on_hangup(
    hangups: Hangups,
    app: Arc<App>,
    manifest: Option<PathBuf>,
    stop: impl Future<Output = ()>,
) {
    #[cfg(unix)]
    {
        let Some(mut hangups) = hangups else {
            return stop.await;
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                received = hangups.recv() => if received.is_none() { return },
                () = &mut stop => return,
            }
            match &manifest {
                Some(path) => berth::reload::reload_from(&app, path, "SIGHUP").await,
                None => tracing::warn!(
                    "SIGHUP: serving the built-in manifest (no --manifest), so there is nothing to reload"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (hangups, app, manifest);
        stop.await
    }
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
