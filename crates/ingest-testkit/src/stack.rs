//! Kafka and PostgreSQL of a test's own, run by `scripts/stack.sh` in a private data dir
//! on free ports, so that a test can stop, kill and restart them without disturbing the
//! shared dev stack or other tests. Dropping a handle stops everything it started and
//! deletes its data dir. The methods block: call them from
//! `tokio::task::block_in_place` (multi-thread runtime) or `spawn_blocking`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::metadata::Metadata;

use crate::{free_port, unique};

/// `bash scripts/stack.sh` with the data dir and the ports of a private stack.
fn stack_command(dir: &Path, vars: &[(&str, String)]) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/stack.sh");
    let mut command = Command::new("bash");
    command
        .arg(script)
        .env("INGEST_STACK_DIR", dir)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())));
    command
}

/// Runs a stack command; panics with its output when it fails. Returns its stdout.
fn run_checked(mut command: Command, what: &str) -> String {
    let output = command.output().expect("run scripts/stack.sh");
    assert!(
        output.status.success(),
        "stack.sh {what} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Kafka and/or PostgreSQL of a test's own: a single Kafka node (1 partition per topic)
/// and a PostgreSQL cluster, each on a free port.
pub struct PrivateStack {
    dir: PathBuf,
    kafka_port: u16,
    controller_port: u16,
    pg_port: u16,
}

impl PrivateStack {
    pub fn new() -> Self {
        Self {
            dir: std::env::temp_dir().join(unique("stack")),
            kafka_port: free_port(),
            controller_port: free_port(),
            pg_port: free_port(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = stack_command(
            &self.dir,
            &[
                ("INGEST_KAFKA_NODES", "1".into()),
                ("INGEST_KAFKA_PORT", self.kafka_port.to_string()),
                (
                    "INGEST_KAFKA_CONTROLLER_PORT",
                    self.controller_port.to_string(),
                ),
                ("INGEST_PG_PORT", self.pg_port.to_string()),
                ("INGEST_TOPIC_PARTITIONS", "1".into()),
                ("INGEST_DLQ_PARTITIONS", "1".into()),
                ("KAFKA_HEAP", "-Xms256m -Xmx256m".into()),
            ],
        );
        command.args(args);
        command
    }

    /// Runs `scripts/stack.sh <args>` (e.g. `["up", "kafka"]`); panics with its output on failure.
    pub fn run(&self, args: &[&str]) {
        run_checked(self.command(args), &format!("{args:?}"));
    }

    pub fn kafka_brokers(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    pub fn database_url(&self) -> String {
        format!("postgres://ingest@127.0.0.1:{}/ingest", self.pg_port)
    }
}

impl Default for PrivateStack {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--purge"]).output();
    }
}

/// A three-node Kafka cluster of a test's own (`INGEST_KAFKA_NODES=3`): combined KRaft
/// nodes 1, 2 and 3; topics `ingest.contacts`, `ingest.events` and `ingest.dlq` with
/// replication factor 3, `min.insync.replicas=2`, no unclean leader election.
pub struct KafkaCluster {
    dir: PathBuf,
    /// Node N's client port is this + 10(N-1), its controller port that + 1.
    base_port: u16,
}

/// The nodes of a cluster.
pub const CLUSTER_NODES: [i32; 3] = [1, 2, 3];

impl KafkaCluster {
    /// Starts the cluster with `partitions` partitions per topic and waits until every
    /// partition has its three replicas in sync.
    pub fn start(partitions: u32) -> Self {
        let cluster = Self {
            dir: std::env::temp_dir().join(unique("cluster")),
            base_port: free_port_block(),
        };
        let mut command = cluster.command(&["up", "kafka"]);
        command.env("INGEST_TOPIC_PARTITIONS", partitions.to_string());
        run_checked(command, "up kafka (three nodes)");
        cluster.wait_fully_replicated(Duration::from_secs(60));
        cluster
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = stack_command(
            &self.dir,
            &[
                ("INGEST_KAFKA_NODES", "3".into()),
                ("INGEST_KAFKA_PORT", self.base_port.to_string()),
                (
                    "INGEST_KAFKA_CONTROLLER_PORT",
                    (self.base_port + 1).to_string(),
                ),
                ("INGEST_DLQ_PARTITIONS", "1".into()),
                ("KAFKA_HEAP", "-Xms320m -Xmx320m".into()),
            ],
        );
        command.args(args);
        command
    }

    /// `bootstrap.servers` naming all three nodes.
    pub fn brokers(&self) -> String {
        CLUSTER_NODES
            .iter()
            .map(|n| format!("127.0.0.1:{}", self.port(*n)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn port(&self, node: i32) -> u16 {
        self.base_port + 10 * (node as u16 - 1)
    }

    /// `scripts/stack.sh node N start|stop|kill`: `stop` is a controlled shutdown
    /// (SIGTERM), `kill` a crash (SIGKILL); both return once the process is gone, `start`
    /// once the node listens again.
    pub fn node(&self, node: i32, action: &str) {
        let node_arg = node.to_string();
        run_checked(
            self.command(&["node", &node_arg, action]),
            &format!("node {node} {action}"),
        );
    }

    /// The node id of the active KRaft controller, if a quorum answers.
    pub fn active_controller(&self) -> Option<i32> {
        let output = self.command(&["controller"]).output().ok()?;
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    }

    fn metadata(&self) -> Option<Metadata> {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.brokers())
            .create()
            .expect("metadata client");
        client.fetch_metadata(None, Duration::from_secs(5)).ok()
    }

    /// How many partitions of the pipeline's topics each node leads now.
    pub fn leaderships(&self) -> BTreeMap<i32, usize> {
        let metadata = self.metadata().expect("cluster metadata");
        let mut counts = BTreeMap::new();
        for topic in metadata.topics() {
            if !topic.name().starts_with("ingest.") {
                continue;
            }
            for partition in topic.partitions() {
                *counts.entry(partition.leader()).or_default() += 1;
            }
        }
        counts
    }

    /// Waits until every partition of every topic (the consumer offsets too) has a leader
    /// and all three replicas in its ISR: the state before and after a drill.
    pub fn wait_fully_replicated(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut last = String::from("no metadata");
        loop {
            if let Some(metadata) = self.metadata() {
                let lagging: Vec<String> = metadata
                    .topics()
                    .iter()
                    .flat_map(|t| {
                        t.partitions()
                            .iter()
                            .filter(|p| p.leader() < 0 || p.isr().len() < CLUSTER_NODES.len())
                            .map(move |p| format!("{}/{} isr {:?}", t.name(), p.id(), p.isr()))
                    })
                    .collect();
                let complete = metadata
                    .topics()
                    .iter()
                    .any(|t| t.name() == "ingest.events");
                if complete && lagging.is_empty() {
                    return;
                }
                last = format!(
                    "{} partitions not fully in sync: {lagging:?}",
                    lagging.len()
                );
            }
            assert!(
                Instant::now() < deadline,
                "cluster not fully replicated within {timeout:?}: {last}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let _ = self.command(&["down", "--purge"]).output();
    }
}

/// A port P such that P, P+1, P+10, P+11, P+20 and P+21 are free on 127.0.0.1.
fn free_port_block() -> u16 {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    for _ in 0..200 {
        let base = free_port();
        if base > 65000 {
            continue;
        }
        if [0, 1, 10, 11, 20, 21].iter().all(|d| free(base + d)) {
            return base;
        }
    }
    panic!("no block of free ports for a three-node cluster");
}
