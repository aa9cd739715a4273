//! Gateway configuration: environment variables, parsed once at start-up.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `INGEST_GATEWAY_ADDR` | `127.0.0.1:8080` | HTTP listen address (`:0` picks a free port) |
//! | `KAFKA_BROKERS` | `127.0.0.1:19092` | bootstrap servers |
//! | `INGEST_TOPIC_PREFIX` | `ingest` | topics `<prefix>.contacts`, `<prefix>.events`, `<prefix>.dlq` |
//! | `INGEST_PUBLISH_TIMEOUT_MS` | `5000` | how long a batch may wait for the broker's acknowledgement before the request fails with 503 |
//! | `INGEST_SYNC_WAIT_MS` | `10000` | `?_sync`: longest wait for the worker's commit before answering 202 |
//! | `INGEST_KAFKA_LINGER_MS` | `5` | producer `linger.ms` |
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

use ingest_types::env::{redact_password, Vars};
pub use ingest_types::env::{ConfigError, LogFormat};
use ingest_types::Topics;

#[derive(Clone)]
pub struct Config {
    pub listen_addr: SocketAddr,
    pub kafka_brokers: String,
    pub topics: Topics,
    pub publish_timeout: Duration,
    pub sync_wait: Duration,
    pub linger_ms: u64,
    pub compression: String,
    pub queue_max_kbytes: u32,
    pub database_url: String,
    pub db_max_connections: u32,
    pub auth_cache_capacity: u64,
    pub auth_max_staleness: Duration,
    pub log_format: LogFormat,
}

impl std::fmt::Debug for Config {
    // By hand so that a password in DATABASE_URL never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen_addr", &self.listen_addr)
            .field("kafka_brokers", &self.kafka_brokers)
            .field("topics", &self.topics)
            .field("publish_timeout", &self.publish_timeout)
            .field("sync_wait", &self.sync_wait)
            .field("linger_ms", &self.linger_ms)
            .field("compression", &self.compression)
            .field("queue_max_kbytes", &self.queue_max_kbytes)
            .field("database_url", &redact_password(&self.database_url))
            .field("db_max_connections", &self.db_max_connections)
            .field("auth_cache_capacity", &self.auth_cache_capacity)
            .field("auth_max_staleness", &self.auth_max_staleness)
            .field("log_format", &self.log_format)
            .finish()
    }
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses from any variable lookup, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(get);
        Ok(Self {
            listen_addr: vars.parse("INGEST_GATEWAY_ADDR", "127.0.0.1:8080")?,
            kafka_brokers: vars.string("KAFKA_BROKERS", "127.0.0.1:19092"),
            topics: Topics::with_prefix(
                &vars.string("INGEST_TOPIC_PREFIX", ingest_types::topics::DEFAULT_PREFIX),
            ),
            publish_timeout: Duration::from_millis(
                vars.parse("INGEST_PUBLISH_TIMEOUT_MS", "5000")?,
            ),
            sync_wait: Duration::from_millis(vars.parse("INGEST_SYNC_WAIT_MS", "10000")?),
            linger_ms: vars.parse("INGEST_KAFKA_LINGER_MS", "5")?,
            compression: vars.string("INGEST_KAFKA_COMPRESSION", "lz4"),
            queue_max_kbytes: vars.parse("INGEST_KAFKA_QUEUE_MAX_KBYTES", "131072")?,
            database_url: vars.string("DATABASE_URL", "postgres://ingest@127.0.0.1:55432/ingest"),
            db_max_connections: vars.parse("INGEST_DB_MAX_CONNECTIONS", "8")?,
            auth_cache_capacity: vars.parse("INGEST_AUTH_CACHE_CAPACITY", "100000")?,
            auth_max_staleness: Duration::from_secs(
                vars.parse("INGEST_AUTH_MAX_STALENESS_SECS", "600")?,
            ),
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
