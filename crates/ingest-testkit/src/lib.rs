//! Test support for integration tests against the real stack that the test command
//! started (`scripts/stack.sh up`): Kafka at `KAFKA_BROKERS`, PostgreSQL at
//! `DATABASE_URL` (the dev-stack defaults when unset).
//!
//! Every test gets its own topics (a unique prefix) and its own project id, so tests
//! run in parallel on one broker and one database without seeing each other's data.

use std::future::Future;
use std::time::Duration;

use ingest_types::Topics;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://ingest@127.0.0.1:55432/ingest".to_owned())
}

/// A short unique id, usable as a project id, topic prefix or group id.
pub fn unique(label: &str) -> String {
    format!(
        "{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

/// A pool on the test database, with every migration applied.
pub async fn migrated_pool() -> PgPool {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&database_url())
        .await
        .expect("connect to the test database (is `scripts/stack.sh up` running?)");
    ingest_worker::persist::MIGRATOR
        .run(&pool)
        .await
        .expect("apply migrations");
    pool
}

/// This test's own topics; deleted by [`TestTopics::delete`].
pub struct TestTopics {
    pub prefix: String,
    pub topics: Topics,
    admin: AdminClient<DefaultClientContext>,
}

impl TestTopics {
    pub async fn create(partitions: i32) -> Self {
        let prefix = unique("test");
        let topics = Topics::with_prefix(&prefix);
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers())
            .create()
            .expect("admin client");
        let new: Vec<NewTopic> = [&topics.contacts, &topics.events, &topics.dead_letter]
            .into_iter()
            .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(1)))
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        for result in admin
            .create_topics(&new, &options)
            .await
            .expect("create topics")
        {
            result.expect("topic created");
        }
        Self {
            prefix,
            topics,
            admin,
        }
    }

    pub async fn delete(self) {
        let names = [
            self.topics.contacts.as_str(),
            self.topics.events.as_str(),
            self.topics.dead_letter.as_str(),
        ];
        let _ = self.admin.delete_topics(&names, &AdminOptions::new()).await;
    }
}

/// A real gateway serving on a free port.
pub struct TestGateway {
    pub base_url: String,
    pub token: String,
    shutdown: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl TestGateway {
    /// Starts a gateway publishing to `topics`; `extra` overrides configuration variables.
    pub async fn spawn(topics: &TestTopics, extra: &[(&str, &str)]) -> Self {
        let token = unique("tok");
        let mut vars: Vec<(String, String)> = vec![
            ("INGEST_GATEWAY_ADDR".into(), "127.0.0.1:0".into()),
            ("KAFKA_BROKERS".into(), kafka_brokers()),
            ("INGEST_TOPIC_PREFIX".into(), topics.prefix.clone()),
            ("INGEST_DEV_TOKEN".into(), token.clone()),
            ("INGEST_LOG_FORMAT".into(), "pretty".into()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = ingest_gateway::config::Config::from_lookup(|name| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
        .expect("gateway config");
        let app = ingest_gateway::Application::build(config)
            .await
            .expect("gateway starts");
        let base_url = format!("http://127.0.0.1:{}", app.port());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            base_url,
            token,
            shutdown,
            handle,
        }
    }

    /// The URL of a stream endpoint, e.g. `stream_url("p", "d", "contacts")`.
    pub fn stream_url(&self, project: &str, datasource: &str, endpoint: &str) -> String {
        format!(
            "{}/v1/project/{project}/datasource/{datasource}/stream/{endpoint}",
            self.base_url
        )
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("gateway task")
            .expect("gateway serve");
    }
}

/// A real worker consuming `topics` in its own consumer group.
pub struct TestWorker {
    pub ops_url: String,
    shutdown: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl TestWorker {
    pub async fn spawn(topics: &TestTopics, extra: &[(&str, &str)]) -> Self {
        let mut vars: Vec<(String, String)> = vec![
            ("INGEST_WORKER_ADDR".into(), "127.0.0.1:0".into()),
            ("KAFKA_BROKERS".into(), kafka_brokers()),
            ("DATABASE_URL".into(), database_url()),
            ("INGEST_TOPIC_PREFIX".into(), topics.prefix.clone()),
            (
                "INGEST_WORKER_GROUP".into(),
                format!("{}-group", topics.prefix),
            ),
            ("INGEST_LOG_FORMAT".into(), "pretty".into()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = ingest_worker::config::Config::from_lookup(|name| {
            vars.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
        .expect("worker config");
        let worker = ingest_worker::Worker::build(config)
            .await
            .expect("worker starts");
        let ops_url = format!("http://127.0.0.1:{}", worker.port());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(worker.run(shutdown.clone()));
        Self {
            ops_url,
            shutdown,
            handle,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("worker task").expect("worker run");
    }
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout`
/// with `what` in the message.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
