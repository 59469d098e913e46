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
    /// One of the standard methods or `other`: see [`method_label`].
    pub method: &'static str,
    pub status: u16,
}

/// The `method` label of a request. A client may send any token as its
/// method, and a label per token would grow `/metrics` (and the host's
/// memory) without bound, so everything outside the standard set counts as
/// `other`.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "TRACE" => "TRACE",
        "CONNECT" => "CONNECT",
        _ => "other",
    }
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

/// The outcomes a delivery attempt is counted under.
/// (`duplicate`: a redelivered event that had already been applied,
/// acknowledged without running.)
pub const DELIVERY_OUTCOMES: [&str; 4] = ["delivered", "retried", "dead_lettered", "duplicate"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub caller: String,
    /// A loaded component's name, or `other` for a name that is none:
    /// a guest chooses what it asks for, so that name is not a label.
    pub callee: String,
    pub outcome: &'static str,
}

/// The outcomes of a cross-component call that can happen when the call is
/// granted and the callee exists; created at zero for every granted pair.
pub const GRANTED_CALL_OUTCOMES: [&str; 5] = ["ok", "failed", "timeout", "unavailable", "too_deep"];

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
    pub outbox_backlog: Gauge,
    pub events_published: Counter,
    pub calls: Family<CallLabels, Counter>,
    pub pool_full: Family<ComponentLabels, Counter>,
    /// Calls of a component with `reuse` set that found an idle instance.
    pub reuse_hits: Family<ComponentLabels, Counter>,
    /// Calls of a component with `reuse` set that instantiated afresh.
    pub reuse_misses: Family<ComponentLabels, Counter>,
    pub reuse_idle: Family<ComponentLabels, Gauge>,
    /// Log lines dropped because stderr did not take them fast enough.
    pub log_lines_dropped: Counter,
}

/// Every kind of key-value operation the `kv` capability times; each has
/// its series from the start.
pub const KV_OPS: [&str; 8] = [
    "get",
    "set",
    "delete",
    "list_keys",
    "scan",
    "insert",
    "compare_and_swap",
    "increment",
];

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
            outbox_backlog: Gauge::default(),
            events_published: Counter::default(),
            calls: Family::default(),
            pool_full: Family::default(),
            reuse_hits: Family::default(),
            reuse_misses: Family::default(),
            reuse_idle: Family::default(),
            log_lines_dropped: Counter::default(),
            registry: Registry::default(),
        };
        for op in KV_OPS {
            drop(metrics.kv_ops.get_or_create(&KvLabels { op }));
            drop(metrics.kv_seconds.get_or_create(&KvLabels { op }));
        }
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
        registry.register(
            "outbox_backlog",
            "Event deliveries waiting in the store's outbox (with a broker: events not yet relayed to it)",
            metrics.outbox_backlog.clone(),
        );
        registry.register(
            "events_published",
            "Events the broker confirmed, relayed from this process's outbox",
            metrics.events_published.clone(),
        );
        registry.register(
            "calls",
            "Calls from one component to another, by caller, callee and outcome",
            metrics.calls.clone(),
        );
        registry.register(
            "instance_pool_full",
            "Calls refused with 503 because the instance pool had no free slot, by component",
            metrics.pool_full.clone(),
        );
        registry.register(
            "reuse_hits",
            "Calls served by an idle instance kept for reuse, by component",
            metrics.reuse_hits.clone(),
        );
        registry.register(
            "reuse_misses",
            "Calls of a component with reuse on that found no idle instance, by component",
            metrics.reuse_misses.clone(),
        );
        registry.register(
            "reuse_idle_instances",
            "Instances kept idle for reuse, by component",
            metrics.reuse_idle.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr took them more slowly than they came",
            metrics.log_lines_dropped.clone(),
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

    /// Create the series of a loaded component at zero, so dashboards and
    /// alerts see them (and a rate over them works) before the first event.
    /// (`get_or_create` creates; the guard it returns is dropped at once.)
    pub fn component_loaded(&self, name: &str) {
        let labels = Metrics::component(name);
        for family in [
            &self.traps,
            &self.timeouts,
            &self.swaps,
            &self.swaps_rejected,
            &self.pool_full,
            &self.reuse_hits,
            &self.reuse_misses,
        ] {
            drop(family.get_or_create(&labels));
        }
        drop(self.reuse_idle.get_or_create(&labels));
        drop(self.request_seconds.get_or_create(&labels));
        drop(self.instantiate_seconds.get_or_create(&labels));
        for outcome in DELIVERY_OUTCOMES {
            drop(self.deliveries.get_or_create(&DeliveryLabels {
                component: name.to_string(),
                outcome,
            }));
        }
    }

    /// Create the call series of a granted `caller` to `callee` at zero.
    pub fn call_granted(&self, caller: &str, callee: &str) {
        for outcome in GRANTED_CALL_OUTCOMES {
            drop(self.calls.get_or_create(&CallLabels {
                caller: caller.to_string(),
                callee: callee.to_string(),
                outcome,
            }));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        for method in [
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT",
        ] {
            assert_eq!(method_label(method), method);
        }
        for method in ["get", "PROPFIND", "X1", ""] {
            assert_eq!(method_label(method), "other");
        }
    }
}
