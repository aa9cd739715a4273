//! Every metric the gateway exports, named `ingest_gateway_<what>_<unit>`.
//! Histogram buckets are set by suffix in `ingest_types::runtime`.

use std::collections::HashMap;
use std::sync::RwLock;

/// HTTP requests answered, by `route` (the matched path template) and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "ingest_gateway_http_requests_total";
/// Items received, by `kind` (contact, event; contact_delete and user_erasure for the
/// DELETEs) and `outcome` (accepted, invalid, unavailable).
pub const ITEMS_TOTAL: &str = "ingest_gateway_items_total";
/// Time from the first send of a batch to the broker's last acknowledgement.
pub const PUBLISH_DURATION_SECONDS: &str = "ingest_gateway_publish_duration_seconds";
/// Messages in the producer's queue (sent, not yet acknowledged), at scrape time.
pub const PRODUCER_QUEUE_MESSAGES: &str = "ingest_gateway_producer_queue_messages";
/// Token or datasource look-ups that went to the database, by `kind`.
pub const AUTH_CACHE_MISSES_TOTAL: &str = "ingest_gateway_auth_cache_misses_total";
/// Quota reservations that failed because the database was unreachable.
pub const RATE_LIMIT_DB_ERRORS_TOTAL: &str = "ingest_gateway_rate_limit_db_errors_total";
/// Requests refused with 429, by `endpoint`.
pub const RATE_LIMITED_TOTAL: &str = "ingest_gateway_rate_limited_total";

/// Client connections open on the public listener.
pub const CONNECTIONS_OPEN: &str = "ingest_gateway_connections_open";
/// Connections closed on accept because `INGEST_MAX_CONNECTIONS` were open.
pub const CONNECTIONS_REFUSED_TOTAL: &str = "ingest_gateway_connections_refused_total";
/// Requests answered 503 because the in-flight body budget could not take their body.
pub const BODY_BUDGET_REFUSED_TOTAL: &str = "ingest_gateway_body_budget_refused_total";
/// Requests answered 429 because their client address made too many token or datasource
/// look-ups.
pub const LOOKUPS_REFUSED_TOTAL: &str = "ingest_gateway_lookups_refused_total";

/// Registers the HELP text of every metric above (Prometheus' `# HELP` lines), once the
/// recorder is installed.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered, by route (path template) and status."
    );
    describe_counter!(
        ITEMS_TOTAL,
        "Items received, by kind (contact, event, contact_delete, user_erasure) and outcome (accepted, invalid, unavailable)."
    );
    describe_histogram!(
        PUBLISH_DURATION_SECONDS,
        "Seconds from the first send of a batch to Kafka's last acknowledgement."
    );
    describe_gauge!(
        PRODUCER_QUEUE_MESSAGES,
        "Messages sent to Kafka and not yet acknowledged, at scrape time."
    );
    describe_counter!(
        AUTH_CACHE_MISSES_TOTAL,
        "Token or datasource look-ups that went to PostgreSQL, by kind."
    );
    describe_counter!(
        RATE_LIMIT_DB_ERRORS_TOTAL,
        "Rate-limit quota leases that failed because PostgreSQL was unreachable."
    );
    describe_gauge!(
        CONNECTIONS_OPEN,
        "Client connections open on the public listener."
    );
    describe_counter!(
        CONNECTIONS_REFUSED_TOTAL,
        "Connections closed on accept because INGEST_MAX_CONNECTIONS were open."
    );
    describe_counter!(
        BODY_BUDGET_REFUSED_TOTAL,
        "Requests answered 503 because the in-flight body budget could not take their body."
    );
    describe_counter!(
        LOOKUPS_REFUSED_TOTAL,
        "Requests answered 429 because their client address made too many token or datasource look-ups."
    );
    describe_counter!(
        RATE_LIMITED_TOTAL,
        "Requests refused with 429, by endpoint."
    );
}

/// Handles of the metrics every request touches, resolved once per label set and kept:
/// `metrics::counter!` with labels builds a key (an allocation) and looks it up in the
/// registry on every call. Made after the recorder is installed (a handle resolved
/// before would count nowhere), so it lives in the application state.
pub struct Handles {
    publish_duration: metrics::Histogram,
    items: RwLock<HashMap<(&'static str, &'static str), metrics::Counter>>,
    http: RwLock<HashMap<u16, HashMap<Box<str>, metrics::Counter>>>,
}

impl Handles {
    pub fn new() -> Self {
        Self {
            publish_duration: metrics::histogram!(PUBLISH_DURATION_SECONDS),
            items: RwLock::default(),
            http: RwLock::default(),
        }
    }

    pub fn publish_duration(&self) -> &metrics::Histogram {
        &self.publish_duration
    }

    /// `ingest_gateway_items_total{kind, outcome}`.
    pub fn items(&self, kind: &'static str, outcome: &'static str) -> metrics::Counter {
        if let Some(counter) = read(&self.items).get(&(kind, outcome)) {
            return counter.clone();
        }
        write(&self.items)
            .entry((kind, outcome))
            .or_insert_with(|| metrics::counter!(ITEMS_TOTAL, "kind" => kind, "outcome" => outcome))
            .clone()
    }

    /// `ingest_gateway_http_requests_total{route, status}`.
    pub fn http_request(&self, route: &str, status: u16) -> metrics::Counter {
        if let Some(counter) = read(&self.http).get(&status).and_then(|r| r.get(route)) {
            return counter.clone();
        }
        write(&self.http)
            .entry(status)
            .or_default()
            .entry(route.into())
            .or_insert_with(|| {
                metrics::counter!(
                    HTTP_REQUESTS_TOTAL,
                    "route" => route.to_owned(),
                    "status" => status.to_string()
                )
            })
            .clone()
    }
}

impl Default for Handles {
    fn default() -> Self {
        Self::new()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}
