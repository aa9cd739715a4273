//! Operations checks with real tools: promtool (config, rules, rule unit tests, the
//! binaries' metrics exposition), a real Prometheus server scraping a running gateway
//! and worker, the Grafana dashboard against what the binaries export, docker-compose,
//! kubernetes-validate and hadolint on the deployment files.
//!
//! The tools are installed by `scripts/test.sh` (`ensure_ops_tools` in
//! `scripts/common.sh`), which exports their paths (PROMTOOL, PROMETHEUS, DOCKER_COMPOSE,
//! KUBERNETES_VALIDATE, HADOLINT); otherwise they are looked up on PATH and in
//! `.stack/venv/bin`. A missing tool fails the test with the command that installs it.
//!
//! Every validator is also shown a broken copy of its input and must reject it, so a
//! check that silently accepts everything cannot pass.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use ingest_testkit::{
    kafka_brokers, metrics_text, migrated_pool, sample_sum, stream_url, unique, wait_for,
    GatewayProcess, Tenant, TestTopics, WorkerProcess,
};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

#[path = "operations/replication.rs"]
mod replication;
use replication::{compose_kafka_problems, k8s_kafka_problems};

const INSTALL_HINT: &str =
    "run `scripts/test.sh` once, or `bash -c 'source scripts/common.sh && ensure_ops_tools'`";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

/// The path of a tool: `$var` if set, else `name` on PATH, else `.stack/venv/bin/name`.
fn tool(var: &str, name: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let venv = std::env::var_os("INGEST_STACK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".stack"))
        .join("venv/bin");
    on_path
        .into_iter()
        .chain([venv])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` not found (nor ${var}): {INSTALL_HINT}"))
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` and panics with its output unless it succeeds.
fn must_pass(what: &str, command: &mut Command) -> String {
    let output = run(command);
    assert!(output.status.success(), "{what} failed:\n{}", text(&output));
    text(&output)
}

/// Runs `command` and panics unless it fails: the validator must reject a broken input.
fn must_reject(what: &str, command: &mut Command) {
    let output = run(command);
    assert!(
        !output.status.success(),
        "{what}: the validator accepted a broken file:\n{}",
        text(&output)
    );
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// A temporary directory, deleted on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(unique("ops"));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    /// Writes `contents` to `name` inside the directory and returns its path.
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create dir");
        }
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `text` with `from` replaced by `to` (`from` empty: unchanged); panics if `from` does
/// not occur (a stale mutation would otherwise test nothing).
fn mutate(text: &str, from: &str, to: &str) -> String {
    if from.is_empty() {
        return text.to_owned();
    }
    assert!(text.contains(from), "mutation target {from:?} not found");
    text.replacen(from, to, 1)
}

/// The unmodified copy (`from` empty) must pass, every mutation must be rejected.
fn check_or_reject(what: &str, from: &str, command: &mut Command) {
    if from.is_empty() {
        must_pass(what, command);
    } else {
        must_reject(what, command);
    }
}

#[test]
fn prometheus_config_rules_and_rule_unit_tests_pass_promtool() {
    let promtool = tool("PROMTOOL", "promtool");
    let dir = repo().join("deploy/prometheus");
    must_pass(
        "promtool check config",
        Command::new(&promtool)
            .args(["check", "config", "prometheus.yml"])
            .current_dir(&dir),
    );
    must_pass(
        "promtool check rules",
        Command::new(&promtool)
            .args(["check", "rules", "alerts.yml"])
            .current_dir(&dir),
    );
    must_pass(
        "promtool test rules",
        Command::new(&promtool)
            .args(["test", "rules", "tests/alerts_test.yml"])
            .current_dir(&dir),
    );

    // Broken copies, laid out like deploy/prometheus; each command first passes on an
    // unmodified copy, so a rejection is the mutation's doing.
    let temp = TempDir::new();
    let alerts = read("deploy/prometheus/alerts.yml");
    let config = read("deploy/prometheus/prometheus.yml");
    let tests = read("deploy/prometheus/tests/alerts_test.yml");
    let control = temp.write("control.yml", &alerts);
    must_pass(
        "promtool check rules (unmodified copy)",
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&control),
    );
    let bad_expr = temp.write(
        "bad-expr.yml",
        &mutate(
            &alerts,
            "expr: up{job=\"ingest-worker\"} == 0",
            "expr: up{job=\"ingest-worker\" == 0",
        ),
    );
    must_reject(
        "promtool check rules (PromQL syntax error)",
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&bad_expr),
    );
    let bad_key = temp.write(
        "bad-key.yml",
        &mutate(&alerts, "    rules:\n", "    rulez:\n"),
    );
    must_reject(
        "promtool check rules (unknown key)",
        Command::new(&promtool)
            .args(["check", "rules"])
            .arg(&bad_key),
    );
    temp.write("alerts.yml", &alerts);
    let control = temp.write("prometheus.yml", &config);
    must_pass(
        "promtool check config (unmodified copy)",
        Command::new(&promtool)
            .args(["check", "config"])
            .arg(&control),
    );
    temp.write("tests/alerts_test.yml", &tests);
    must_pass(
        "promtool test rules (unmodified copy)",
        Command::new(&promtool)
            .args(["test", "rules", "tests/alerts_test.yml"])
            .current_dir(&temp.0),
    );
    let bad_config = temp.write(
        "prometheus.yml",
        &mutate(&config, "scrape_interval: 15s", "scrape_intervall: 15s"),
    );
    must_reject(
        "promtool check config (unknown key)",
        Command::new(&promtool)
            .args(["check", "config"])
            .arg(&bad_config),
    );
    // A weakened alert (503 threshold 90% instead of 1%) must fail its unit test.
    temp.write(
        "alerts.yml",
        &mutate(&alerts, "status=\"503\"}[5m]))\n            / sum(rate(ingest_gateway_http_requests_total[5m])) > 0.01",
            "status=\"503\"}[5m]))\n            / sum(rate(ingest_gateway_http_requests_total[5m])) > 0.9"),
    );
    must_reject(
        "promtool test rules (weakened alert)",
        Command::new(&promtool)
            .args(["test", "rules", "tests/alerts_test.yml"])
            .current_dir(&temp.0),
    );
}

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

/// The lines of one top-level service of a compose file.
fn service_block(compose: &str, name: &str) -> String {
    let header = format!("  {name}:");
    compose
        .lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect::<Vec<_>>()
        .join("\n")
}

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

#[test]
fn dockerfile_passes_hadolint_and_copies_every_workspace_manifest() {
    let hadolint = tool("HADOLINT", "hadolint");
    let config = repo().join("deploy/hadolint.yaml");
    must_pass(
        "hadolint",
        Command::new(&hadolint)
            .arg("--config")
            .arg(&config)
            .arg(repo().join("deploy/Dockerfile")),
    );
    let dockerfile = read("deploy/Dockerfile");
    // The dependency layer needs every workspace member's manifest.
    let cargo = read("Cargo.toml");
    let members = cargo
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("workspace members");
    let members: Vec<&str> = members
        .split('"')
        .filter(|s| s.starts_with("crates/"))
        .collect();
    assert!(
        members.len() >= 6,
        "could not read the workspace members from Cargo.toml: {members:?}"
    );
    for member in members {
        let copy = format!("COPY {member}/Cargo.toml {member}/Cargo.toml");
        assert!(
            dockerfile.contains(&copy),
            "deploy/Dockerfile lacks `{copy}`"
        );
    }
    let temp = TempDir::new();
    for (what, from, to) in [
        ("unmodified copy: must pass", "", ""),
        ("root user", "USER 10001:10001", "USER root"),
        (
            "unpinned base image",
            "FROM debian:${DEBIAN_RELEASE}-slim",
            "FROM debian:latest",
        ),
        (
            "cd instead of WORKDIR",
            "RUN find crates",
            "RUN cd /src && find crates",
        ),
    ] {
        let broken = temp.write("Dockerfile", &mutate(&dockerfile, from, to));
        let mut command = Command::new(&hadolint);
        command.arg("--config").arg(&config).arg(&broken);
        check_or_reject(&format!("hadolint ({what})"), from, &mut command);
    }
}

/// A binary of this workspace next to this test's executable (target/<profile>/), built
/// after the last change to the sources it is made of.
fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let binary = dir.join(name);
    let hint = format!(
        "{} is missing or older than its sources: run `cargo build -p ingest-gateway -p ingest-worker` first (scripts/test.sh does)",
        binary.display()
    );
    let built = std::fs::metadata(&binary)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| panic!("{hint}"));
    // Each binary is its crate's (crates/<name>); only the worker embeds the migrations.
    let mut sources = vec![
        format!("crates/{name}/src"),
        "crates/ingest-types/src".to_owned(),
    ];
    if name == "ingest-worker" {
        sources.push("migrations".to_owned());
    }
    for source in sources {
        assert!(newest(&repo().join(source)) <= built, "{hint}");
    }
    binary
}

fn newest(path: &Path) -> SystemTime {
    let meta = std::fs::metadata(path).expect("source path");
    if meta.is_dir() {
        std::fs::read_dir(path)
            .expect("read dir")
            .filter_map(|e| e.ok())
            .map(|e| newest(&e.path()))
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    } else {
        meta.modified().expect("mtime")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A Prometheus server of our own (temp config and data dir, 127.0.0.1, a free port).
struct PrometheusServer {
    url: String,
    child: std::process::Child,
    _dir: TempDir,
}

impl PrometheusServer {
    async fn start(gateway: &str, worker: &str) -> Self {
        let binary = tool("PROMETHEUS", "prometheus");
        let dir = TempDir::new();
        let port = free_port();
        let host = |url: &str| url.trim_start_matches("http://").to_owned();
        let rules = repo().join("deploy/prometheus/alerts.yml");
        let config = dir.write(
            "prometheus.yml",
            &format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: ['{}']\n\
                 scrape_configs:\n\
                 \x20 - job_name: ingest-gateway\n    static_configs: [{{targets: ['{}']}}]\n\
                 \x20 - job_name: ingest-worker\n    static_configs: [{{targets: ['{}']}}]\n",
                rules.display(),
                host(gateway),
                host(worker)
            ),
        );
        let log = std::fs::File::create(dir.0.join("prometheus.log")).expect("log file");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let server = Self {
            url: format!("http://127.0.0.1:{port}"),
            child,
            _dir: dir,
        };
        let ready = format!("{}/-/ready", server.url);
        wait_for(
            "prometheus to be ready",
            Duration::from_secs(30),
            || async {
                reqwest::get(&ready)
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            },
        )
        .await;
        server
    }

    /// An instant query; panics unless Prometheus answers `success`.
    async fn query(&self, expr: &str) -> Vec<Value> {
        let response: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("query prometheus")
            .json()
            .await
            .expect("prometheus answer");
        assert_eq!(response["status"], "success", "{expr}: {response}");
        response["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Polls `expr` until its result is non-empty.
    async fn wait_non_empty(&self, expr: &str) -> Vec<Value> {
        wait_for(
            &format!("a result for `{expr}`"),
            Duration::from_secs(45),
            || async {
                let result = self.query(expr).await;
                (!result.is_empty()).then_some(result)
            },
        )
        .await
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every `expr` in the dashboard, with Grafana's variables replaced.
fn dashboard_queries() -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(expr)) = map.get("expr") {
                    out.push(expr.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/ingest-pipeline.json"))
            .expect("dashboard JSON");
    assert_eq!(dashboard["uid"], "ingest-pipeline");
    let mut queries = Vec::new();
    walk(&dashboard, &mut queries);
    assert!(queries.len() >= 10, "{queries:?}");
    queries
        .into_iter()
        .map(|q| {
            q.replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
        })
        .collect()
}

/// The metric names (`ingest_*`) a PromQL expression reads, histogram suffixes removed.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = expr[i..].starts_with("ingest_")
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if starts {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(expr.len(), |n| i + n);
            let name = &expr[i..end];
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(base.to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// The names declared by `# TYPE` lines of a Prometheus text exposition.
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn promtool_check_metrics(promtool: &Path, exposition: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write exposition");
    child.wait_with_output().expect("promtool output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_gateway_and_worker_and_the_dashboard_queries_resolve() {
    let promtool = tool("PROMTOOL", "promtool");
    // Before anything starts: a missing tool or a stale binary fails fast.
    tool("PROMETHEUS", "prometheus");
    let gateway_bin = workspace_binary("ingest-gateway");
    let worker_bin = workspace_binary("ingest-worker");

    let pool = migrated_pool().await;
    let topics = TestTopics::create(2).await;
    let tenant = Tenant::create(&pool).await;
    // A limit of one request a minute on GET .../stream, so a 429 is counted.
    tenant.set_limit("web", "stream", 1).await;
    let gateway = GatewayProcess::spawn(gateway_bin.to_str().unwrap(), &topics, &[]).await;
    let worker = WorkerProcess::spawn(worker_bin.to_str().unwrap(), &topics, &[]).await;

    // Traffic that makes every metric of the dashboard exist: accepted and invalid items,
    // a 429, persisted messages, and one message the worker can only dead-letter.
    let client = reqwest::Client::new();
    let contacts = client
        .post(stream_url(&gateway.base_url, &tenant.project, "web", "contacts"))
        .bearer_auth(&tenant.token)
        .json(&json!([{"_user_id": "USER-1", "_email": "ada@example.com"}, {"_email": "no-user@example.com"}]))
        .send()
        .await
        .expect("post contacts");
    assert_eq!(contacts.status(), 202);
    let events = client
        .post(stream_url(
            &gateway.base_url,
            &tenant.project,
            "web",
            "events",
        ))
        .bearer_auth(&tenant.token)
        .json(
            &json!([{"_user_id": "USER-1", "_event_id": unique("ev"), "_event_type": "page_view"}]),
        )
        .send()
        .await
        .expect("post events");
    assert_eq!(events.status(), 202);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = client
            .get(format!(
                "{}/v1/project/{}/datasource/web/stream",
                gateway.base_url, tenant.project
            ))
            .bearer_auth(&tenant.token)
            .send()
            .await
            .expect("get stream");
        statuses.push(response.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_brokers())
        .create()
        .expect("producer");
    producer
        .send(
            FutureRecord::to(&topics.topics.contacts)
                .key("poison")
                .payload(b"{not an envelope"),
            Duration::from_secs(10),
        )
        .await
        .expect("produce poison message");

    let worker_text = wait_for(
        "the worker to persist 2 messages, dead-letter 1 and report its lag",
        Duration::from_secs(60),
        || async {
            let text = metrics_text(&worker.ops_url).await;
            let persisted: f64 = sample_sum(
                &text,
                "ingest_worker_messages_total",
                "outcome=\"persisted\"",
            );
            let dead: f64 = sample_sum(
                &text,
                "ingest_worker_messages_total",
                "outcome=\"dead_lettered\"",
            );
            (persisted >= 2.0
                && dead >= 1.0
                && text.contains("ingest_worker_consumer_lag_messages{"))
            .then_some(text)
        },
    )
    .await;
    let gateway_text = metrics_text(&gateway.admin_url).await;

    // Both expositions pass promtool's parser and linter (HELP text, naming, types).
    for (name, exposition) in [("gateway", &gateway_text), ("worker", &worker_text)] {
        let output = promtool_check_metrics(&promtool, exposition);
        assert!(
            output.status.success(),
            "promtool check metrics rejected the {name}'s /metrics:\n{}\n{exposition}",
            text(&output)
        );
    }
    // ...and the linter is not a no-op: an exposition without HELP and with a counter
    // not named *_total is rejected.
    let bad = promtool_check_metrics(
        &promtool,
        "# TYPE ingest_bad_counter counter\ningest_bad_counter 1\n",
    );
    assert!(!bad.status.success(), "{}", text(&bad));

    // Every metric the dashboard reads is exported by one of the two binaries.
    let exports: BTreeSet<String> = exported(&gateway_text)
        .union(&exported(&worker_text))
        .cloned()
        .collect();
    let queries = dashboard_queries();
    for query in &queries {
        for name in metric_names(query) {
            assert!(
                exports.contains(&name),
                "the dashboard queries {name} (in `{query}`), which neither binary exports; exported: {exports:?}"
            );
        }
    }

    // A real Prometheus scrapes both and answers about them, with the alert rules loaded.
    let prometheus = PrometheusServer::start(&gateway.admin_url, &worker.ops_url).await;
    for job in ["ingest-gateway", "ingest-worker"] {
        prometheus
            .wait_non_empty(&format!("up{{job=\"{job}\"}} == 1"))
            .await;
    }
    let persisted = prometheus
        .wait_non_empty("sum(ingest_worker_messages_total{outcome=\"persisted\"}) >= 2")
        .await;
    assert_eq!(persisted.len(), 1, "{persisted:?}");
    prometheus
        .wait_non_empty("ingest_gateway_items_total{kind=\"contact\", outcome=\"accepted\"} >= 1")
        .await;
    // The rules file is loaded, and the dead letter fires its alert.
    let alert = prometheus
        .wait_non_empty("ALERTS{alertname=\"IngestDeadLetters\"}")
        .await;
    assert_eq!(alert[0]["metric"]["topic"], topics.topics.contacts.as_str());
    // Every dashboard query is valid PromQL for a real server and returns data.
    for query in &queries {
        prometheus.wait_non_empty(query).await;
    }
    drop(prometheus);
    drop(worker);
    drop(gateway);
    topics.delete().await;
}
