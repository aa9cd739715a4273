//! Every metric the gateway exports, named `ingest_gateway_<what>_<unit>`.
//! Histogram buckets are set by suffix in `ingest_types::runtime`.

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
