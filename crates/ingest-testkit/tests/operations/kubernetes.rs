//! The Kubernetes manifests (deploy/k8s): strictly valid, probes and graceful
//! termination, and the replicated Kafka of `replication.rs`.

use std::collections::BTreeSet;
use std::process::Command;

use super::replication::k8s_kafka_problems;
use super::{check_or_reject, must_pass, mutate, read, repo, tool, TempDir};

#[test]
fn kubernetes_manifests_validate_strictly() {
    let validate = tool("KUBERNETES_VALIDATE", "kubernetes-validate");
    let k8s = repo().join("deploy/k8s");
    let kustomization = read("deploy/k8s/kustomization.yaml");
    let listed: BTreeSet<String> = kustomization
        .lines()
        .skip_while(|l| l.trim() != "resources:")
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim_start()[2..].trim().to_owned())
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(&k8s)
        .expect("deploy/k8s")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml must list every manifest"
    );

    let output = must_pass(
        "kubernetes-validate --strict",
        Command::new(&validate)
            .arg("--strict")
            .args(present.iter().map(|n| k8s.join(n))),
    );
    assert!(
        !output.contains("WARN") && !output.contains("ERROR"),
        "{output}"
    );
    // Custom resources (KEDA, Prometheus Operator) have no bundled schema: they must
    // parse and name their kind; kubernetes-validate says it has no schema for them.
    must_pass(
        "kubernetes-validate (optional custom resources)",
        Command::new(&validate)
            .arg("--strict")
            .arg(k8s.join("optional/keda-scaledobject.yaml"))
            .arg(k8s.join("optional/podmonitors.yaml")),
    );

    // Probes and graceful termination, as documented in the manifests.
    for file in ["gateway.yaml", "worker.yaml"] {
        let manifest = read(&format!("deploy/k8s/{file}"));
        for needle in [
            "livenessProbe:",
            "path: /healthz",
            "readinessProbe:",
            "path: /readyz",
            "terminationGracePeriodSeconds:",
            "kind: PodDisruptionBudget",
        ] {
            assert!(manifest.contains(needle), "{file} lacks {needle}");
        }
    }
    assert!(read("deploy/k8s/gateway.yaml").contains("kind: HorizontalPodAutoscaler"));

    // The optional Kafka cluster has built-in kinds only: it validates strictly, and it is
    // the replicated setup configmap.yaml points the pipeline at.
    let output = must_pass(
        "kubernetes-validate --strict (optional/kafka.yaml)",
        Command::new(&validate)
            .arg("--strict")
            .arg(k8s.join("optional/kafka.yaml")),
    );
    assert!(
        !output.contains("WARN") && !output.contains("ERROR"),
        "{output}"
    );
    let kafka = read("deploy/k8s/optional/kafka.yaml");
    let configmap = read("deploy/k8s/configmap.yaml");
    let problems = k8s_kafka_problems(&kafka, &configmap);
    assert!(
        problems.is_empty(),
        "deploy/k8s: Kafka is not replicated as documented:\n{}",
        problems.join("\n")
    );
    // The replication check is not a no-op.
    for (what, from, to) in [
        ("one broker", "  replicas: 3\n", "  replicas: 1\n"),
        (
            "an ordered start",
            "  podManagementPolicy: Parallel\n",
            "  podManagementPolicy: OrderedReady\n",
        ),
        (
            "min.insync.replicas 1",
            "- name: KAFKA_MIN_INSYNC_REPLICAS\n              value: \"2\"",
            "- name: KAFKA_MIN_INSYNC_REPLICAS\n              value: \"1\"",
        ),
        (
            "brokers allowed on one node",
            "requiredDuringSchedulingIgnoredDuringExecution",
            "preferredDuringSchedulingIgnoredDuringExecution",
        ),
        (
            "topics with one replica",
            "--replication-factor 3",
            "--replication-factor 1",
        ),
    ] {
        assert!(
            !k8s_kafka_problems(&mutate(&kafka, from, to), &configmap).is_empty(),
            "the replication check accepted optional/kafka.yaml with {what}"
        );
    }
    assert!(
        !k8s_kafka_problems(
            &kafka,
            &mutate(&configmap, ",kafka-2.kafka-headless.kafka.svc:9092", "")
        )
        .is_empty(),
        "the replication check accepted a KAFKA_BROKERS of two brokers"
    );

    let temp = TempDir::new();
    let gateway = read("deploy/k8s/gateway.yaml");
    for (what, from, to) in [
        ("unmodified copy: must pass", "", ""),
        (
            "misspelt field",
            "      terminationGracePeriodSeconds: 40",
            "      terminationGracePeriod: 40",
        ),
        ("wrong type", "containerPort: 8080", "containerPort: eighty"),
        (
            "missing required field",
            "  scaleTargetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n",
            "  scaleTargetRef:\n    apiVersion: apps/v1\n",
        ),
    ] {
        let broken = temp.write("gateway.yaml", &mutate(&gateway, from, to));
        let mut command = Command::new(&validate);
        command.arg("--strict").arg(&broken);
        check_or_reject(&format!("kubernetes-validate ({what})"), from, &mut command);
    }
    for (what, from, to) in [
        ("unmodified copy: must pass", "", ""),
        (
            "misspelt field",
            "  podManagementPolicy: Parallel",
            "  podManagmentPolicy: Parallel",
        ),
        ("wrong type", "  replicas: 3\n", "  replicas: three\n"),
        (
            "missing required field",
            "  selector:\n    matchLabels:\n      app.kubernetes.io/name: kafka\n  template:\n",
            "  template:\n",
        ),
    ] {
        let broken = temp.write("kafka.yaml", &mutate(&kafka, from, to));
        let mut command = Command::new(&validate);
        command.arg("--strict").arg(&broken);
        check_or_reject(
            &format!("kubernetes-validate (optional/kafka.yaml, {what})"),
            from,
            &mut command,
        );
    }
}
