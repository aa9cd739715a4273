//! Delivering one batch: attempts, retries with backoff until the deadline, and what is
//! still undelivered when `close()` times out (docs/clients.md, "Retries"). Reading the
//! answer per item is `answer.rs`.

use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::answer::{answered, refused, status_message};
use crate::outcome::Status;
use crate::pending::Pending;
use crate::retry::{classify, full_jitter, server_wait, Class};
use crate::shared::{Core, Endpoint};
use crate::transport::{Method, Request};

/// One request's worth of items.
pub(crate) struct Batch {
    pub endpoint: Endpoint,
    pub url: String,
    /// The JSON array (before gzip); `None` for a delete.
    pub body: Option<Bytes>,
    pub items: Vec<Pending>,
}

/// The contact lane: contact batches and deletes, one request at a time, in order. A
/// batch being retried holds back the ones after it.
pub(crate) async fn contact_lane(core: Arc<Core>, mut queue: mpsc::UnboundedReceiver<Batch>) {
    while let Some(batch) = queue.recv().await {
        deliver(core.clone(), batch).await;
    }
}

/// What the last failed attempt met.
struct LastError {
    message: String,
    http_status: Option<u16>,
}

/// Sends `batch` until every item has an outcome.
pub(crate) async fn deliver(core: Arc<Core>, batch: Batch) {
    let Batch {
        endpoint,
        url,
        body,
        items,
    } = batch;
    let config = &core.config;
    let gzip = config.gzip && body.is_some();
    let body = match body {
        Some(body) if gzip => Some(compress(&body)),
        body => body,
    };
    let request = Request {
        method: match endpoint {
            Endpoint::ContactsDelete => Method::Delete,
            Endpoint::Events | Endpoint::Contacts => Method::Post,
        },
        url,
        body,
        gzip,
    };
    let cancel = core.cancel.clone();
    let mut attempts = 0u32;
    let mut first_attempt: Option<Instant> = None;
    let mut last: Option<LastError> = None;
    loop {
        let permit = tokio::select! {
            biased;
            _ = cancel.cancelled() => return abandon(&core, endpoint, items, attempts, last),
            permit = core.admit(endpoint) => permit,
        };
        let started = Instant::now();
        let first = *first_attempt.get_or_insert(started);
        attempts += 1;
        core.counters.attempt(items.len(), attempts > 1);
        let answer = tokio::select! {
            biased;
            _ = cancel.cancelled() => return abandon(&core, endpoint, items, attempts, last),
            answer = tokio::time::timeout(config.request_timeout, core.transport.send(request.clone())) => answer,
        };
        drop(permit);
        let (error, least_wait) = match answer {
            Err(_) => (
                LastError {
                    message: format!("no answer within {:?}", config.request_timeout),
                    http_status: None,
                },
                None,
            ),
            Ok(Err(err)) => (
                LastError {
                    message: err.0,
                    http_status: None,
                },
                None,
            ),
            Ok(Ok(response)) => match classify(response.status) {
                Class::BatchAnswer => return answered(config.sync, items, &response, attempts),
                Class::Refused => return refused(endpoint, items, &response, attempts),
                Class::Retry => (
                    LastError {
                        message: status_message(&response),
                        http_status: Some(response.status),
                    },
                    server_wait(
                        response.status,
                        response.retry_after.as_deref(),
                        response.ratelimit_reset.as_deref(),
                        SystemTime::now(),
                    ),
                ),
            },
        };
        // Retry `attempts` (1, 2, ...) after the full-jitter backoff, at least what the
        // answer asked for, and not before the endpoint's pause is over.
        let now = Instant::now();
        let backoff = full_jitter(
            attempts,
            config.retry_initial_backoff,
            config.retry_max_backoff,
            &mut rand::rng(),
        );
        let mut sleep = backoff.max(least_wait.unwrap_or_default());
        if error.http_status == Some(429) {
            core.pause(endpoint, now + sleep);
        }
        if let Some(until) = core.paused_until(endpoint) {
            sleep = sleep.max(until.saturating_duration_since(now));
        }
        if now + sleep > first + config.retry_deadline {
            tracing::warn!(
                ?endpoint,
                items = items.len(),
                attempts,
                http_status = error.http_status,
                error = %error.message,
                "giving up a batch: its next retry would start after retry_deadline"
            );
            let LastError {
                message,
                http_status,
            } = error;
            for item in items {
                item.finish(Status::Failed {
                    message: message.clone(),
                    http_status,
                    attempts,
                });
            }
            return;
        }
        tracing::info!(
            ?endpoint,
            items = items.len(),
            attempt = attempts,
            http_status = error.http_status,
            error = %error.message,
            wait_ms = sleep.as_millis() as u64,
            "retrying a batch"
        );
        last = Some(error);
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return abandon(&core, endpoint, items, attempts, last),
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// `close()` timed out: every item still here is `failed`.
fn abandon(
    core: &Core,
    endpoint: Endpoint,
    items: Vec<Pending>,
    attempts: u32,
    last: Option<LastError>,
) {
    let http_status = last.as_ref().and_then(|l| l.http_status);
    tracing::warn!(
        ?endpoint,
        items = items.len(),
        attempts,
        "closed before delivery: reporting the batch failed"
    );
    core.abandoned
        .fetch_add(items.len() as u64, Ordering::Relaxed);
    for item in items {
        item.finish(Status::Failed {
            message: "closed before delivery".into(),
            http_status,
            attempts,
        });
    }
}

fn compress(body: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .map(Bytes::from)
        .expect("gzip into memory cannot fail")
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;
    use tokio::time::Instant;

    use crate::outcome::Status;
    use crate::testing::{client, client_with_log, contact, event, ids};
    use crate::transport::fake::{self, Fake};
    use crate::transport::{Request, Response, TransportError};

    fn with_headers(status: u16, retry_after: Option<&str>, reset: Option<String>) -> Response {
        Response {
            status,
            retry_after: retry_after.map(str::to_owned),
            ratelimit_reset: reset,
            ..Response::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retried_statuses_are_sent_again_with_the_same_body_until_accepted() {
        let fake = Fake::new(|request: &Request, n| {
            let status = [503, 500, 502, 504, 408, 429];
            fake::now(match status.get(n) {
                Some(&status) => fake::status(status, json!({"message": "busy"})),
                None => fake::all_accepted(request, 202),
            })
        });
        let client = client(&fake, |b| b);
        let first = client
            .track(json!({"_user_id": "u", "_event_type": "t"}))
            .await;
        drop(client.track(event(2)).await);
        client.flush().await;
        let outcome = first.await;
        assert_eq!(
            outcome.status,
            Status::Accepted {
                committed: false,
                attempts: 7
            }
        );
        let seen = fake.seen();
        assert_eq!(seen.len(), 7);
        assert!(
            seen.iter().all(|s| s.body == seen[0].body),
            "a retry sends the same body"
        );
        // The generated id is in the body and in the outcome.
        assert_eq!(
            ids(&seen[0].body, "_event_id")[0],
            outcome.item["_event_id"]
        );
        let stats = client.stats();
        assert_eq!((stats.requests, stats.retries, stats.sent), (7, 6, 14));
        assert_eq!((stats.accepted, stats.failed, stats.queued), (2, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn network_errors_and_attempt_timeouts_are_retried() {
        let fake = Fake::new(|request: &Request, n| match n {
            0 => fake::now(Err(TransportError("connection reset".into()))),
            1 => fake::never(),
            _ => fake::now(fake::all_accepted(request, 202)),
        });
        let client = client(&fake, |b| b.request_timeout(Duration::from_secs(2)));
        let start = Instant::now();
        let outcome = client.track(event(1)).await.await;
        assert_eq!(outcome.attempts(), 3);
        assert!(outcome.is_accepted());
        let seen = fake.seen();
        // The timed-out attempt took the request timeout, then a backoff of at most 0.4 s.
        assert!(seen[2].at - seen[1].at >= Duration::from_secs(2));
        assert!(seen[2].at - seen[1].at <= Duration::from_millis(2400));
        assert!(start.elapsed() < Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_waits_at_least_retry_after() {
        let fake = Fake::new(|request: &Request, n| {
            fake::now(if n == 0 {
                Ok(with_headers(503, Some("3"), None))
            } else {
                fake::all_accepted(request, 202)
            })
        });
        let client = client(&fake, |b| b.max_batch_items(1));
        assert!(client.track(event(1)).await.await.is_accepted());
        let seen = fake.seen();
        // The backoff (at most 0.2 s) is below Retry-After: Retry-After it is.
        assert_eq!(seen[1].at - seen[0].at, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_waits_until_x_ratelimit_reset_when_later_than_retry_after() {
        let fake = Fake::new(|request: &Request, n| {
            fake::now(if n == 0 {
                let now = UNIX_EPOCH.elapsed().unwrap().as_secs();
                Ok(with_headers(429, Some("1"), Some((now + 20).to_string())))
            } else {
                fake::all_accepted(request, 202)
            })
        });
        let client = client(&fake, |b| b.max_batch_items(1));
        assert!(client.track(event(1)).await.await.is_accepted());
        let seen = fake.seen();
        let waited = seen[1].at - seen[0].at;
        // Until the reset, 19–20 s ahead depending on where in its second the wall clock was.
        assert!(
            waited >= Duration::from_secs(19) && waited <= Duration::from_secs(20),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_the_whole_endpoint_and_only_that_endpoint() {
        let fake = Fake::new(|request: &Request, n| {
            fake::now(if n == 0 {
                Ok(with_headers(429, Some("10"), None))
            } else {
                fake::all_accepted(request, 202)
            })
        });
        let client = client(&fake, |b| b.max_batch_items(1));
        let start = Instant::now();
        let first = client.track(event(1)).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Another event batch, sent while the endpoint is paused: held until the wait is over.
        let second = client.track(event(2)).await;
        // A contact write: another endpoint, not paused.
        let upsert = client.upsert(contact("a", 1)).await;
        assert!(upsert.await.is_accepted());
        assert!(second.await.is_accepted());
        assert!(first.await.is_accepted());
        let seen = fake.seen();
        let at = |id: &str| {
            seen.iter()
                .filter(|s| ids(&s.body, "_event_id").first().map(String::as_str) == Some(id))
                .map(|s| s.at - start)
                .collect::<Vec<_>>()
        };
        assert_eq!(at("e1")[0], Duration::ZERO);
        assert!(at("e1")[1] >= Duration::from_secs(10), "{:?}", at("e1"));
        assert_eq!(at("e2").len(), 1, "e2 was never sent into the pause");
        assert!(at("e2")[0] >= Duration::from_secs(10), "{:?}", at("e2"));
        let contact_at = seen
            .iter()
            .find(|s| s.url.ends_with("/contacts"))
            .unwrap()
            .at;
        assert_eq!(contact_at - start, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_given_up_when_its_next_retry_would_pass_retry_deadline() {
        let fake = Fake::new(|_: &Request, _| {
            fake::now(fake::status(503, json!({"message": "the broker is away"})))
        });
        let (client, log) = client_with_log(&fake, |b| {
            b.retry_initial_backoff(Duration::from_secs(1))
                .retry_max_backoff(Duration::from_secs(4))
                .retry_deadline(Duration::from_secs(20))
                .max_batch_items(2)
        });
        let start = Instant::now();
        let first = client.track(event(1)).await;
        let second = client.track(event(2)).await;
        let (first, second) = (first.await, second.await);
        let Status::Failed {
            message,
            http_status,
            attempts,
        } = &first.status
        else {
            panic!("{first:?}");
        };
        assert_eq!(message, "HTTP 503 Service Unavailable: the broker is away");
        assert_eq!(*http_status, Some(503));
        let seen = fake.seen();
        assert_eq!(*attempts as usize, seen.len());
        assert!(seen.len() >= 5, "retried {} times", seen.len() - 1);
        assert!(seen.last().unwrap().at - start <= Duration::from_secs(20));
        assert!(start.elapsed() <= Duration::from_secs(20));
        assert_eq!(second.status, first.status);
        assert_eq!(log.lock().unwrap().len(), 2);
        let stats = client.stats();
        assert_eq!((stats.failed, stats.accepted, stats.queued), (2, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn gzip_bodies_decompress_to_the_same_json() {
        let plain = crate::testing::accepting();
        let zipped = crate::testing::accepting();
        for (fake, gzip) in [(&plain, false), (&zipped, true)] {
            let client = client(fake, |b| b.gzip(gzip));
            for n in 0..50 {
                drop(client.track(event(n)).await);
            }
            client.flush().await;
            assert_eq!(client.stats().accepted, 50);
        }
        let (plain, zipped) = (&plain.seen()[0], &zipped.seen()[0]);
        assert!(!plain.gzip && zipped.gzip);
        assert_eq!(plain.body, zipped.body);
        assert!(
            zipped.raw_len * 3 < plain.raw_len,
            "{} vs {}",
            zipped.raw_len,
            plain.raw_len
        );
    }
}
