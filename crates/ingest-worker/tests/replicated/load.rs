//! A steady HTTP load of events and contacts through the gateway, recording every answer:
//! when each request was sent and answered, its status, and which items it carried and
//! which of them were answered `success`.
//!
//! Each task alternates an events batch (20 new events) and a contacts batch (5 new
//! users, and an update of the 5 users of its previous contacts batch), so that the
//! checks cover loss, duplication and the order of one user's writes.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ingest_testkit::stream_url;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::task::JoinHandle;

const EVENTS_PER_BATCH: usize = 20;
const NEW_USERS_PER_BATCH: usize = 5;

/// One request and its answer.
pub struct Exchange {
    pub sent: Instant,
    pub done: Instant,
    /// The HTTP status, or 0 when no answer arrived (connection error, client timeout).
    pub status: u16,
    /// Events (id, value of parameter `n`) and contacts (user id, value of attribute
    /// `n`) this request carried, each with whether it was answered `success`.
    pub events: Vec<(String, i64, bool)>,
    pub contacts: Vec<(String, i64, bool)>,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Exchange>>>,
}

impl Load {
    /// Starts `tasks` request loops against the gateway at `base_url`, each pausing
    /// `pause` between requests.
    pub fn start(
        base_url: &str,
        project: &str,
        token: &str,
        tasks: usize,
        pause: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let tasks = (0..tasks)
            .map(|task| {
                let events_url = stream_url(base_url, project, "web", "events");
                let contacts_url = stream_url(base_url, project, "web", "contacts");
                let (client, token, stop) = (client.clone(), token.to_owned(), stop.clone());
                tokio::spawn(async move {
                    let mut exchanges = Vec::new();
                    let mut previous_users: Vec<String> = Vec::new();
                    let mut seq = 0i64;
                    while !stop.load(Ordering::Relaxed) {
                        seq += 1;
                        let (url, items, kinds) = if seq % 2 == 1 {
                            let events: Vec<(String, i64)> = (0..EVENTS_PER_BATCH)
                                .map(|i| (format!("e-{task}-{seq}-{i}"), seq * 100 + i as i64))
                                .collect();
                            let body: Vec<Value> = events
                                .iter()
                                .map(|(id, n)| {
                                    json!({"_user_id": format!("u-{task}-{}", n % 7), "_event_id": id,
                                           "_event_type": "drill", "_event_parameters": {"n": n}})
                                })
                                .collect();
                            (&events_url, events, body)
                        } else {
                            let mut users: Vec<(String, i64)> = previous_users
                                .iter()
                                .map(|u| (u.clone(), seq * 100))
                                .collect();
                            let new: Vec<String> = (0..NEW_USERS_PER_BATCH)
                                .map(|i| format!("c-{task}-{seq}-{i}"))
                                .collect();
                            users.extend(new.iter().map(|u| (u.clone(), seq * 100 + 1)));
                            previous_users = new;
                            let body: Vec<Value> = users
                                .iter()
                                .map(|(u, n)| json!({"_user_id": u, "n": n}))
                                .collect();
                            (&contacts_url, users, body)
                        };
                        let sent = Instant::now();
                        let answer = client.post(url).bearer_auth(&token).json(&kinds).send().await;
                        let (status, outcomes) = match answer {
                            Ok(response) => {
                                let status = response.status().as_u16();
                                let body: Value = response.json().await.unwrap_or(Value::Null);
                                let outcomes: Vec<bool> = (0..items.len())
                                    .map(|i| {
                                        status == 202
                                            && body["entity"]["items"][i]["status"] == "success"
                                    })
                                    .collect();
                                (status, outcomes)
                            }
                            Err(_) => (0, vec![false; items.len()]),
                        };
                        let carried = items
                            .into_iter()
                            .zip(outcomes)
                            .map(|((id, n), ok)| (id, n, ok))
                            .collect();
                        let (events, contacts) = if seq % 2 == 1 {
                            (carried, Vec::new())
                        } else {
                            (Vec::new(), carried)
                        };
                        exchanges.push(Exchange {
                            sent,
                            done: Instant::now(),
                            status,
                            events,
                            contacts,
                        });
                        tokio::time::sleep(pause).await;
                    }
                    exchanges
                })
            })
            .collect();
        Self { stop, tasks }
    }

    pub async fn stop(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut exchanges = Vec::new();
        for task in self.tasks {
            exchanges.extend(task.await.expect("load task"));
        }
        exchanges.sort_by_key(|e| e.sent);
        Report { exchanges }
    }
}

pub struct Report {
    pub exchanges: Vec<Exchange>,
}

impl Report {
    /// Requests per status.
    pub fn statuses(&self) -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for e in &self.exchanges {
            *counts.entry(e.status).or_default() += 1;
        }
        counts
    }

    /// The exchanges for which `keep(sent, done)` holds.
    pub fn during(&self, keep: impl Fn(Instant, Instant) -> bool) -> Vec<&Exchange> {
        self.exchanges
            .iter()
            .filter(|e| keep(e.sent, e.done))
            .collect()
    }

    pub fn accepted_items(&self) -> usize {
        self.exchanges
            .iter()
            .flat_map(|e| e.events.iter().chain(&e.contacts))
            .filter(|(_, _, ok)| *ok)
            .count()
    }

    /// One line for the test's output: requests per status, items accepted.
    pub fn summary(&self) -> String {
        format!(
            "{} requests {:?}, {} items accepted",
            self.exchanges.len(),
            self.statuses(),
            self.accepted_items()
        )
    }

    /// Waits until the worker has stored every item answered `success`, then checks that
    /// each is stored exactly once and unchanged: every accepted event with its value and
    /// no event that was never sent; every contact whose last write was accepted with
    /// exactly that write's value, and no contact with a value that was never sent.
    pub async fn assert_stored_exactly_once(&self, pool: &PgPool, project: &str) {
        let mut sent_events: HashMap<&str, (i64, bool)> = HashMap::new();
        // Per user, the writes in the order they were sent.
        let mut sent_contacts: HashMap<&str, Vec<(i64, bool)>> = HashMap::new();
        for e in &self.exchanges {
            for (id, n, ok) in &e.events {
                sent_events.insert(id, (*n, *ok));
            }
            for (user, n, ok) in &e.contacts {
                sent_contacts.entry(user).or_default().push((*n, *ok));
            }
        }
        let accepted_events: Vec<String> = sent_events
            .iter()
            .filter(|(_, (_, ok))| *ok)
            .map(|(id, _)| id.to_string())
            .collect();
        let accepted_users: Vec<String> = sent_contacts
            .iter()
            .filter(|(_, writes)| writes.iter().any(|(_, ok)| *ok))
            .map(|(user, _)| user.to_string())
            .collect();
        assert!(!accepted_events.is_empty() && !accepted_users.is_empty());

        let want = (accepted_events.len() as i64, accepted_users.len() as i64);
        ingest_testkit::wait_for(
            "every accepted item in PostgreSQL",
            Duration::from_secs(180),
            || async {
                let have: (i64, i64) = sqlx::query_as(
                    "SELECT (SELECT count(*) FROM events WHERE project = $1 AND event_id = ANY($2)),
                            (SELECT count(*) FROM contacts WHERE project = $1 AND user_id = ANY($3))",
                )
                .bind(project)
                .bind(&accepted_events)
                .bind(&accepted_users)
                .fetch_one(pool)
                .await
                .unwrap();
                (have == want).then_some(())
            },
        )
        .await;
        // Let any straggling redelivery land before looking for doubles.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let events: Vec<(String, i64)> = sqlx::query_as(
            "SELECT event_id, (parameters->>'n')::bigint FROM events WHERE project = $1",
        )
        .bind(project)
        .fetch_all(pool)
        .await
        .unwrap();
        let mut seen = std::collections::HashSet::new();
        for (id, n) in &events {
            assert!(seen.insert(id.as_str()), "event {id} stored twice");
            let (sent_n, _) = sent_events
                .get(id.as_str())
                .unwrap_or_else(|| panic!("stored event {id} was never sent"));
            assert_eq!(n, sent_n, "event {id} stored changed");
        }
        let contacts: Vec<(String, Option<i64>)> = sqlx::query_as(
            "SELECT user_id, (attributes->>'n')::bigint FROM contacts WHERE project = $1",
        )
        .bind(project)
        .fetch_all(pool)
        .await
        .unwrap();
        for (user, n) in &contacts {
            let writes = sent_contacts
                .get(user.as_str())
                .unwrap_or_else(|| panic!("stored contact {user} was never sent"));
            let n = n.unwrap_or_else(|| panic!("contact {user} lost its attribute"));
            let (last_n, last_ok) = *writes.last().unwrap();
            if last_ok {
                assert_eq!(
                    n, last_n,
                    "contact {user}: the last, accepted write is not what is stored"
                );
            } else {
                assert!(
                    writes.iter().any(|(w, _)| *w == n),
                    "contact {user} holds {n}, never sent"
                );
            }
        }
    }
}
