//! Event delivery through RabbitMQ (`--broker`), for any number of
//! replicas. Publishing still commits an outbox row with the writes that
//! caused it; from there a relay on every replica moves rows to the broker
//! ([`relay`]), every replica consumes each subscriber's queue and applies
//! events once ([`consume`]), retries wait in per-delay queues and failures
//! end in a dead-letter queue ([`topology`], [`dead`]).
//!
//! One supervisor task owns the AMQP connection: it connects, declares the
//! topology, then runs the relay and the consumers until the connection
//! fails, and starts over with backoff. While the broker is away, writes go
//! on: their events wait in the outbox, and `/readyz` says so.
//!
//! The client is `lapin`; ARCHITECTURE.md says why.

mod consume;
pub mod dead;
mod message;
mod relay;
pub mod topology;

use crate::events::DeliveryConfig;
use crate::mesh::Mesh;
use crate::store::redact;
use lapin::{Connection, ConnectionProperties};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The recipient an outbox row has when the broker, not this process,
/// fans the event out to its subscribers. Component names never start
/// with `@`, so it cannot name one.
pub const RELAYED: &str = "@broker";

/// How long a connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait between reconnection attempts.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// What the broker side of a process is configured with.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `amqp://` or `amqps://` URL, with credentials and vhost.
    pub url: String,
    /// Retries, backoff and polling, as for in-process delivery.
    pub delivery: DeliveryConfig,
    /// Most unacknowledged events a replica holds per subscriber queue,
    /// which bounds how many deliveries run at once per subscriber.
    pub prefetch: u16,
    /// This replica's name, in consumer tags and connection names.
    pub replica: String,
}

/// Why a `--broker` URL was refused before any connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{url}` is not an AMQP URL ({why}): write it as amqp://USER:PASSWORD@HOST:PORT/VHOST (amqps:// for TLS)"
)]
pub struct MalformedUrl {
    url: String,
    why: String,
}

/// Check a `--broker` URL's form, so a typo fails start-up at once rather
/// than being retried for ever. The password never reaches the message.
pub fn check_url(url: &str) -> Result<(), MalformedUrl> {
    let malformed = |why: String| MalformedUrl {
        url: redact(url),
        why,
    };
    if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
        return Err(malformed("the scheme must be amqp or amqps".into()));
    }
    url.parse::<lapin::uri::AMQPUri>()
        .map(drop)
        .map_err(|e| malformed(scrub(&e, url)))
}

/// Remove anything of `url` past its scheme from a client library's
/// message, which may quote the URL whole.
fn scrub(message: &str, url: &str) -> String {
    match url.split_once("://") {
        Some((_, rest)) if !rest.is_empty() => message.replace(rest, "…"),
        _ => message.to_string(),
    }
}

/// The broker as the rest of the host sees it: whether it is reachable now.
pub struct Broker {
    config: BrokerConfig,
    /// `None` while connected; otherwise why not (also before the first
    /// connection).
    down: Mutex<Option<String>>,
}

impl Broker {
    pub fn new(config: BrokerConfig) -> Arc<Broker> {
        Arc::new(Broker {
            config,
            down: Mutex::new(Some("not connected yet".into())),
        })
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Why the broker cannot be used now, if it cannot; `/readyz` says it.
    pub fn unavailable(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_down(&self, why: Option<String>) {
        *self.down.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    /// Open a connection, bounded in time, with errors that name the
    /// broker without its password.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        let url = &self.config.url;
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("berth {}", self.config.replica).into());
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "cannot reach the broker at {}: no answer within {} s",
                    redact(url),
                    CONNECT_TIMEOUT.as_secs()
                )
            })?;
        connected.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the broker at {}: {}",
                redact(url),
                scrub(&e.to_string(), url)
            )
        })
    }
}

/// Relay and consume events until `shutdown` resolves, reconnecting with
/// backoff whenever the connection fails.
pub async fn run(mesh: Arc<Mesh>, broker: Arc<Broker>, shutdown: impl Future<Output = ()>) {
    // The backlog matters most while the broker is away, when no relay runs.
    let gauge = crate::events::report_backlog(mesh.app.outbox.clone());
    tokio::select! {
        () = supervise(&mesh, &broker) => {}
        () = gauge => {}
        () = shutdown => {}
    }
}

/// Connect, run a session until it fails, wait, and again, for ever.
async fn supervise(mesh: &Arc<Mesh>, broker: &Arc<Broker>) {
    let mut wait = Duration::from_millis(100);
    loop {
        let failed = session(mesh, broker).await;
        let why = match failed {
            Ok(()) => "the connection ended".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if broker.unavailable().is_none() {
            tracing::error!(broker = %redact(&broker.config.url), "lost the broker, reconnecting: {why}");
            wait = Duration::from_millis(100);
        } else if let Some(suppressed) = RECONNECTS.allow() {
            tracing::warn!(broker = %redact(&broker.config.url), suppressed, "cannot use the broker, retrying: {why}");
        }
        broker.set_down(Some(why));
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_RECONNECT_WAIT);
    }
}

/// Failed reconnections, logged at most once per
/// [`Throttle::EVERY`](crate::logging::Throttle::EVERY).
static RECONNECTS: crate::logging::Throttle = crate::logging::Throttle::new();

/// One connection's life: declare, then relay and consume until something
/// fails. Never returns `Ok`.
async fn session(mesh: &Arc<Mesh>, broker: &Arc<Broker>) -> anyhow::Result<()> {
    let connection = broker.connect().await?;
    let subscriptions = mesh.subscriptions();
    topology::declare(&connection, &mesh.app.store, &subscriptions, &broker.config).await?;
    broker.set_down(None);
    tracing::info!(broker = %redact(&broker.config.url), "connected to the broker");
    let relay = relay::run(&connection, mesh, &broker.config);
    let consume = consume::run(&connection, mesh, &subscriptions, &broker.config);
    let result = tokio::select! {
        r = relay => r,
        r = consume => r,
    };
    // Unacknowledged events go back to their queues for another consumer.
    let _ = connection.close(200, "reconnecting".into()).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_showing_the_password() {
        assert!(check_url("amqp://berth:secret@127.0.0.1:5672/berth").is_ok());
        assert!(check_url("amqps://berth:secret@broker.example/prod").is_ok());
        let e = check_url("postgres://berth:secret@127.0.0.1/berth").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
        assert!(e.to_string().contains("scheme must be amqp"), "{e}");
        let e = check_url("amqp://berth:secret@127.0.0.1:notaport/berth").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }
}
