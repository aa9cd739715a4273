//! Operations checks with real tools: promtool (config, rules, rule unit tests, the
//! binaries' metrics exposition), a real Prometheus server scraping a running gateway
//! and worker, the Grafana dashboard against what the binaries export, docker-compose,
//! kubernetes-validate and hadolint on the deployment files, and `scripts/run.sh`.
//!
//! One file per subject under `operations/`: `alerts.rs` (Prometheus config and alert
//! rules), `compose.rs`, `kubernetes.rs`, `images.rs` (the Dockerfile), `metrics.rs`
//! (the expositions, a real Prometheus, the dashboard), `replication.rs` (the Kafka
//! replication checks of compose and Kubernetes) and `scripts.rs`; the helpers they share
//! are here.
//!
//! The tools are installed by `scripts/test.sh` (`ensure_ops_tools` in
//! `scripts/common.sh`), which exports their paths (PROMTOOL, PROMETHEUS, DOCKER_COMPOSE,
//! KUBERNETES_VALIDATE, HADOLINT); otherwise they are looked up on PATH and in
//! `.stack/venv/bin`. A missing tool fails the test with the command that installs it.
//!
//! Every validator is also shown a broken copy of its input and must reject it, so a
//! check that silently accepts everything cannot pass.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::SystemTime;

use ingest_testkit::unique;

#[path = "operations/alerts.rs"]
mod alerts;
#[path = "operations/compose.rs"]
mod compose;
#[path = "operations/images.rs"]
mod images;
#[path = "operations/kubernetes.rs"]
mod kubernetes;
#[path = "operations/metrics.rs"]
mod metrics;
#[path = "operations/replication.rs"]
mod replication;
#[path = "operations/scripts.rs"]
mod scripts;

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
