//! Every metric the gateway exports, named `ingest_gateway_<what>_<unit>`.
//! Histogram buckets are set by suffix in `ingest_types::runtime`.

/// HTTP requests answered, by `route` (the matched path template) and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "ingest_gateway_http_requests_total";
/// Items received in batches, by `kind` (contact, event) and `outcome` (accepted, invalid, unavailable).
pub const ITEMS_TOTAL: &str = "ingest_gateway_items_total";
/// Time from the first send of a batch to the broker's last acknowledgement.
pub const PUBLISH_DURATION_SECONDS: &str = "ingest_gateway_publish_duration_seconds";
