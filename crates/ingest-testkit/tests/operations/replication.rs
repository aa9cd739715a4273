//! The replication checks of the deployment files: docker-compose.yml's three Kafka
//! brokers and deploy/k8s/optional/kafka.yaml's StatefulSet (replication factor 3,
//! min.insync.replicas 2, no unclean leader election, every client given all brokers).

use std::collections::BTreeSet;

use super::service_block;

/// The Kafka brokers of docker-compose.yml.
pub(crate) const COMPOSE_BROKERS: [&str; 3] = ["kafka-1", "kafka-2", "kafka-3"];

/// What keeps the compose file's Kafka from being the replicated setup the README
/// describes (empty if nothing): exactly three services with KRaft roles, each a combined
/// broker+controller in one quorum of all three, replication factor 3 and
/// min.insync.replicas 2 (internal topics too), no unclean leader election, a volume of
/// its own; the topics created likewise once all three are healthy; the gateway, worker
/// and ingestctl given all three brokers. `resolved` is `docker-compose config` (anchors
/// merged), `source` the file itself.
pub(crate) fn compose_kafka_problems(resolved: &str, source: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let bootstrap = "kafka-1:9092,kafka-2:9092,kafka-3:9092";
    let voters = "1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093";
    let nodes: Vec<String> = service_names(resolved)
        .into_iter()
        .filter(|name| env_value(&service_block(resolved, name), "KAFKA_PROCESS_ROLES").is_some())
        .collect();
    let expected: Vec<String> = COMPOSE_BROKERS.iter().map(|b| b.to_string()).collect();
    if nodes != expected {
        problems.push(format!("Kafka nodes {nodes:?}, expected {expected:?}"));
    }
    let mut volumes = BTreeSet::new();
    for (index, broker) in COMPOSE_BROKERS.iter().enumerate() {
        let block = service_block(resolved, broker);
        let node_id = (index + 1).to_string();
        let advertised = format!("PLAINTEXT://{broker}:9092");
        for (key, want) in [
            ("KAFKA_PROCESS_ROLES", "broker,controller"),
            ("KAFKA_NODE_ID", node_id.as_str()),
            ("KAFKA_ADVERTISED_LISTENERS", advertised.as_str()),
            ("KAFKA_CONTROLLER_QUORUM_VOTERS", voters),
            ("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"),
            ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
            ("KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE", "false"),
            ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3"),
            ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "3"),
            ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "2"),
        ] {
            let found = env_value(&block, key);
            if found.as_deref() != Some(want) {
                problems.push(format!("{broker}: {key} is {found:?}, expected {want:?}"));
            }
        }
        if !block.contains("healthcheck:") {
            problems.push(format!("{broker}: no healthcheck"));
        }
        // The volume is read from the source: its resolved form differs between
        // docker-compose versions.
        let volume = service_block(source, broker)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .find_map(|v| v.strip_suffix(":/var/lib/kafka/data"))
            .map(str::to_owned);
        match volume {
            None => problems.push(format!("{broker}: no volume at /var/lib/kafka/data")),
            Some(volume) => {
                if !volumes.insert(volume.clone()) {
                    problems.push(format!("{broker}: shares the volume {volume}"));
                }
            }
        }
    }
    for client in ["gateway", "worker", "migrate"] {
        let found = env_value(&service_block(resolved, client), "KAFKA_BROKERS");
        if found.as_deref() != Some(bootstrap) {
            problems.push(format!(
                "{client}: KAFKA_BROKERS is {found:?}, expected {bootstrap:?}"
            ));
        }
    }
    let topics = service_block(source, "kafka-topics");
    for needle in [
        "--replication-factor 3",
        "--config min.insync.replicas=2",
        "--config unclean.leader.election.enable=false",
        bootstrap,
    ] {
        if !topics.contains(needle) {
            problems.push(format!("kafka-topics lacks `{needle}`"));
        }
    }
    for service in ["kafka-topics", "gateway", "worker"] {
        let block = service_block(source, service);
        for broker in COMPOSE_BROKERS.iter() {
            let healthy = format!("      {broker}:\n        condition: service_healthy");
            if !block.contains(&healthy) {
                problems.push(format!(
                    "{service} does not wait for {broker} to be healthy"
                ));
            }
        }
    }
    problems
}

/// The service names of a resolved compose file (`docker-compose config`), in order.
pub(crate) fn service_names(resolved: &str) -> Vec<String> {
    resolved
        .lines()
        .skip_while(|l| *l != "services:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with(' '))
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.trim().strip_suffix(':'))
        .map(str::to_owned)
        .collect()
}

/// The value of the first `key: value` line of `block` (indentation and quotes removed).
pub(crate) fn env_value(block: &str, key: &str) -> Option<String> {
    block.lines().find_map(|line| {
        let value = line.trim_start().strip_prefix(key)?.strip_prefix(':')?;
        Some(value.trim().trim_matches(['"', '\'']).to_owned())
    })
}

/// The brokers of deploy/k8s/optional/kafka.yaml, as the pipeline addresses them: pod N
/// of StatefulSet `kafka` through headless Service `kafka-headless` in namespace `kafka`.
pub(crate) const K8S_BROKERS: [&str; 3] = [
    "kafka-0.kafka-headless.kafka.svc",
    "kafka-1.kafka-headless.kafka.svc",
    "kafka-2.kafka-headless.kafka.svc",
];

/// What keeps optional/kafka.yaml and configmap.yaml from being the replicated setup the
/// README describes (empty if nothing): a StatefulSet of three combined KRaft nodes
/// started in parallel, one quorum of all three, node ids from the pod ordinal, a volume
/// per pod, one pod per node, at most one unavailable through disruptions, replication
/// factor 3 and min.insync.replicas 2 (internal topics too), no unclean leader election;
/// the topics created likewise; KAFKA_BROKERS listing the three.
pub(crate) fn k8s_kafka_problems(manifest: &str, configmap: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for line in [
        "kind: StatefulSet",
        "  serviceName: kafka-headless",
        "  replicas: 3",
        "  podManagementPolicy: Parallel",
        "  clusterIP: None",
        "  publishNotReadyAddresses: true",
        "  volumeClaimTemplates:",
        "kind: PodDisruptionBudget",
        "  maxUnavailable: 1",
    ] {
        if !manifest.lines().any(|l| l == line) {
            problems.push(format!("optional/kafka.yaml lacks the line `{line}`"));
        }
    }
    for needle in [
        "fieldPath: metadata.labels['apps.kubernetes.io/pod-index']",
        "podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            - topologyKey: kubernetes.io/hostname\n",
        "--replication-factor 3",
        "--config min.insync.replicas=2",
        "--config unclean.leader.election.enable=false",
    ] {
        if !manifest.contains(needle) {
            problems.push(format!("optional/kafka.yaml lacks `{needle}`"));
        }
    }
    let voters = K8S_BROKERS
        .iter()
        .enumerate()
        .map(|(id, host)| format!("{id}@{host}:9093"))
        .collect::<Vec<_>>()
        .join(",");
    let bootstrap = K8S_BROKERS
        .iter()
        .map(|host| format!("{host}:9092"))
        .collect::<Vec<_>>()
        .join(",");
    for (name, want) in [
        ("KAFKA_PROCESS_ROLES", "broker,controller"),
        ("KAFKA_CONTROLLER_QUORUM_VOTERS", voters.as_str()),
        (
            "KAFKA_ADVERTISED_LISTENERS",
            "PLAINTEXT://$(POD_NAME).kafka-headless.kafka.svc:9092",
        ),
        ("KAFKA_DEFAULT_REPLICATION_FACTOR", "3"),
        ("KAFKA_MIN_INSYNC_REPLICAS", "2"),
        ("KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE", "false"),
        ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "3"),
        ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "3"),
        ("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "2"),
        // The topics Job's bootstrap servers.
        ("BOOTSTRAP", bootstrap.as_str()),
    ] {
        let found = container_env(manifest, name);
        if found.as_deref() != Some(want) {
            problems.push(format!(
                "optional/kafka.yaml: {name} is {found:?}, expected {want:?}"
            ));
        }
    }
    let found = env_value(configmap, "KAFKA_BROKERS");
    if found.as_deref() != Some(bootstrap.as_str()) {
        problems.push(format!(
            "configmap.yaml: KAFKA_BROKERS is {found:?}, expected {bootstrap:?}"
        ));
    }
    problems
}

/// The `value` of the first container environment variable `name` of a manifest (quotes
/// removed); `None` if it is missing or set with `valueFrom`.
pub(crate) fn container_env(manifest: &str, name: &str) -> Option<String> {
    let entry = format!("- name: {name}");
    let mut lines = manifest.lines();
    lines.find(|l| l.trim() == entry.as_str())?;
    let value = lines.next()?.trim().strip_prefix("value:")?;
    Some(value.trim().trim_matches(['"', '\'']).to_owned())
}
