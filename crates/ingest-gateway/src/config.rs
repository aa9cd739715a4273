//! Gateway configuration: environment variables, parsed once at start-up.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `INGEST_GATEWAY_ADDR` | `127.0.0.1:8080` | HTTP listen address of the API (`:0` picks a free port) |
//! | `INGEST_ADMIN_ADDR` | `127.0.0.1:9080` | listen address of `/metrics`, `/healthz` and `/readyz` (`:0` picks a free port); keep it off the public network |
//! | `INGEST_HEADER_TIMEOUT_MS` | `10000` | a request head must be complete this long after the connection opened or its previous answer was sent; also the keep-alive idle timeout (hyper's one timer for both) |
//! | `INGEST_BODY_TIMEOUT_MS` | `15000` | a request body must be complete this long after the head; else 408 and the connection is closed |
//! | `INGEST_MAX_CONNECTIONS` | `10000` | open client connections; further ones are closed as soon as they are accepted (lowered at start if the file-descriptor limit cannot hold them) |
//! | `INGEST_BODY_BUDGET_MBYTES` | `256` | request-body bytes held in memory at once, across all requests; past it, 503 + `Retry-After` before reading |
//! | `INGEST_DATASOURCE_BODY_BUDGET_MBYTES` | `32` | the same, per datasource, so that one tenant cannot take the whole budget |
//! | `INGEST_LOOKUPS_PER_ADDR_PER_SEC` | `20` | token and datasource look-ups in PostgreSQL (cache misses) per client address and second, sustained; past it, 429 |
//! | `INGEST_LOOKUPS_PER_ADDR_BURST` | `200` | burst of such look-ups per client address |
//! | `INGEST_UNKNOWN_TOKEN_CACHE_CAPACITY` | `100000` | unknown tokens remembered (apart from known ones, so a flood cannot evict them) |
//! | `KAFKA_BROKERS` | `127.0.0.1:19092` | bootstrap servers |
//! | `INGEST_TOPIC_PREFIX` | `ingest` | topics `<prefix>.contacts`, `<prefix>.events`, `<prefix>.dlq` |
//! | `INGEST_PUBLISH_TIMEOUT_MS` | `5000` | how long a batch may wait for the broker's acknowledgement before the request fails with 503 |
//! | `INGEST_SYNC_WAIT_MS` | `10000` | `?_sync`: longest wait for the worker's commit before answering 202 |
//! | `INGEST_KAFKA_LINGER_MS` | `1` | producer `linger.ms`: how long a message may wait for others to share its produce request; every request waits for its acknowledgement, so this is added to single-item requests' latency |
//! | `INGEST_KAFKA_COMPRESSION` | `lz4` | producer `compression.type` |
//! | `INGEST_KAFKA_QUEUE_MAX_KBYTES` | `131072` | most data (KiB) waiting in the producer; when full, writes get 503 at once |
//! | `DATABASE_URL` | `postgres://ingest@127.0.0.1:55432/ingest` | tenancy database (tokens, datasources, limits) |
//! | `INGEST_DB_MAX_CONNECTIONS` | `8` | pool size |
//! | `INGEST_AUTH_CACHE_CAPACITY` | `100000` | most tokens (and, separately, datasources) cached |
//! | `INGEST_AUTH_MAX_STALENESS_SECS` | `600` | how long a cached entry may stand in while the database is unreachable |
//! | `INGEST_LOG_FORMAT` | `json` | `json` or `pretty` |
//! | `RUST_LOG` | `info` | log filter |

use std::net::SocketAddr;
use std::time::Duration;

use ingest_types::env::{process_var, Vars};
pub use ingest_types::env::{ConfigError, DatabaseUrl, LogFormat};
use ingest_types::Topics;

/// `Debug` shows every field, the database password redacted ([`DatabaseUrl`]).
#[derive(Clone, Debug)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub body_budget_bytes: usize,
    pub datasource_body_budget_bytes: usize,
    pub lookups_per_addr_per_sec: u32,
    pub lookups_per_addr_burst: u32,
    pub unknown_token_cache_capacity: u64,
    pub kafka_brokers: String,
    pub topics: Topics,
    pub publish_timeout: Duration,
    pub sync_wait: Duration,
    pub linger_ms: u64,
    pub compression: String,
    pub queue_max_kbytes: u32,
    pub database_url: DatabaseUrl,
    pub db_max_connections: u32,
    pub auth_cache_capacity: u64,
    pub auth_max_staleness: Duration,
    pub log_format: LogFormat,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(process_var)
    }

    /// Parses from any variable lookup, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(get);
        Ok(Self {
            listen_addr: vars.parse("INGEST_GATEWAY_ADDR", "127.0.0.1:8080")?,
            admin_addr: vars.parse("INGEST_ADMIN_ADDR", "127.0.0.1:9080")?,
            header_timeout: vars.millis("INGEST_HEADER_TIMEOUT_MS", "10000")?,
            body_timeout: vars.millis("INGEST_BODY_TIMEOUT_MS", "15000")?,
            max_connections: vars.parse("INGEST_MAX_CONNECTIONS", "10000")?,
            body_budget_bytes: vars.parse::<usize>("INGEST_BODY_BUDGET_MBYTES", "256")? << 20,
            datasource_body_budget_bytes: vars
                .parse::<usize>("INGEST_DATASOURCE_BODY_BUDGET_MBYTES", "32")?
                << 20,
            lookups_per_addr_per_sec: vars.parse("INGEST_LOOKUPS_PER_ADDR_PER_SEC", "20")?,
            lookups_per_addr_burst: vars.parse("INGEST_LOOKUPS_PER_ADDR_BURST", "200")?,
            unknown_token_cache_capacity: vars
                .parse("INGEST_UNKNOWN_TOKEN_CACHE_CAPACITY", "100000")?,
            kafka_brokers: vars.kafka_brokers(),
            topics: vars.topics(),
            publish_timeout: vars.millis("INGEST_PUBLISH_TIMEOUT_MS", "5000")?,
            sync_wait: vars.millis("INGEST_SYNC_WAIT_MS", "10000")?,
            linger_ms: vars.parse("INGEST_KAFKA_LINGER_MS", "1")?,
            compression: vars.string("INGEST_KAFKA_COMPRESSION", "lz4"),
            queue_max_kbytes: vars.parse("INGEST_KAFKA_QUEUE_MAX_KBYTES", "131072")?,
            database_url: vars.database_url(),
            db_max_connections: vars.parse("INGEST_DB_MAX_CONNECTIONS", "8")?,
            auth_cache_capacity: vars.parse("INGEST_AUTH_CACHE_CAPACITY", "100000")?,
            auth_max_staleness: vars.seconds("INGEST_AUTH_MAX_STALENESS_SECS", "600")?,
            log_format: vars.log_format()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_dev_stack() {
        let c = config(&[]).unwrap();
        assert_eq!(c.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.kafka_brokers, "127.0.0.1:19092");
        assert_eq!(c.topics.events, "ingest.events");
        assert_eq!(c.publish_timeout, Duration::from_secs(5));
        assert_eq!(c.database_url, "postgres://ingest@127.0.0.1:55432/ingest");
    }

    #[test]
    fn bad_values_name_the_variable_and_password_is_redacted() {
        let err = config(&[("INGEST_PUBLISH_TIMEOUT_MS", "soon")]).unwrap_err();
        assert!(
            err.to_string().contains("INGEST_PUBLISH_TIMEOUT_MS"),
            "{err}"
        );
        let c = config(&[("DATABASE_URL", "postgres://u:s3cret@h/db")]).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
