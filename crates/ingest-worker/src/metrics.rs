//! Every metric the worker exports, named `ingest_worker_<what>_<unit>`.
//! Histogram buckets are set by suffix in `ingest_types::runtime`.

/// Messages handled, by `topic` and `outcome` (persisted, dead_lettered).
pub const MESSAGES_TOTAL: &str = "ingest_worker_messages_total";
/// Messages per persisted batch.
pub const BATCH_SIZE_MESSAGES: &str = "ingest_worker_batch_size_messages";
/// Time to write and commit one batch's transaction.
pub const DB_WRITE_DURATION_SECONDS: &str = "ingest_worker_db_write_duration_seconds";
/// Failed database writes that will be retried, by `reason` (transient).
pub const DB_RETRIES_TOTAL: &str = "ingest_worker_db_retries_total";
/// From the gateway receiving an item to the worker committing it.
pub const END_TO_END_LATENCY_SECONDS: &str = "ingest_worker_end_to_end_latency_seconds";
/// Messages not yet committed by this group, per assigned `topic` and `partition`
/// (high watermark minus committed offset), refreshed every 5 s.
pub const CONSUMER_LAG_MESSAGES: &str = "ingest_worker_consumer_lag_messages";
/// Offset commits that failed (the messages will be redelivered; effects are idempotent).
pub const COMMIT_FAILURES_TOTAL: &str = "ingest_worker_commit_failures_total";
/// Maintenance runs (crate::lifecycle), by `outcome`: ok, error, or skipped (another
/// worker's run held the lock).
pub const MAINTENANCE_RUNS_TOTAL: &str = "ingest_worker_maintenance_runs_total";
/// When this worker's last maintenance run succeeded (Unix seconds).
pub const MAINTENANCE_LAST_SUCCESS_TIMESTAMP_SECONDS: &str =
    "ingest_worker_maintenance_last_success_timestamp_seconds";
/// Tombstones of deleted contacts purged past the horizon.
pub const TOMBSTONES_PURGED_TOTAL: &str = "ingest_worker_tombstones_purged_total";
/// Partitions created ahead by maintenance, by `table` (events: days; event_ids:
/// dedup generations).
pub const PARTITIONS_CREATED_TOTAL: &str = "ingest_worker_partitions_created_total";
/// Partitions dropped past the retention, by `table`.
pub const PARTITIONS_DROPPED_TOTAL: &str = "ingest_worker_partitions_dropped_total";
/// How far ahead of now the newest `events` partition reaches (0: events go to the
/// default partition).
pub const EVENTS_PARTITIONS_AHEAD_SECONDS: &str = "ingest_worker_events_partitions_ahead_seconds";
/// Rows in the default partitions, by `table` (counted up to 100,001): rows of a day
/// without its partition.
pub const DEFAULT_PARTITION_ROWS: &str = "ingest_worker_default_partition_rows";
/// Erasures of users completed (redeliveries included).
pub const ERASURES_TOTAL: &str = "ingest_worker_erasures_total";
/// From the start of the batch carrying an erasure to the erasure's completion.
pub const ERASURE_DURATION_SECONDS: &str = "ingest_worker_erasure_duration_seconds";
/// Stored events deleted by erasures.
pub const ERASED_EVENTS_TOTAL: &str = "ingest_worker_erased_events_total";
/// Events not stored because an erasure of their user covers them (in flight when it
/// ran, replayed or redriven later).
pub const ERASED_INFLIGHT_EVENTS_TOTAL: &str = "ingest_worker_erased_inflight_events_total";
/// Erasure records purged past the tombstone horizon.
pub const ERASURES_PURGED_TOTAL: &str = "ingest_worker_erasures_purged_total";
/// Age of the oldest erasure recorded and not completed (0: none), as of the last
/// maintenance run.
pub const ERASURE_OLDEST_INCOMPLETE_SECONDS: &str =
    "ingest_worker_erasure_oldest_incomplete_seconds";

/// Registers the HELP text of every metric above (Prometheus' `# HELP` lines), once the
/// recorder is installed.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        MESSAGES_TOTAL,
        "Messages handled, by topic and outcome (persisted, dead_lettered)."
    );
    describe_histogram!(BATCH_SIZE_MESSAGES, "Messages per persisted batch.");
    describe_histogram!(
        DB_WRITE_DURATION_SECONDS,
        "Seconds to write and commit one batch's transaction."
    );
    describe_counter!(DB_RETRIES_TOTAL, "Transient database failures retried.");
    describe_histogram!(
        END_TO_END_LATENCY_SECONDS,
        "Seconds from the gateway receiving an item to the worker committing it."
    );
    describe_gauge!(
        CONSUMER_LAG_MESSAGES,
        "Messages not yet committed by the group, per assigned topic and partition (every 5 s)."
    );
    describe_counter!(
        COMMIT_FAILURES_TOTAL,
        "Offset commits that failed (the messages will be redelivered)."
    );
    describe_counter!(
        MAINTENANCE_RUNS_TOTAL,
        "Maintenance runs, by outcome (ok, error, skipped: another worker's run held the lock)."
    );
    describe_gauge!(
        MAINTENANCE_LAST_SUCCESS_TIMESTAMP_SECONDS,
        "Unix time of this worker's last successful maintenance run."
    );
    describe_counter!(
        PARTITIONS_CREATED_TOTAL,
        "Partitions created ahead by maintenance, by table (events: days; event_ids: dedup generations)."
    );
    describe_counter!(
        PARTITIONS_DROPPED_TOTAL,
        "Partitions dropped past the retention, by table."
    );
    describe_gauge!(
        EVENTS_PARTITIONS_AHEAD_SECONDS,
        "Seconds from now to the end of the newest events partition (0: events land in the default partition)."
    );
    describe_gauge!(
        DEFAULT_PARTITION_ROWS,
        "Rows in the default partitions, by table (counted up to 100,001)."
    );
    describe_counter!(
        TOMBSTONES_PURGED_TOTAL,
        "Tombstones of deleted contacts purged past the horizon."
    );
    describe_counter!(
        ERASURES_TOTAL,
        "Erasures of users completed (redeliveries included)."
    );
    describe_histogram!(
        ERASURE_DURATION_SECONDS,
        "From the start of the batch carrying an erasure to its completion."
    );
    describe_counter!(ERASED_EVENTS_TOTAL, "Stored events deleted by erasures.");
    describe_counter!(
        ERASED_INFLIGHT_EVENTS_TOTAL,
        "Events not stored because an erasure of their user covers them."
    );
    describe_counter!(
        ERASURES_PURGED_TOTAL,
        "Erasure records purged past the tombstone horizon."
    );
    describe_gauge!(
        ERASURE_OLDEST_INCOMPLETE_SECONDS,
        "Age of the oldest erasure recorded and not completed (0: none), at the last maintenance run."
    );
}
