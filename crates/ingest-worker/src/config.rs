//! Worker configuration: environment variables, parsed once at start-up.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `DATABASE_URL` | `postgres://ingest@127.0.0.1:55432/ingest` | PostgreSQL connection string |
//! | `INGEST_DB_MAX_CONNECTIONS` | `4` | pool size |
//! | `KAFKA_BROKERS` | `127.0.0.1:19092` | bootstrap servers |
//! | `INGEST_TOPIC_PREFIX` | `ingest` | topics `<prefix>.contacts`, `<prefix>.events`, `<prefix>.dlq` |
//! | `INGEST_WORKER_GROUP` | `ingest-worker` | Kafka consumer group; every worker of one deployment shares it |
//! | `INGEST_WORKER_BATCH_MAX_MESSAGES` | `5000` | most messages persisted in one transaction |
//! | `INGEST_WORKER_BATCH_MAX_WAIT_MS` | `50` | longest a batch waits to fill once its first message arrived |
//! | `INGEST_WORKER_WRITERS` | `2` | transactions writing one batch at once, each for a share of the partitions (partition modulo writers, so each partition's order holds); needs that many of the pool's connections |
//! | `INGEST_WORKER_SESSION_TIMEOUT_MS` | `10000` | consumer group session timeout: how long a worker that died without leaving keeps its partitions |
//! | `INGEST_WORKER_MAINTENANCE_INTERVAL_SECS` | `600` | how often the maintenance job runs (tombstone purge; one worker at a time, the others skip); `0` turns the schedule off (then run `ingestctl maintain` from a scheduler) |
//! | `INGEST_WORKER_ADDR` | `127.0.0.1:9091` | listen address of `/healthz`, `/readyz`, `/metrics` |
//! | `INGEST_LOG_FORMAT` | `json` | `json` or `pretty` |
//! | `RUST_LOG` | `info` | log filter |

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use ingest_types::env::{process_var, Vars};
pub use ingest_types::env::{ConfigError, DatabaseUrl, LogFormat};
use ingest_types::Topics;

/// `Debug` shows every field, the database password redacted ([`DatabaseUrl`]).
#[derive(Clone, Debug)]
pub struct Config {
    pub database_url: DatabaseUrl,
    pub db_max_connections: u32,
    pub kafka_brokers: String,
    pub topics: Topics,
    pub group_id: String,
    pub batch_max_messages: usize,
    pub batch_max_wait: Duration,
    pub writers: NonZeroUsize,
    pub session_timeout: Duration,
    /// `None` when the schedule is off.
    pub maintenance_interval: Option<Duration>,
    pub listen_addr: SocketAddr,
    pub log_format: LogFormat,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(process_var)
    }

    /// Parses from any variable lookup, so tests need not touch the process environment.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(get);
        let batch_max_messages: usize = vars.parse("INGEST_WORKER_BATCH_MAX_MESSAGES", "5000")?;
        if batch_max_messages == 0 {
            return Err(ConfigError {
                name: "INGEST_WORKER_BATCH_MAX_MESSAGES",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            database_url: vars.database_url(),
            db_max_connections: vars.parse("INGEST_DB_MAX_CONNECTIONS", "4")?,
            kafka_brokers: vars.kafka_brokers(),
            topics: vars.topics(),
            group_id: vars.string("INGEST_WORKER_GROUP", "ingest-worker"),
            batch_max_messages,
            batch_max_wait: vars.millis("INGEST_WORKER_BATCH_MAX_WAIT_MS", "50")?,
            writers: vars.parse("INGEST_WORKER_WRITERS", "2")?,
            session_timeout: vars.millis("INGEST_WORKER_SESSION_TIMEOUT_MS", "10000")?,
            maintenance_interval: Some(
                vars.seconds("INGEST_WORKER_MAINTENANCE_INTERVAL_SECS", "600")?,
            )
            .filter(|interval| !interval.is_zero()),
            listen_addr: vars.parse("INGEST_WORKER_ADDR", "127.0.0.1:9091")?,
            log_format: vars.log_format()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ingest_types::env::redact_password;

    #[test]
    fn defaults_match_the_dev_stack() {
        let c = Config::from_lookup(|_| None).unwrap();
        assert_eq!(c.database_url, "postgres://ingest@127.0.0.1:55432/ingest");
        assert_eq!(c.topics.contacts, "ingest.contacts");
        assert_eq!(c.group_id, "ingest-worker");
        assert_eq!(c.batch_max_messages, 5000);
        assert_eq!(c.writers.get(), 2);
        assert_eq!(c.maintenance_interval, Some(Duration::from_secs(600)));
        let off = Config::from_lookup(|n| {
            (n == "INGEST_WORKER_MAINTENANCE_INTERVAL_SECS").then(|| "0".into())
        })
        .unwrap();
        assert_eq!(off.maintenance_interval, None);
    }

    #[test]
    fn rejects_zero_batch_and_zero_writers() {
        for name in ["INGEST_WORKER_BATCH_MAX_MESSAGES", "INGEST_WORKER_WRITERS"] {
            assert!(Config::from_lookup(|n| (n == name).then(|| "0".into())).is_err());
        }
        assert_eq!(
            redact_password("postgres://u:pw@h:1/db"),
            "postgres://u:***@h:1/db"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
    }
}
