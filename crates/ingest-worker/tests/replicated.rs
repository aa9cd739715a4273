//! "Accepted means durable" on a replicated Kafka: a three-node cluster of the test's own
//! (replication factor 3, `min.insync.replicas=2`, no unclean leader election), a gateway
//! and a worker, under a steady HTTP load of events and contacts, through four failure
//! drills. After each, every item answered `success` is in PostgreSQL exactly once and
//! unchanged (and every user's last accepted write is the one stored), the gateway
//! answered only 202 or 503, and the gateway and the worker recovered without a restart.
//!
//! The drills share the machine with three Kafka JVMs, so they run one at a time.

#[path = "replicated/load.rs"]
mod load;

use std::time::{Duration, Instant};

use ingest_testkit::{migrated_pool, KafkaCluster, Tenant, TestGateway, TestTopics, TestWorker};
use load::{Exchange, Load, Report};
use sqlx::PgPool;

static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A cluster, a gateway and a worker on it, and a tenant without practical rate limits.
struct Drill {
    cluster: KafkaCluster,
    pool: PgPool,
    tenant: Tenant,
    gateway: TestGateway,
    worker: TestWorker,
}

impl Drill {
    async fn start() -> Self {
        let cluster = tokio::task::block_in_place(|| KafkaCluster::start(4));
        let pool = migrated_pool().await;
        let tenant = Tenant::create(&pool).await;
        for endpoint in ["events", "contacts"] {
            tenant.set_limit("web", endpoint, 1_000_000).await;
        }
        // The topics are the cluster's own `ingest.*`; a group of this drill's own.
        let topics = TestTopics::naming_only("ingest");
        let brokers = cluster.brokers();
        let group = ingest_testkit::unique("drill");
        let gateway = TestGateway::spawn(&topics, &[("KAFKA_BROKERS", brokers.as_str())]).await;
        let worker = TestWorker::spawn(
            &topics,
            &[
                ("KAFKA_BROKERS", brokers.as_str()),
                ("INGEST_WORKER_GROUP", group.as_str()),
            ],
        )
        .await;
        Self {
            cluster,
            pool,
            tenant,
            gateway,
            worker,
        }
    }

    fn load(&self) -> Load {
        Load::start(
            &self.gateway.base_url,
            &self.tenant.project,
            &self.tenant.token,
            4,
            Duration::from_millis(20),
        )
    }

    /// Runs a cluster command off the async threads.
    fn act<T>(&self, f: impl FnOnce(&KafkaCluster) -> T) -> T {
        tokio::task::block_in_place(|| f(&self.cluster))
    }

    /// The checks every drill ends with; `recovered` is when the cluster was back in
    /// full sync.
    async fn finish(self, report: &Report, recovered: Instant) {
        eprintln!("{}", report.summary());
        let statuses = report.statuses();
        assert!(
            statuses.keys().all(|s| *s == 202 || *s == 503),
            "the gateway answers 202 or 503, nothing else: {statuses:?}"
        );
        let after = report.during(|sent, _| sent > recovered + Duration::from_secs(2));
        assert!(
            after.len() >= 20,
            "load went on after recovery: {}",
            after.len()
        );
        assert_all(&after, 202, "once the cluster is back in sync");
        report
            .assert_stored_exactly_once(&self.pool, &self.tenant.project)
            .await;
        self.worker.stop().await;
        self.gateway.stop().await;
    }
}

fn assert_all(exchanges: &[&Exchange], status: u16, when: &str) {
    let mut other = std::collections::BTreeMap::<u16, usize>::new();
    for e in exchanges.iter().filter(|e| e.status != status) {
        *other.entry(e.status).or_default() += 1;
    }
    assert!(
        other.is_empty(),
        "{when}: every request answered {status}, but of {} requests (status: count) {other:?}",
        exchanges.len()
    );
}

fn count(exchanges: &[&Exchange], status: u16) -> usize {
    exchanges.iter().filter(|e| e.status == status).count()
}

async fn sleep_secs(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_leading_most_partitions_killed_and_restarted_loses_nothing() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let drill = Drill::start().await;
    let load = drill.load();
    sleep_secs(5).await;

    let leaderships = drill.act(|c| c.leaderships());
    let (&victim, _) = leaderships.iter().max_by_key(|(_, n)| **n).unwrap();
    let killed = Instant::now();
    drill.act(|c| c.node(victim, "kill"));
    sleep_secs(15).await;
    let restarting = Instant::now();
    drill.act(|c| {
        c.node(victim, "start");
        c.wait_fully_replicated(Duration::from_secs(120));
    });
    let recovered = Instant::now();
    sleep_secs(8).await;
    let report = load.stop().await;
    eprintln!("node {victim} (leading {leaderships:?}) killed");

    assert_all(
        &report.during(|_, done| done < killed),
        202,
        "before the kill",
    );
    // Two replicas are left in sync: once leadership has moved (the session timeout),
    // writes are acknowledged again while the node is still down.
    let while_down = report.during(|sent, done| sent > killed && done < restarting);
    assert!(
        count(&while_down, 202) > 0,
        "202s while one node of three is down"
    );
    drill.finish(&report, recovered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_brokers_of_three_stopped_get_503_never_202_and_202_again_when_one_returns() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let drill = Drill::start().await;
    let load = drill.load();
    sleep_secs(5).await;

    drill.act(|c| {
        c.node(2, "stop");
        c.node(3, "stop");
    });
    let down = Instant::now();
    sleep_secs(12).await;
    let returning = Instant::now();
    drill.act(|c| c.node(2, "start"));
    // 202s again with two of three nodes: wait for the first one answered after the
    // node's return, while node 3 stays down.
    sleep_secs(25).await;
    let one_back = Instant::now();
    drill.act(|c| {
        c.node(3, "start");
        c.wait_fully_replicated(Duration::from_secs(120));
    });
    let recovered = Instant::now();
    sleep_secs(5).await;
    let report = load.stop().await;

    // Sent after both nodes were gone and answered before one was started again: no
    // write can reach two in-sync replicas, so none may be acknowledged.
    let while_two_down = report.during(|sent, done| sent > down && done < returning);
    assert!(
        while_two_down.len() >= 4,
        "requests while two nodes were down: {}",
        while_two_down.len()
    );
    assert_all(&while_two_down, 503, "while two of three nodes are down");
    let with_two = report.during(|sent, done| sent > returning && done < one_back);
    assert!(
        count(&with_two, 202) > 0,
        "202s again once one node returned (two of three in sync): {} requests, none 202",
        with_two.len()
    );
    drill.finish(&report, recovered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_active_controller_killed_another_is_elected_and_the_pipeline_goes_on() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let drill = Drill::start().await;
    let load = drill.load();
    sleep_secs(5).await;

    let controller = drill
        .act(|c| c.active_controller())
        .expect("an active controller");
    let killed = Instant::now();
    drill.act(|c| c.node(controller, "kill"));
    let elected = ingest_testkit::wait_for(
        "another active controller",
        Duration::from_secs(60),
        || async {
            drill
                .act(|c| c.active_controller())
                .filter(|id| *id != controller)
        },
    )
    .await;
    sleep_secs(12).await;
    let restarting = Instant::now();
    drill.act(|c| {
        c.node(controller, "start");
        c.wait_fully_replicated(Duration::from_secs(120));
    });
    let recovered = Instant::now();
    sleep_secs(5).await;
    let report = load.stop().await;
    eprintln!("controller {controller} killed, {elected} elected");

    let while_down = report.during(|sent, done| sent > killed && done < restarting);
    assert!(
        count(&while_down, 202) > 0,
        "the pipeline goes on while the old controller is down"
    );
    drill.finish(&report, recovered).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_of_all_three_brokers_loses_and_doubles_nothing() {
    let _one = ONE_CLUSTER_AT_A_TIME.lock().await;
    let drill = Drill::start().await;
    let load = drill.load();
    sleep_secs(5).await;

    for node in [1, 2, 3] {
        drill.act(|c| {
            c.node(node, "stop");
            c.node(node, "start");
            c.wait_fully_replicated(Duration::from_secs(120));
        });
    }
    let recovered = Instant::now();
    sleep_secs(5).await;
    let report = load.stop().await;
    drill.finish(&report, recovered).await;
}
