//! Consumer lag: for each partition assigned to this worker, how many messages are not
//! yet committed by the group (high watermark minus committed offset). Committed, not
//! fetched: a message counts as lag until its batch is in the database.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::Offset;
use tokio_util::sync::CancellationToken;

use crate::metrics::CONSUMER_LAG_MESSAGES;

const EVERY: Duration = Duration::from_secs(5);
const BROKER_TIMEOUT: Duration = Duration::from_secs(2);

/// Refreshes the lag gauges every 5 s until `shutdown`.
pub async fn report_periodically(consumer: Arc<StreamConsumer>, shutdown: CancellationToken) {
    let mut reported: HashSet<(String, i32)> = HashSet::new();
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let consumer = consumer.clone();
        let measured = tokio::task::spawn_blocking(move || measure(&consumer)).await;
        // A measurement that failed (broker unreachable) changes no gauge: an outage
        // must not read as "caught up".
        let Ok(Some(lags)) = measured else { continue };
        let current: HashSet<(String, i32)> =
            lags.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
        for (topic, partition, lag) in lags {
            let Some(lag) = lag else { continue };
            metrics::gauge!(CONSUMER_LAG_MESSAGES, "topic" => topic, "partition" => partition.to_string())
                .set(lag as f64);
        }
        // Partitions moved to another worker: this one no longer lags on them.
        for (topic, partition) in reported.difference(&current) {
            metrics::gauge!(CONSUMER_LAG_MESSAGES, "topic" => topic.clone(), "partition" => partition.to_string())
                .set(0.0);
        }
        reported = current;
    }
}

/// (topic, partition, lag) for every assigned partition, the lag `None` where the
/// partition's watermarks could not be read; `None` when the assignment or the committed
/// offsets could not be. Blocking broker calls.
fn measure(consumer: &StreamConsumer) -> Option<Vec<(String, i32, Option<i64>)>> {
    let assignment = consumer.assignment().ok()?;
    let committed = consumer
        .committed_offsets(assignment.clone(), BROKER_TIMEOUT)
        .ok()?;
    let mut lags = Vec::new();
    for element in assignment.elements() {
        let (topic, partition) = (element.topic(), element.partition());
        let Ok((low, high)) = consumer.fetch_watermarks(topic, partition, BROKER_TIMEOUT) else {
            lags.push((topic.to_owned(), partition, None));
            continue;
        };
        let done = match committed
            .find_partition(topic, partition)
            .map(|e| e.offset())
        {
            Some(Offset::Offset(offset)) => offset,
            _ => low,
        };
        lags.push((topic.to_owned(), partition, Some((high - done).max(0))));
    }
    Some(lags)
}
