//! The bulk load that gives the size benchmarks a table already holding N events: the
//! workload's events, written by the worker's own persistence ([`Batch::persist`]) in
//! large batches, so the rows and the deduplication state are exactly those a worker
//! would leave (same `events` rows, same ids in the same deduplication tables), in minutes
//! rather than the hour a drain of N messages would take.
//!
//! Two things make it fast, and neither changes what is stored: each batch is large
//! (`--chunk`, 100,000 events) and its events are sorted by id, so that the inserts of one
//! batch sweep each index once in key order instead of jumping around it.

use std::time::Instant;

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ingest_types::{Envelope, Operation};
use ingest_worker::persist::Batch;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::mpsc;

use crate::workload::{IdKind, Workload};

#[derive(Debug, Args)]
pub struct PrefillArgs {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[command(flatten)]
    workload: crate::WorkloadArgs,
    /// Events to write.
    #[arg(long)]
    events: u64,
    /// Events per batch (one transaction each).
    #[arg(long, default_value_t = 100_000)]
    chunk: usize,
    /// Batches written at once.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    #[arg(long)]
    project: String,
    #[arg(long)]
    datasource: String,
    #[arg(long)]
    json_out: Option<PathBuf>,
}

/// `ingest-loadgen prefill`: fills, reports, writes the report.
pub async fn run(args: PrefillArgs) -> anyhow::Result<()> {
    let pool = crate::connect(&args.database_url).await?;
    let report = prefill(
        &pool,
        &args.workload.workload(),
        (&args.project, &args.datasource),
        args.events,
        args.chunk,
        args.connections,
    )
    .await?;
    eprintln!(
        "prefill: {} events in {:.0} s ({:.0} events/s)",
        report.events, report.duration_s, report.events_per_sec
    );
    crate::output(&report, args.json_out.as_ref())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrefillReport {
    pub events: u64,
    pub ids: IdKind,
    pub duration_s: f64,
    pub events_per_sec: f64,
}

/// Writes `events` events of `workload` under `project`/`datasource`, `chunk` to a batch,
/// over `connections` connections.
pub async fn prefill(
    pool: &PgPool,
    workload: &Workload,
    (project, datasource): (&str, &str),
    events: u64,
    chunk: usize,
    connections: usize,
) -> anyhow::Result<PrefillReport> {
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<Vec<Envelope>>(connections.max(1));
    let generator = {
        let (workload, project, datasource) =
            (workload.clone(), project.to_owned(), datasource.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut rng = rand::rng();
            let (mut made, mut seq) = (0u64, 0u64);
            while made < events {
                let want = chunk.min((events - made) as usize);
                let mut envelopes = Vec::with_capacity(want + workload.batch_size);
                while envelopes.len() < want {
                    let batch = workload.batch(seq, &mut rng);
                    seq += 1;
                    let received_at = chrono::Utc::now();
                    envelopes.extend(workload.envelopes(
                        &batch,
                        &project,
                        &datasource,
                        received_at,
                    ));
                }
                envelopes.truncate(want);
                envelopes.sort_unstable_by(|a, b| event_id(a).cmp(event_id(b)));
                made += envelopes.len() as u64;
                if tx.blocking_send(envelopes).is_err() {
                    break;
                }
            }
        })
    };
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(rx));
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writers: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (pool, rx, written) = (pool.clone(), rx.clone(), written.clone());
            tokio::spawn(async move {
                loop {
                    let Some(envelopes) = rx.lock().await.recv().await else {
                        return anyhow::Ok(());
                    };
                    let batch = Batch::from_envelopes(
                        envelopes.iter().enumerate().map(|(i, e)| (i as i64, e)),
                    );
                    batch.persist(&pool).await.context("persisting a batch")?;
                    let total = written
                        .fetch_add(envelopes.len() as u64, std::sync::atomic::Ordering::Relaxed)
                        + envelopes.len() as u64;
                    eprintln!(
                        "[{:>5.0}s prefill] {total} / {events}",
                        started.elapsed().as_secs_f64()
                    );
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await??;
    }
    generator.await?;
    let duration_s = started.elapsed().as_secs_f64();
    let events = written.load(std::sync::atomic::Ordering::Relaxed);
    Ok(PrefillReport {
        events,
        ids: workload.ids,
        duration_s,
        events_per_sec: events as f64 / duration_s,
    })
}

fn event_id(envelope: &Envelope) -> &str {
    match &envelope.op {
        Operation::AppendEvent { event_id, .. } => event_id,
        _ => "",
    }
}
