//! Prometheus metrics, served at `GET /metrics` in the text exposition
//! format. One process-wide set, like a logger: every part of the host
//! records into [`metrics()`] without threading a handle through each call.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub component: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    pub component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub component: String,
    pub outcome: &'static str,
}

/// Every metric the host keeps.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_seconds: Family<ComponentLabels, Histogram>,
    pub instantiate_seconds: Family<ComponentLabels, Histogram>,
    pub traps: Family<ComponentLabels, Counter>,
    pub timeouts: Family<ComponentLabels, Counter>,
    pub in_flight: Gauge,
    pub swaps: Family<ComponentLabels, Counter>,
    pub swaps_rejected: Family<ComponentLabels, Counter>,
    pub kv_ops: Family<KvLabels, Counter>,
    pub kv_seconds: Family<KvLabels, Histogram>,
    pub deliveries: Family<DeliveryLabels, Counter>,
}

/// Latency buckets from 10 µs to about 20 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_01, 3.0, 14))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        let request_seconds = Family::<ComponentLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let instantiate_seconds = Family::<ComponentLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let kv_seconds = Family::<KvLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let metrics = Metrics {
            requests,
            request_seconds,
            instantiate_seconds,
            traps: Family::default(),
            timeouts: Family::default(),
            in_flight: Gauge::default(),
            swaps: Family::default(),
            swaps_rejected: Family::default(),
            kv_ops: Family::default(),
            kv_seconds,
            deliveries: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "requests",
            "HTTP requests by component, method and status",
            metrics.requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a request, by component",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "instantiation_seconds",
            "Time to instantiate a component for one call",
            metrics.instantiate_seconds.clone(),
        );
        registry.register(
            "traps",
            "Calls that trapped, by component",
            metrics.traps.clone(),
        );
        registry.register(
            "timeouts",
            "Calls stopped at their deadline, by component",
            metrics.timeouts.clone(),
        );
        registry.register(
            "requests_in_flight",
            "Requests being handled now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "swaps",
            "Hot swaps and rollbacks applied, by component",
            metrics.swaps.clone(),
        );
        registry.register(
            "swaps_rejected",
            "Replacement versions rejected, by component",
            metrics.swaps_rejected.clone(),
        );
        registry.register(
            "kv_operations",
            "Key-value operations by kind",
            metrics.kv_ops.clone(),
        );
        registry.register(
            "kv_operation_seconds",
            "Key-value operation latency by kind",
            metrics.kv_seconds.clone(),
        );
        registry.register(
            "event_deliveries",
            "Event delivery attempts by subscriber and outcome",
            metrics.deliveries.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Count one key-value operation and its latency.
    pub fn kv(&self, op: &'static str, took: Duration) {
        let labels = KvLabels { op };
        self.kv_ops.get_or_create(&labels).inc();
        self.kv_seconds
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// The labels of one component.
    pub fn component(name: &str) -> ComponentLabels {
        ComponentLabels {
            component: name.to_string(),
        }
    }

    /// Everything, in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
