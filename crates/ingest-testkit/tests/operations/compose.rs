//! docker-compose.yml: valid for docker-compose, workers that can scale, and the
//! replicated Kafka of `replication.rs`.

use std::process::Command;

use super::replication::compose_kafka_problems;
use super::{check_or_reject, must_pass, mutate, read, repo, service_block, tool, TempDir};

#[test]
fn compose_file_is_valid_and_workers_can_scale() {
    let compose = tool("DOCKER_COMPOSE", "docker-compose");
    let resolved = must_pass(
        "docker-compose config",
        Command::new(&compose)
            .args(["--file", "docker-compose.yml", "config"])
            .current_dir(repo()),
    );
    for service in [
        "kafka-1:",
        "kafka-2:",
        "kafka-3:",
        "postgres:",
        "kafka-topics:",
        "migrate:",
        "gateway:",
        "worker:",
        "prometheus:",
        "grafana:",
    ] {
        assert!(
            resolved.contains(&format!("\n  {service}\n")),
            "service {service} missing"
        );
    }
    // `--scale worker=N` needs a worker without a fixed name or host port.
    let source = read("docker-compose.yml");
    let worker = service_block(&source, "worker");
    assert!(!worker.contains("container_name"), "{worker}");
    assert!(!worker.contains("ports:"), "{worker}");
    assert!(worker.contains("condition: service_completed_successfully"));
    assert!(worker.contains("healthcheck:"));
    // Kafka is the replicated setup of the README ("Running in production").
    let problems = compose_kafka_problems(&resolved, &source);
    assert!(
        problems.is_empty(),
        "docker-compose.yml: Kafka is not replicated as documented:\n{}",
        problems.join("\n")
    );

    let temp = TempDir::new();
    for (what, from, to) in [
        ("unmodified copy: must pass", "", ""),
        (
            "unknown depends_on condition",
            "condition: service_healthy",
            "condition: service_healty",
        ),
        ("unknown service key", "    healthcheck:", "    healthchek:"),
        (
            "depends_on an unknown service",
            "      postgres:\n        condition",
            "      postgress:\n        condition",
        ),
    ] {
        let broken = temp.write("docker-compose.yml", &mutate(&source, from, to));
        let mut command = Command::new(&compose);
        command
            .arg("--file")
            .arg(&broken)
            .arg("--project-directory")
            .arg(repo())
            .args(["config", "--quiet"]);
        check_or_reject(
            &format!("docker-compose config ({what})"),
            from,
            &mut command,
        );
    }
    // The replication check is not a no-op: valid compose files with a weakened Kafka
    // setup are reported.
    for (what, from, to) in [
        (
            "min.insync.replicas 1",
            "KAFKA_MIN_INSYNC_REPLICAS: 2",
            "KAFKA_MIN_INSYNC_REPLICAS: 1",
        ),
        (
            "unclean leader election",
            "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE: \"false\"",
            "KAFKA_UNCLEAN_LEADER_ELECTION_ENABLE: \"true\"",
        ),
        (
            "a quorum of two",
            "KAFKA_CONTROLLER_QUORUM_VOTERS: 1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093",
            "KAFKA_CONTROLLER_QUORUM_VOTERS: 1@kafka-1:9093,2@kafka-2:9093",
        ),
        (
            "topics with one replica",
            "--replication-factor 3",
            "--replication-factor 1",
        ),
        (
            "clients given one broker",
            "KAFKA_BROKERS: kafka-1:9092,kafka-2:9092,kafka-3:9092",
            "KAFKA_BROKERS: kafka-1:9092",
        ),
    ] {
        let weakened = mutate(&source, from, to);
        let path = temp.write("weakened/docker-compose.yml", &weakened);
        let resolved = must_pass(
            &format!("docker-compose config (weakened copy: {what})"),
            Command::new(&compose)
                .arg("--file")
                .arg(&path)
                .arg("--project-directory")
                .arg(repo())
                .arg("config"),
        );
        assert!(
            !compose_kafka_problems(&resolved, &weakened).is_empty(),
            "the replication check accepted a compose file with {what}"
        );
    }
}
