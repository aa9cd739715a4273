//! What the binaries export: their expositions pass promtool, a real Prometheus scrapes
//! a running gateway and worker with the alert rules loaded, and every query of the
//! Grafana dashboard reads exported metrics and returns data.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ingest_testkit::{
    kafka_brokers, metrics_text, migrated_pool, sample_sum, stream_url, unique, wait_for,
    GatewayProcess, Tenant, TestTopics, WorkerProcess,
};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use super::{free_port, read, repo, text, tool, workspace_binary, TempDir};

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
