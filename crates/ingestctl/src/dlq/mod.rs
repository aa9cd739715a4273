//! Dead letters: `ingestctl dlq list|redrive`, on the dead-letter topic (`<PREFIX>.dlq`):
//! the messages the worker could never persist. The arguments, the dispatch and the
//! output are here; reading letters in `letters`, re-publishing them in `redrive`, and
//! the record of what was redriven in `record`.

mod letters;
mod record;
mod redrive;

use clap::Subcommand;

use crate::connect::Kafka;
use crate::output::{table, time_or_dash, truncate, Output};
use redrive::Selection;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first: where each came from, why it failed, and whether
    /// it was redriven.
    ///
    /// Reads the topic from the start of every partition up to its current end, without
    /// joining a consumer group or committing anything. Text output truncates payloads;
    /// --json shows them in full.
    List {
        /// Show at most this many letters (the oldest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Re-publish dead letters to the topic and partition they came from, with their key
    /// and payload unchanged and the header ingest-redriven-from: <partition>:<offset>.
    ///
    /// Redrive letters whose cause was fixed, e.g. a worker bug that is fixed and
    /// deployed, or data (specs, a datasource) that is now in place; a letter whose
    /// cause remains just fails again and comes back as a new dead letter.
    ///
    /// A redriven contact write gets a new offset, and contact writes are versioned by
    /// offset: it becomes the newest write for its user, applied over any write accepted
    /// after the original.
    ///
    /// Redriven letters are recorded as offsets committed for the consumer group
    /// ingestctl-dlq-redrive (which never has members), so --all never redrives a letter
    /// twice, and `dlq list` marks them.
    Redrive {
        /// Redrive every letter not redriven yet.
        #[arg(long)]
        all: bool,
        /// Redrive this letter, <partition>:<offset> as shown by `dlq list`. Repeatable.
        #[arg(long = "offset", value_name = "PARTITION:OFFSET")]
        offsets: Vec<String>,
    },
}

pub async fn run(kafka: &Kafka, out: Output, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::List { limit } => {
            let list = letters::list(kafka, limit)?;
            out.print(&list, |w| {
                let rows = list
                    .letters
                    .iter()
                    .map(|l| {
                        let origin = match (&l.origin_topic, l.origin_partition, l.origin_offset) {
                            (Some(t), Some(p), Some(o)) => format!("{t}:{p}:{o}"),
                            (Some(t), _, _) => t.clone(),
                            _ => "-".to_owned(),
                        };
                        vec![
                            format!("{}:{}", l.partition, l.offset),
                            time_or_dash(l.timestamp.as_ref()),
                            if l.redriven { "yes" } else { "no" }.to_owned(),
                            origin,
                            l.key
                                .as_deref()
                                .map_or_else(|| "-".into(), |k| truncate(k, 40)),
                            l.reason
                                .as_deref()
                                .map_or_else(|| "-".into(), |r| truncate(r, 80)),
                            l.payload
                                .as_deref()
                                .map_or_else(|| "-".into(), |p| truncate(p, 60)),
                        ]
                    })
                    .collect();
                let headers = [
                    "LETTER", "TIME", "REDRIVEN", "ORIGIN", "KEY", "REASON", "PAYLOAD",
                ];
                table(
                    w,
                    &headers,
                    rows,
                    &format!("no dead letters in {}", list.topic),
                )?;
                if list.total > 0 {
                    writeln!(
                        w,
                        "{} of {} dead letters shown ({} redriven); --json shows payloads in full",
                        list.letters.len(),
                        list.total,
                        list.redriven
                    )?;
                }
                Ok(())
            })
        }
        DlqCommand::Redrive { all, offsets } => {
            let selection = Selection::parse(all, &offsets)?;
            let report = redrive::redrive(kafka, selection).await?;
            out.print(&report, |w| {
                if report.redriven.is_empty() {
                    writeln!(
                        w,
                        "nothing to redrive: every dead letter was redriven already"
                    )?;
                }
                for r in &report.redriven {
                    writeln!(
                        w,
                        "redrove {}:{} to {}:{}:{}",
                        r.partition, r.offset, r.topic, r.topic_partition, r.topic_offset
                    )?;
                }
                Ok(())
            })
        }
    }
}
