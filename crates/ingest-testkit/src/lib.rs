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

mod database;
mod stack;
pub use database::PrivateDatabase;
pub use stack::{KafkaCluster, PrivateStack};

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
        let names = [&topics.contacts, &topics.events, &topics.dead_letter].map(|t| t.clone());
        tokio::task::spawn_blocking(move || wait_for_leaders(&names, partitions))
            .await
            .expect("leader wait");
        Self {
            prefix,
            topics,
            admin,
        }
    }

    /// Names topics with `prefix` without creating anything (for a test that brings
    /// its own broker with its own topics).
    pub fn naming_only(prefix: &str) -> Self {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", kafka_brokers())
            .create()
            .expect("admin client");
        Self {
            prefix: prefix.to_owned(),
            topics: Topics::with_prefix(prefix),
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

/// A project with one datasource and a token for it, created directly in the database.
pub struct Tenant {
    pub project: String,
    pub datasource: String,
    /// A datasource-scoped token.
    pub token: String,
    pool: PgPool,
}

impl Tenant {
    pub async fn create(pool: &PgPool) -> Self {
        let project = unique("p");
        let datasource = "web".to_owned();
        sqlx::query("INSERT INTO projects (id) VALUES ($1)")
            .bind(&project)
            .execute(pool)
            .await
            .expect("create project");
        let tenant = Self {
            token: String::new(),
            project,
            datasource: datasource.clone(),
            pool: pool.clone(),
        };
        tenant.add_datasource(&datasource).await;
        let token = tenant.add_token(Some(&datasource)).await;
        Self { token, ..tenant }
    }

    pub async fn add_datasource(&self, id: &str) {
        sqlx::query("INSERT INTO datasources (project, id) VALUES ($1, $2)")
            .bind(&self.project)
            .bind(id)
            .execute(&self.pool)
            .await
            .expect("create datasource");
    }

    /// A new token for one datasource, or for the whole project with `None`.
    pub async fn add_token(&self, datasource: Option<&str>) -> String {
        let token = ingest_types::tenancy::NewToken::generate();
        sqlx::query(
            "INSERT INTO api_tokens (id, project, datasource, secret_hash, display_prefix)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&token.id)
        .bind(&self.project)
        .bind(datasource)
        .bind(&token.hash[..])
        .bind(&token.display_prefix)
        .execute(&self.pool)
        .await
        .expect("create token");
        token.secret
    }

    pub async fn revoke(&self, secret: &str) {
        sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE secret_hash = $1")
            .bind(&ingest_types::tenancy::hash_token(secret)[..])
            .execute(&self.pool)
            .await
            .expect("revoke token");
    }

    /// Declares a custom attribute spec on `web` (`max_values` None: single value).
    pub async fn declare_attribute(&self, name: &str, data_type: &str, max_values: Option<i32>) {
        sqlx::query(
            "INSERT INTO attribute_specs (project, datasource, name, data_type, max_values)
             VALUES ($1, 'web', $2, $3, $4)",
        )
        .bind(&self.project)
        .bind(name)
        .bind(data_type)
        .bind(max_values)
        .execute(&self.pool)
        .await
        .expect("declare attribute");
    }

    /// Declares an event type on `web`.
    pub async fn declare_event_type(&self, name: &str) {
        sqlx::query("INSERT INTO event_types (project, datasource, name) VALUES ($1, 'web', $2)")
            .bind(&self.project)
            .bind(name)
            .execute(&self.pool)
            .await
            .expect("declare event type");
    }

    /// Declares a parameter spec of a declared event type on `web`.
    pub async fn declare_parameter(
        &self,
        event_type: &str,
        name: &str,
        data_type: &str,
        required: bool,
    ) {
        sqlx::query(
            "INSERT INTO event_parameter_specs (project, datasource, event_type, name, data_type, required)
             VALUES ($1, 'web', $2, $3, $4, $5)",
        )
        .bind(&self.project)
        .bind(event_type)
        .bind(name)
        .bind(data_type)
        .bind(required)
        .execute(&self.pool)
        .await
        .expect("declare parameter");
    }

    pub async fn set_limit(&self, datasource: &str, endpoint: &str, requests_per_minute: i32) {
        sqlx::query(
            "INSERT INTO rate_limits (project, datasource, endpoint, requests_per_minute)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (project, datasource, endpoint)
             DO UPDATE SET requests_per_minute = EXCLUDED.requests_per_minute",
        )
        .bind(&self.project)
        .bind(datasource)
        .bind(endpoint)
        .bind(requests_per_minute)
        .execute(&self.pool)
        .await
        .expect("set limit");
    }
}

/// Sleeps until the current one-minute rate-limit window has at least `needed` left,
/// so a test's requests all fall into one window.
pub async fn wait_for_fresh_window(needed: Duration) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let into_window = Duration::from_millis((now.as_millis() % 60_000) as u64);
    if Duration::from_secs(60) - into_window < needed {
        tokio::time::sleep(Duration::from_secs(60) - into_window + Duration::from_millis(50)).await;
    }
}

/// A real gateway serving on a free port.
pub struct TestGateway {
    pub base_url: String,
    /// Its admin listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin_url: String,
    shutdown: CancellationToken,
    handle: JoinHandle<std::io::Result<()>>,
}

impl TestGateway {
    /// Starts a gateway publishing to `topics`; `extra` overrides configuration variables.
    pub async fn spawn(topics: &TestTopics, extra: &[(&str, &str)]) -> Self {
        let mut vars = gateway_env(topics);
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
        let admin_url = format!("http://127.0.0.1:{}", app.admin_port());
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self {
            base_url,
            admin_url,
            shutdown,
            handle,
        }
    }

    /// The URL of a stream endpoint, e.g. `stream_url("p", "d", "contacts")`.
    pub fn stream_url(&self, project: &str, datasource: &str, endpoint: &str) -> String {
        stream_url(&self.base_url, project, datasource, endpoint)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("gateway task")
            .expect("gateway serve");
    }
}

/// The variables a test gateway runs with: a free port, this test's topics, the test
/// database.
fn gateway_env(topics: &TestTopics) -> Vec<(String, String)> {
    vec![
        ("INGEST_GATEWAY_ADDR".into(), "127.0.0.1:0".into()),
        ("INGEST_ADMIN_ADDR".into(), "127.0.0.1:0".into()),
        ("KAFKA_BROKERS".into(), kafka_brokers()),
        ("DATABASE_URL".into(), database_url()),
        ("INGEST_TOPIC_PREFIX".into(), topics.prefix.clone()),
        ("INGEST_LOG_FORMAT".into(), "pretty".into()),
    ]
}

/// The URL of a stream endpoint under `base_url`.
pub fn stream_url(base_url: &str, project: &str, datasource: &str, endpoint: &str) -> String {
    format!("{base_url}/v1/project/{project}/datasource/{datasource}/stream/{endpoint}")
}

/// Waits until the broker's metadata names a leader for every partition of `topics`:
/// creation returns before that, and a test's first produce or offset look-up could
/// otherwise meet `NotLeaderForPartition`.
pub fn wait_for_leaders(topics: &[String], partitions: i32) {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("metadata client");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = consumer
            .fetch_metadata(None, Duration::from_secs(5))
            .is_ok_and(|metadata| {
                topics.iter().all(|name| {
                    metadata.topics().iter().any(|t| {
                        t.name() == name
                            && t.error().is_none()
                            && t.partitions().len() == partitions as usize
                            && t.partitions()
                                .iter()
                                .all(|p| p.leader() >= 0 && p.error().is_none())
                    })
                })
            });
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no leader for every partition of {topics:?} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free port on 127.0.0.1 (free when asked; a test binds it moments later).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Starts a binary of this workspace with `env` and `extra`, listening on a free port for
/// each variable of `addr_vars`, and waits until `/healthz` answers on the last one (its
/// operations listener). Returns the base URL of each, in order.
async fn spawn_binary<const N: usize>(
    binary: &str,
    env: Vec<(String, String)>,
    addr_vars: [&str; N],
    extra: &[(&str, &str)],
) -> ([String; N], std::process::Child) {
    let mut command = std::process::Command::new(binary);
    command.envs(env);
    let urls = addr_vars.map(|var| {
        let port = free_port();
        command.env(var, format!("127.0.0.1:{port}"));
        format!("http://127.0.0.1:{port}")
    });
    command.envs(extra.iter().copied());
    let child = command
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {binary}: {e}"));
    let health = format!("{}/healthz", urls[N - 1]);
    wait_for(
        &format!("{binary} to serve"),
        Duration::from_secs(30),
        || async {
            reqwest::get(&health)
                .await
                .ok()
                .filter(|r| r.status() == 200)
                .map(|_| ())
        },
    )
    .await;
    (urls, child)
}

/// A gateway running as its own operating-system process (the real binary), for
/// tests about several instances sharing state through the database.
pub struct GatewayProcess {
    pub base_url: String,
    /// Its admin listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin_url: String,
    child: std::process::Child,
}

impl GatewayProcess {
    /// Starts `binary` (the crate's `CARGO_BIN_EXE_ingest-gateway`) and waits until it serves.
    pub async fn spawn(binary: &str, topics: &TestTopics, extra: &[(&str, &str)]) -> Self {
        let ([base_url, admin_url], child) = spawn_binary(
            binary,
            gateway_env(topics),
            ["INGEST_GATEWAY_ADDR", "INGEST_ADMIN_ADDR"],
            extra,
        )
        .await;
        Self {
            base_url,
            admin_url,
            child,
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy in front of PostgreSQL whose connections a test can cut and restore,
/// to make the database unreachable for one component without stopping it for others.
pub struct CuttableProxy {
    pub port: u16,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    generation: std::sync::Arc<tokio::sync::watch::Sender<u64>>,
}

impl CuttableProxy {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let generation = std::sync::Arc::new(generation);
        let (accept_open, accept_generation) = (open.clone(), generation.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !accept_open.load(Ordering::Acquire) {
                    continue; // dropped: connection refused in effect
                }
                let mut cut = accept_generation.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Self {
            port,
            open,
            generation,
        }
    }

    /// The database URL through this proxy.
    pub fn database_url(&self) -> String {
        let url = database_url();
        let at = url
            .rfind('@')
            .map(|i| i + 1)
            .unwrap_or(url.find("://").unwrap() + 3);
        let slash = url[at..].find('/').map(|i| at + i).unwrap_or(url.len());
        format!("{}127.0.0.1:{}{}", &url[..at], self.port, &url[slash..])
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::Release);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// The address of the test database's server.
pub fn database_addr() -> std::net::SocketAddr {
    let url = database_url();
    let at = url
        .rfind('@')
        .map(|i| i + 1)
        .unwrap_or(url.find("://").unwrap() + 3);
    let host_port = url[at..].split('/').next().unwrap();
    use std::net::ToSocketAddrs;
    host_port
        .to_socket_addrs()
        .expect("database address")
        .next()
        .expect("database address")
}

/// The variables a test worker runs with: a free ops port, this test's topics and
/// consumer group, the test database.
fn worker_env(topics: &TestTopics) -> Vec<(String, String)> {
    vec![
        ("INGEST_WORKER_ADDR".into(), "127.0.0.1:0".into()),
        ("KAFKA_BROKERS".into(), kafka_brokers()),
        ("DATABASE_URL".into(), database_url()),
        ("INGEST_TOPIC_PREFIX".into(), topics.prefix.clone()),
        (
            "INGEST_WORKER_GROUP".into(),
            format!("{}-group", topics.prefix),
        ),
        ("INGEST_LOG_FORMAT".into(), "pretty".into()),
    ]
}

/// A worker running as its own process (the real binary), so a test can `kill -9` it.
pub struct WorkerProcess {
    pub ops_url: String,
    child: std::process::Child,
}

impl WorkerProcess {
    /// Starts `binary` (the crate's `CARGO_BIN_EXE_ingest-worker`) and waits until it serves.
    pub async fn spawn(binary: &str, topics: &TestTopics, extra: &[(&str, &str)]) -> Self {
        let ([ops_url], child) =
            spawn_binary(binary, worker_env(topics), ["INGEST_WORKER_ADDR"], extra).await;
        Self { ops_url, child }
    }

    /// Messages this process persisted, from its own `/metrics`.
    pub async fn persisted(&self) -> u64 {
        let text = metrics_text(&self.ops_url).await;
        sample_sum(
            &text,
            "ingest_worker_messages_total",
            "outcome=\"persisted\"",
        ) as u64
    }

    /// SIGKILL: no shutdown, no leaving the group, no last commit.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to exit on its own.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().expect("worker exit status")
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
        let mut vars = worker_env(topics);
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
/// The Prometheus exposition served at `<base_url>/metrics` (a gateway or a worker).
pub async fn metrics_text(base_url: &str) -> String {
    let url = format!("{base_url}/metrics");
    reqwest::get(&url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The sum of the samples of metric `name` whose labels include `label`
/// (e.g. `outcome="persisted"`).
pub fn sample_sum(exposition: &str, name: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

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
