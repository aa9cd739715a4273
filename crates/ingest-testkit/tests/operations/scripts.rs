//! `scripts/run.sh` as a developer runs it: twice in a row (the second run finds the demo
//! project, datasource and token in place and restarts the gateway and the worker), on a
//! stack of its own so that the shared dev stack is left alone.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ingest_testkit::unique;

use super::{repo, text, workspace_binary};

/// `scripts/run.sh` and `scripts/stack.sh` pointed at a data dir, Kafka and PostgreSQL
/// ports, and gateway and worker ports of their own. Dropping it stops what they started
/// (`run.sh stop`, `stack.sh down --purge`) and deletes the data dir.
struct RunScript {
    dir: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl RunScript {
    /// Runs the binaries in `bin_dir` rather than building release ones.
    fn new(bin_dir: &Path) -> Self {
        let dir = std::env::temp_dir().join(unique("run-sh"));
        // Six different ports: each picked while the others are still held (one at a
        // time, the system can hand the same free port out twice).
        let [kafka, controller, pg, gateway, admin, worker] = free_ports::<6>();
        let env = vec![
            ("INGEST_STACK_DIR", dir.display().to_string()),
            ("INGEST_BIN_DIR", bin_dir.display().to_string()),
            ("INGEST_KAFKA_NODES", "1".to_owned()),
            ("INGEST_KAFKA_PORT", kafka.to_string()),
            ("INGEST_KAFKA_CONTROLLER_PORT", controller.to_string()),
            ("INGEST_PG_PORT", pg.to_string()),
            ("INGEST_TOPIC_PARTITIONS", "1".to_owned()),
            ("INGEST_DLQ_PARTITIONS", "1".to_owned()),
            ("KAFKA_HEAP", "-Xms256m -Xmx256m".to_owned()),
            ("INGEST_GATEWAY_PORT", gateway.to_string()),
            ("INGEST_GATEWAY_ADMIN_PORT", admin.to_string()),
            ("INGEST_WORKER_PORT", worker.to_string()),
        ];
        Self { dir, env }
    }

    /// `bash <script> <args>` from the repository root. The pipeline's settings of this
    /// process (the shared stack's DATABASE_URL and KAFKA_BROKERS, a topic prefix, ...)
    /// are left out; the jar cache (INGEST_CACHE_DIR) is kept.
    fn command(&self, script: &str, args: &[&str]) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(repo().join(script))
            .args(args)
            .current_dir(repo());
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy();
            let pipeline = key.starts_with("INGEST_") && key != "INGEST_CACHE_DIR";
            if pipeline || ["DATABASE_URL", "KAFKA_BROKERS", "KAFKA_HEAP"].contains(&&*key) {
                command.env_remove(&*key);
            }
        }
        command.envs(self.env.iter().map(|(key, value)| (*key, value)));
        command
    }

    fn port(&self, name: &str) -> &str {
        let (_, value) = self.env.iter().find(|(key, _)| *key == name).expect(name);
        value
    }

    fn run(&self) -> Output {
        self.command("scripts/run.sh", &[])
            .output()
            .expect("run scripts/run.sh")
    }
}

impl Drop for RunScript {
    fn drop(&mut self) {
        let _ = self.command("scripts/run.sh", &["stop"]).output();
        let _ = self
            .command("scripts/stack.sh", &["down", "--purge"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn run_sh_succeeds_twice_in_a_row_and_what_it_prints_works() {
    // The binaries `cargo build` made (scripts/test.sh builds them), not a release build.
    let gateway = workspace_binary("ingest-gateway");
    workspace_binary("ingest-worker");
    workspace_binary("ingestctl");
    let run = RunScript::new(gateway.parent().expect("target dir"));
    for attempt in ["first", "second"] {
        let output = run.run();
        assert!(
            output.status.success(),
            "the {attempt} run of scripts/run.sh failed:\n{}",
            text(&output)
        );
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("The pipeline is running"),
            "{}",
            text(&output)
        );
    }
    // The demo token it keeps writes through the gateway it restarted.
    let token = std::fs::read_to_string(run.dir.join("demo-token")).expect("demo token");
    let url = format!(
        "http://127.0.0.1:{}/v1/project/demo/datasource/web/stream/contacts",
        run.port("INGEST_GATEWAY_PORT")
    );
    let status = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &url,
        ])
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", token.trim()))
        .args(["-H", "Content-Type: application/json"])
        .args([
            "-d",
            r#"[{"_user_id": "USER-1", "_email": "ada@example.com"}]"#,
        ])
        .output()
        .expect("run curl");
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "202",
        "{}",
        text(&status)
    );
}

/// `N` free ports, all different.
fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("bound").port())
}
