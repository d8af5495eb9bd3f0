//! The Prometheus metrics a chat server exports at `GET /metrics`
//! (OpenMetrics text, through `prometheus-client`).
//!
//! The node counts itself ([`protocol::stats::Stats`], plain fields); a
//! scrape asks each node task for a snapshot and copies it into the
//! registry, so the hot paths pay nothing for it. What only the driver
//! sees is counted here as it happens: HTTP requests, store latencies, the
//! REST routes' auth failures; the WebSocket write queues are summed by the
//! node task at the scrape. Every label comes from a fixed set.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use protocol::stats::{
    self, AuthFailure, BusKind, CLOSE_REASONS, ConnectRefusal, EioRefusal, EventName, RefusalCode,
    Stats, TRANSPORTS,
};
use protocol::store::StoreCommand;

/// What a node task reports to a scrape.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeSnapshot {
    /// The core's counters.
    pub(crate) core: Stats,
    /// Bytes queued on the node's WebSocket connections, not yet written.
    pub(crate) queued_bytes: u64,
    /// Frames queued on them.
    pub(crate) queued_frames: u64,
    /// Connections dropped because their client fell too far behind.
    pub(crate) slow_consumers: u64,
    /// In a cluster: entries waiting to be published on the bus.
    pub(crate) outbox: u64,
    /// In a cluster: rooms' streams the bus's reader reads.
    pub(crate) subscriptions: u64,
}

type L1 = [(&'static str, &'static str); 1];
type L2 = [(&'static str, &'static str); 2];

/// The label of the Engine.IO path in `chatwire_http_requests_total`.
pub(crate) const ENGINE_ROUTE: &str = "/socket.io/";
/// The path metrics are served at.
pub(crate) const METRICS_PATH: &str = "/metrics";
/// The label of any path no route serves.
const OTHER_ROUTE: &str = "other";

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Upper bounds of the store latency buckets, in seconds: from a memory
/// store's microseconds to a struggling database's seconds.
const STORE_BUCKETS: [f64; 15] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5,
];

/// Every metric a chat server exports.
pub struct Metrics {
    registry: Registry,
    /// Held while a snapshot is copied in and encoded, so that each scrape
    /// answers with one snapshot.
    scrape: Mutex<()>,
    connections: Family<L1, Gauge>,
    handshakes: Family<L1, Counter>,
    upgrades: Counter,
    eio_refusals: Family<L1, Counter>,
    disconnects: Family<L1, Counter>,
    connects: Counter,
    connect_errors: Family<L1, Counter>,
    auth_failures: Family<L2, Counter>,
    events_in: Family<L1, Counter>,
    events_out: Family<L1, Counter>,
    deliveries: Counter,
    refusals: Family<L2, Counter>,
    queued_bytes: Gauge,
    queued_frames: Gauge,
    slow_consumers: Counter,
    /// By [`StoreCommand::KINDS`].
    store: Vec<Histogram>,
    http: Family<L2, Counter>,
    bus_entries: Family<L2, Counter>,
    bus_bytes: Family<L2, Counter>,
    bus_undecodable: Counter,
    bus_gaps: Counter,
    bus_duplicates: Counter,
    bus_places_passed: Counter,
    bus_unplaced: Counter,
    bus_held_places: Gauge,
    bus_outbox: Gauge,
    bus_subscriptions: Gauge,
    bus_publish: Histogram,
    /// Resident memory, where `/proc/self/status` tells it.
    memory: Option<Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric, registered, with every label value it can take already
    /// at zero (so a scraper sees each series from the start).
    pub fn new() -> Self {
        let mut r = Registry::default();
        let mut m = Metrics {
            registry: Registry::default(),
            scrape: Mutex::new(()),
            connections: Family::default(),
            handshakes: Family::default(),
            upgrades: Counter::default(),
            eio_refusals: Family::default(),
            disconnects: Family::default(),
            connects: Counter::default(),
            connect_errors: Family::default(),
            auth_failures: Family::default(),
            events_in: Family::default(),
            events_out: Family::default(),
            deliveries: Counter::default(),
            refusals: Family::default(),
            queued_bytes: Gauge::default(),
            queued_frames: Gauge::default(),
            slow_consumers: Counter::default(),
            store: Vec::new(),
            http: Family::default(),
            bus_entries: Family::default(),
            bus_bytes: Family::default(),
            bus_undecodable: Counter::default(),
            bus_gaps: Counter::default(),
            bus_duplicates: Counter::default(),
            bus_places_passed: Counter::default(),
            bus_unplaced: Counter::default(),
            bus_held_places: Gauge::default(),
            bus_outbox: Gauge::default(),
            bus_subscriptions: Gauge::default(),
            bus_publish: Histogram::new(STORE_BUCKETS.iter().copied()),
            memory: resident_bytes().map(|_| Gauge::default()),
        };
        r.register(
            "chatwire_connections",
            "Engine.IO sessions open, by the transport they use now",
            m.connections.clone(),
        );
        r.register(
            "chatwire_eio_handshakes",
            "Engine.IO sessions opened, by the transport of their handshake",
            m.handshakes.clone(),
        );
        r.register(
            "chatwire_eio_upgrades",
            "Sessions upgraded from polling to WebSocket",
            m.upgrades.clone(),
        );
        r.register(
            "chatwire_eio_refusals",
            "Engine.IO requests (handshakes, polls, WebSockets) refused, by reason",
            m.eio_refusals.clone(),
        );
        r.register(
            "chatwire_disconnects",
            "Engine.IO sessions closed, by reason",
            m.disconnects.clone(),
        );
        r.register(
            "chatwire_sio_connects",
            "Socket.IO CONNECTs accepted",
            m.connects.clone(),
        );
        r.register(
            "chatwire_sio_connect_errors",
            "Socket.IO CONNECTs refused with CONNECT_ERROR, by reason",
            m.connect_errors.clone(),
        );
        r.register(
            "chatwire_auth_failures",
            "Credentials refused, by where (socket: CONNECT, rest: HTTP routes) and why",
            m.auth_failures.clone(),
        );
        r.register(
            "chatwire_events_in",
            "Client events received, by name (unknown names: other)",
            m.events_in.clone(),
        );
        r.register(
            "chatwire_events_out",
            "Server events handed to sockets, by name (a broadcast counts once per recipient)",
            m.events_out.clone(),
        );
        r.register(
            "chatwire_broadcast_deliveries",
            "Packets broadcasts handed to recipient sockets",
            m.deliveries.clone(),
        );
        r.register(
            "chatwire_events_refused",
            "Client events refused, by name and error code",
            m.refusals.clone(),
        );
        r.register(
            "chatwire_ws_queued_bytes",
            "Bytes queued on WebSocket connections and not yet taken by their sockets",
            m.queued_bytes.clone(),
        );
        r.register(
            "chatwire_ws_queued_frames",
            "Frames queued on WebSocket connections and not yet fully written",
            m.queued_frames.clone(),
        );
        r.register(
            "chatwire_ws_slow_consumer_disconnects",
            "WebSocket connections dropped because their client fell too far behind",
            m.slow_consumers.clone(),
        );
        let store = Family::<L1, Histogram>::new_with_constructor(|| {
            Histogram::new(STORE_BUCKETS.iter().copied())
        });
        m.store = StoreCommand::KINDS
            .iter()
            .map(|k| store.get_or_create_owned(&[("op", *k)]))
            .collect();
        r.register(
            "chatwire_store_operation_duration_seconds",
            "Store operations (the node's and the REST routes'), by kind",
            store,
        );
        r.register(
            "chatwire_http_requests",
            "HTTP requests, by route and status class",
            m.http.clone(),
        );
        r.register(
            "chatwire_bus_entries",
            "In a cluster: entries read from (in) and published on (out) the Redis bus, by kind",
            m.bus_entries.clone(),
        );
        r.register(
            "chatwire_bus_bytes",
            "In a cluster: bytes of the entries read from (in) and published on (out) the bus, by kind",
            m.bus_bytes.clone(),
        );
        r.register(
            "chatwire_bus_undecodable",
            "In a cluster: entries read from the bus that could not be read (another version's, or garbage)",
            m.bus_undecodable.clone(),
        );
        r.register(
            "chatwire_bus_gaps",
            "In a cluster: times the bus was found to have lost entries not yet read (trimmed, or Redis back without them)",
            m.bus_gaps.clone(),
        );
        r.register(
            "chatwire_bus_duplicates",
            "In a cluster: entries read a second time (published twice after a write retry) and passed over",
            m.bus_duplicates.clone(),
        );
        r.register(
            "chatwire_bus_places_passed",
            "In a cluster: sends' places passed over before their events came (their instance silent, or held 30 s)",
            m.bus_places_passed.clone(),
        );
        r.register(
            "chatwire_bus_unplaced",
            "In a cluster: message events whose place this instance did not hold (passed over, lost, or before it started)",
            m.bus_unplaced.clone(),
        );
        r.register(
            "chatwire_bus_held_places",
            "In a cluster: sends' places in their chats' order held, waiting for their events",
            m.bus_held_places.clone(),
        );
        r.register(
            "chatwire_bus_outbox",
            "In a cluster: entries waiting to be published on the bus",
            m.bus_outbox.clone(),
        );
        r.register(
            "chatwire_bus_subscriptions",
            "In a cluster with recovery off: chats (rooms) whose stream this instance reads, those its sockets are in",
            m.bus_subscriptions.clone(),
        );
        r.register(
            "chatwire_bus_publish_duration_seconds",
            "In a cluster: round trips that published waiting entries on the bus (one script call each)",
            m.bus_publish.clone(),
        );
        if let Some(g) = &m.memory {
            r.register(
                "process_resident_memory_bytes",
                "Resident memory of the process (VmRSS)",
                g.clone(),
            );
        }
        let routes =
            protocol::http::route_labels().chain([ENGINE_ROUTE, METRICS_PATH, OTHER_ROUTE]);
        for route in routes {
            for class in STATUS_CLASSES {
                let _ = m.http.get_or_create(&[("route", route), ("status", class)]);
            }
        }
        m.registry = r;
        m.copy(&[NodeSnapshot::default()]);
        for r in AuthFailure::ALL {
            let _ = m
                .auth_failures
                .get_or_create(&[("via", "rest"), ("reason", r.as_str())]);
        }
        m
    }

    /// Times one store command into its kind's histogram.
    /// The latency histogram of a command's kind.
    pub(crate) fn histogram(&self, command: &StoreCommand) -> &Histogram {
        let i = StoreCommand::KINDS
            .iter()
            .position(|k| *k == command.kind())
            .expect("KINDS lists every kind");
        &self.store[i]
    }

    /// The histogram of the bus's publishing round trips.
    pub fn bus_publish(&self) -> Histogram {
        self.bus_publish.clone()
    }

    /// Counts an HTTP request.
    pub(crate) fn http_request(&self, route: &'static str, status: u16) {
        let class = STATUS_CLASSES
            .get(usize::from(status / 100).wrapping_sub(1))
            .copied()
            .unwrap_or("other");
        self.http
            .get_or_create(&[("route", route), ("status", class)])
            .inc();
    }

    /// Counts credentials a REST route refused.
    pub(crate) fn rest_auth_failure(&self, why: AuthFailure) {
        self.auth_failures
            .get_or_create(&[("via", "rest"), ("reason", why.as_str())])
            .inc();
    }

    /// The exposition, with the nodes' snapshots copied in.
    pub(crate) fn render(&self, nodes: &[NodeSnapshot]) -> String {
        let _one_at_a_time = self.scrape.lock().unwrap_or_else(|p| p.into_inner());
        self.copy(nodes);
        if let (Some(g), Some(bytes)) = (&self.memory, resident_bytes()) {
            g.set(bytes as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }

    /// Copies the nodes' counters (summed) into the registry.
    fn copy(&self, nodes: &[NodeSnapshot]) {
        let sum = |f: &dyn Fn(&NodeSnapshot) -> u64| nodes.iter().map(f).sum::<u64>();
        let set = |c: &Counter, v: u64| c.inner().store(v, Ordering::Relaxed);
        let gauge = |g: &Gauge, v: u64| {
            g.set(v as i64);
        };
        for t in TRANSPORTS {
            let l = [("transport", stats::transport_label(t))];
            gauge(
                &self.connections.get_or_create(&l),
                sum(&|n| n.core.open(t)),
            );
            set(
                &self.handshakes.get_or_create(&l),
                sum(&|n| n.core.handshakes(t)),
            );
        }
        set(&self.upgrades, sum(&|n| n.core.upgrades));
        for r in EioRefusal::ALL {
            let v = sum(&|n| n.core.eio_refusals(*r));
            set(
                &self.eio_refusals.get_or_create(&[("reason", r.as_str())]),
                v,
            );
        }
        for r in CLOSE_REASONS {
            let v = sum(&|n| n.core.disconnects(r));
            let l = [("reason", stats::close_label(r))];
            set(&self.disconnects.get_or_create(&l), v);
        }
        set(&self.connects, sum(&|n| n.core.connects));
        for r in ConnectRefusal::ALL {
            let v = sum(&|n| n.core.connect_errors(*r));
            set(
                &self.connect_errors.get_or_create(&[("reason", r.as_str())]),
                v,
            );
        }
        // A CONNECT offers a token, never a password.
        for r in AuthFailure::ALL
            .iter()
            .filter(|r| **r != AuthFailure::BadCredentials)
        {
            let v = sum(&|n| n.core.auth_failures(*r));
            let l = [("via", "socket"), ("reason", r.as_str())];
            set(&self.auth_failures.get_or_create(&l), v);
        }
        for e in EventName::ALL {
            let l = [("event", e.as_str())];
            set(
                &self.events_in.get_or_create(&l),
                sum(&|n| n.core.events_in(*e)),
            );
            set(
                &self.events_out.get_or_create(&l),
                sum(&|n| n.core.events_out(*e)),
            );
            for c in RefusalCode::ALL {
                let v = sum(&|n| n.core.refusals(*e, *c));
                let l = [("event", e.as_str()), ("code", c.as_str())];
                set(&self.refusals.get_or_create(&l), v);
            }
        }
        set(&self.deliveries, sum(&|n| n.core.deliveries));
        gauge(&self.queued_bytes, sum(&|n| n.queued_bytes));
        gauge(&self.queued_frames, sum(&|n| n.queued_frames));
        set(&self.slow_consumers, sum(&|n| n.slow_consumers));
        for k in BusKind::ALL {
            let i = *k as usize;
            for (way, entries, bytes) in [
                (
                    "in",
                    sum(&|n| n.core.bus_in[i]),
                    sum(&|n| n.core.bus_in_bytes[i]),
                ),
                (
                    "out",
                    sum(&|n| n.core.bus_out[i]),
                    sum(&|n| n.core.bus_out_bytes[i]),
                ),
            ] {
                let l = [("way", way), ("kind", k.as_str())];
                set(&self.bus_entries.get_or_create(&l), entries);
                set(&self.bus_bytes.get_or_create(&l), bytes);
            }
        }
        set(&self.bus_undecodable, sum(&|n| n.core.bus_undecodable));
        set(&self.bus_gaps, sum(&|n| n.core.bus_gaps));
        set(&self.bus_duplicates, sum(&|n| n.core.bus_duplicates));
        set(&self.bus_places_passed, sum(&|n| n.core.bus_places_passed));
        set(&self.bus_unplaced, sum(&|n| n.core.bus_unplaced));
        gauge(&self.bus_held_places, sum(&|n| n.core.bus_held_places));
        gauge(&self.bus_outbox, sum(&|n| n.outbox));
        gauge(&self.bus_subscriptions, sum(&|n| n.subscriptions));
    }
}

/// The label of a request's route: a fixed value, never the raw path.
pub(crate) fn route_label(path: &str, engine: bool) -> &'static str {
    if engine {
        ENGINE_ROUTE
    } else if path == METRICS_PATH {
        METRICS_PATH
    } else {
        protocol::http::route_label(path).unwrap_or(OTHER_ROUTE)
    }
}

/// The process's resident memory in bytes, from `VmRSS` in
/// `/proc/self/status` (in kB there, so no page size is needed); `None`
/// where there is no such file.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_scrape_shows_the_snapshot_and_every_series_from_zero() {
        let m = Metrics::new();
        let text = m.render(&[NodeSnapshot::default()]);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            value(&text, r#"chatwire_events_in_total{event="chat:send"}"#),
            Some(0.0)
        );
        let mut a = NodeSnapshot::default();
        a.core.events_in[EventName::Send as usize] = 3;
        a.core.deliveries = 10;
        a.queued_bytes = 100;
        let mut b = NodeSnapshot::default();
        b.core.events_in[EventName::Send as usize] = 4;
        b.core.refusals[EventName::Send as usize][RefusalCode::RateLimited as usize] = 2;
        m.http_request(route_label("/login", false), 401);
        m.http_request(route_label("/users/507f1f77bcf86cd799439011", false), 404);
        m.rest_auth_failure(AuthFailure::BadCredentials);
        let text = m.render(&[a, b]);
        for (series, v) in [
            (r#"chatwire_events_in_total{event="chat:send"}"#, 7.0),
            ("chatwire_broadcast_deliveries_total", 10.0),
            ("chatwire_ws_queued_bytes", 100.0),
            (
                r#"chatwire_events_refused_total{event="chat:send",code="rate_limited"}"#,
                2.0,
            ),
            (
                r#"chatwire_http_requests_total{route="/login",status="4xx"}"#,
                1.0,
            ),
            (
                r#"chatwire_http_requests_total{route="other",status="4xx"}"#,
                1.0,
            ),
            (
                r#"chatwire_auth_failures_total{via="rest",reason="bad_credentials"}"#,
                1.0,
            ),
        ] {
            assert_eq!(value(&text, series), Some(v), "{series} in\n{text}");
        }
        assert!(!text.contains("507f1f77bcf86cd799439011"));
    }

    #[test]
    fn store_commands_are_timed_by_kind() {
        let m = Metrics::new();
        let store = store_embedded::MemoryStore::new();
        let histogram = m.histogram(&StoreCommand::Ping).clone();
        let reply = futures_executor_block_on(crate::storage::run(
            &store,
            StoreCommand::Ping,
            Some(histogram),
        ));
        assert_eq!(reply, protocol::store::StoreReply::Pong);
        let text = m.render(&[]);
        assert_eq!(
            value(
                &text,
                r#"chatwire_store_operation_duration_seconds_count{op="ping"}"#
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &text,
                r#"chatwire_store_operation_duration_seconds_count{op="append"}"#
            ),
            Some(0.0)
        );
    }

    /// The memory store answers at once: one poll runs it.
    fn futures_executor_block_on<F: std::future::Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the memory store answers at once"),
        }
    }
}
