//! The Prometheus configuration and alert rules: promtool checks them and runs the
//! rules' unit tests (deploy/prometheus).

use std::process::Command;

use super::{must_pass, must_reject, mutate, read, repo, tool, TempDir};

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
