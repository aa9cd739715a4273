//! The options of docs/clients.md ("Configuration"), with their defaults and ranges.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::outcome::Outcome;
use crate::transport::{Http, Transport};

/// What `track`/`upsert`/`delete` do when `max_queue_items` items are held already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Wait for room (the enqueue call's future completes once the item is queued).
    #[default]
    Block,
    /// Report the new item `dropped` at once.
    Drop,
}

/// The `on_delivery` callback: called once per item with its outcome, from the client's
/// tasks. Keep it quick and non-blocking.
pub type DeliveryCallback = Arc<dyn Fn(&Outcome) + Send + Sync>;

/// The server's limit of items per request.
pub const MAX_BATCH_ITEMS: usize = 100;
/// The server's limit of a request body, in bytes.
pub const MAX_BATCH_BYTES: usize = 1_048_576;

#[derive(Clone)]
pub(crate) struct Config {
    pub base_url: String,
    pub project: String,
    pub datasource: String,
    pub token: String,
    pub max_batch_items: usize,
    pub max_batch_bytes: usize,
    pub flush_interval: Duration,
    pub max_queue_items: usize,
    pub overflow: Overflow,
    pub max_in_flight: usize,
    pub gzip: bool,
    pub sync: bool,
    pub request_timeout: Duration,
    pub retry_initial_backoff: Duration,
    pub retry_max_backoff: Duration,
    pub retry_deadline: Duration,
    pub on_delivery: Option<DeliveryCallback>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("base_url", &self.base_url)
            .field("project", &self.project)
            .field("datasource", &self.datasource)
            .field("token", &"<redacted>")
            .field("max_batch_items", &self.max_batch_items)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("max_queue_items", &self.max_queue_items)
            .field("overflow", &self.overflow)
            .field("max_in_flight", &self.max_in_flight)
            .field("gzip", &self.gzip)
            .field("sync", &self.sync)
            .field("request_timeout", &self.request_timeout)
            .field("retry_initial_backoff", &self.retry_initial_backoff)
            .field("retry_max_backoff", &self.retry_max_backoff)
            .field("retry_deadline", &self.retry_deadline)
            .field("on_delivery", &self.on_delivery.is_some())
            .finish()
    }
}

/// Builds a [`Client`](crate::Client); every option has the default of docs/clients.md.
///
/// ```no_run
/// # async fn example() -> Result<(), ingest_client::Error> {
/// use std::time::Duration;
/// let client = ingest_client::Client::builder("https://ingest.example.com", "shop", "web", "ingk_...")
///     .max_in_flight(8)
///     .flush_interval(Duration::from_millis(500))
///     .build()?;
/// # Ok(()) }
/// ```
pub struct ClientBuilder {
    config: Config,
    request_timeout: Option<Duration>,
    #[cfg(test)]
    transport: Option<Arc<dyn Transport>>,
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    pub(crate) fn new(
        base_url: impl Into<String>,
        project: impl Into<String>,
        datasource: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            config: Config {
                base_url: base_url.into(),
                project: project.into(),
                datasource: datasource.into(),
                token: token.into(),
                max_batch_items: MAX_BATCH_ITEMS,
                max_batch_bytes: MAX_BATCH_BYTES,
                flush_interval: Duration::from_secs(1),
                max_queue_items: 10_000,
                overflow: Overflow::Block,
                max_in_flight: 4,
                gzip: false,
                sync: false,
                request_timeout: Duration::from_secs(10),
                retry_initial_backoff: Duration::from_millis(200),
                retry_max_backoff: Duration::from_secs(30),
                retry_deadline: Duration::from_secs(120),
                on_delivery: None,
            },
            request_timeout: None,
            #[cfg(test)]
            transport: None,
        }
    }

    /// Items per request, 1–100 (default 100).
    pub fn max_batch_items(mut self, items: usize) -> Self {
        self.config.max_batch_items = items;
        self
    }

    /// Most bytes of a request body, measured on the encoded JSON before gzip; 64 B to
    /// 1 MiB (default 1 MiB). An item whose encoding alone does not fit is rejected.
    pub fn max_batch_bytes(mut self, bytes: usize) -> Self {
        self.config.max_batch_bytes = bytes;
        self
    }

    /// A partial batch is sent this long after its first item (default 1 s).
    pub fn flush_interval(mut self, interval: Duration) -> Self {
        self.config.flush_interval = interval;
        self
    }

    /// Items held in memory, enqueued and not yet reported (default 10,000).
    pub fn max_queue_items(mut self, items: usize) -> Self {
        self.config.max_queue_items = items;
        self
    }

    /// What an enqueue call does when the queue is full (default [`Overflow::Block`]).
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.config.overflow = overflow;
        self
    }

    /// Concurrent event requests (default 4). Contact writes go one request at a time.
    pub fn max_in_flight(mut self, requests: usize) -> Self {
        self.config.max_in_flight = requests;
        self
    }

    /// Gzip request bodies (`Content-Encoding: gzip`; default off).
    pub fn gzip(mut self, on: bool) -> Self {
        self.config.gzip = on;
        self
    }

    /// Add `?_sync` to the batch requests: the server answers once the items are in the
    /// database and outcomes say `committed: true` (default off). Raises the default
    /// `request_timeout` to 15 s.
    pub fn sync(mut self, on: bool) -> Self {
        self.config.sync = on;
        self
    }

    /// One HTTP attempt (default 10 s, 15 s with `sync`).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// The first retry's backoff cap (default 0.2 s).
    pub fn retry_initial_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_initial_backoff = backoff;
        self
    }

    /// The largest backoff cap (default 30 s).
    pub fn retry_max_backoff(mut self, backoff: Duration) -> Self {
        self.config.retry_max_backoff = backoff;
        self
    }

    /// A batch is given up (`failed`) when its next retry would start later than this
    /// after its first attempt (default 120 s).
    pub fn retry_deadline(mut self, deadline: Duration) -> Self {
        self.config.retry_deadline = deadline;
        self
    }

    /// Called with each item's outcome, from the client's tasks (keep it quick).
    pub fn on_delivery(mut self, callback: impl Fn(&Outcome) + Send + Sync + 'static) -> Self {
        self.config.on_delivery = Some(Arc::new(callback));
        self
    }

    #[cfg(test)]
    pub(crate) fn transport(mut self, transport: Arc<dyn Transport>) -> Self {
        self.transport = Some(transport);
        self
    }

    /// Checks the options and makes the transport: what `build()` (client.rs) starts the
    /// client with.
    pub(crate) fn finish(self) -> Result<(Config, Arc<dyn Transport>), Error> {
        let mut config = self.config;
        config.request_timeout = self.request_timeout.unwrap_or(if config.sync {
            Duration::from_secs(15)
        } else {
            Duration::from_secs(10)
        });
        check(&mut config)?;
        #[cfg(test)]
        let transport = self.transport;
        #[cfg(not(test))]
        let transport: Option<Arc<dyn Transport>> = None;
        let transport = match transport {
            Some(transport) => transport,
            None => Arc::new(Http::new(
                &config.token,
                config.request_timeout,
                config.max_in_flight + 1,
            )?),
        };
        Ok((config, transport))
    }
}

fn check(config: &mut Config) -> Result<(), Error> {
    let fail = |what: String| Err(Error::Config(what));
    let url = reqwest::Url::parse(&config.base_url)
        .map_err(|e| Error::Config(format!("base_url {:?}: {e}", config.base_url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return fail(format!(
            "base_url must be http or https, not {}",
            url.scheme()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return fail("base_url must not have a query or fragment".into());
    }
    config.base_url = config.base_url.trim_end_matches('/').to_owned();
    for (name, value) in [
        ("project", &config.project),
        ("datasource", &config.datasource),
        ("token", &config.token),
    ] {
        if value.is_empty() {
            return fail(format!("{name} must not be empty"));
        }
    }
    if !(1..=MAX_BATCH_ITEMS).contains(&config.max_batch_items) {
        return fail(format!(
            "max_batch_items must be 1–{MAX_BATCH_ITEMS}, not {}",
            config.max_batch_items
        ));
    }
    if !(64..=MAX_BATCH_BYTES).contains(&config.max_batch_bytes) {
        return fail(format!(
            "max_batch_bytes must be 64–{MAX_BATCH_BYTES}, not {}",
            config.max_batch_bytes
        ));
    }
    // The semaphore's limit.
    if !(1..=1 << 28).contains(&config.max_queue_items) {
        return fail(format!(
            "max_queue_items must be 1–{}, not {}",
            1 << 28,
            config.max_queue_items
        ));
    }
    if config.max_in_flight == 0 {
        return fail("max_in_flight must be at least 1".into());
    }
    for (name, value) in [
        ("flush_interval", config.flush_interval),
        ("request_timeout", config.request_timeout),
        ("retry_initial_backoff", config.retry_initial_backoff),
    ] {
        if value.is_zero() {
            return fail(format!("{name} must be above zero"));
        }
    }
    if config.retry_max_backoff < config.retry_initial_backoff {
        return fail("retry_max_backoff must be at least retry_initial_backoff".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder() -> ClientBuilder {
        ClientBuilder::new("http://127.0.0.1:1/", "p", "web", "ingk_x")
    }

    #[test]
    fn defaults_are_those_of_docs_clients_md() {
        let mut config = builder().config;
        check(&mut config).unwrap();
        assert_eq!(config.base_url, "http://127.0.0.1:1");
        assert_eq!(config.max_batch_items, 100);
        assert_eq!(config.max_batch_bytes, 1_048_576);
        assert_eq!(config.flush_interval, Duration::from_secs(1));
        assert_eq!(config.max_queue_items, 10_000);
        assert_eq!(config.overflow, Overflow::Block);
        assert_eq!(config.max_in_flight, 4);
        assert!(!config.gzip && !config.sync);
        assert_eq!(config.retry_initial_backoff, Duration::from_millis(200));
        assert_eq!(config.retry_max_backoff, Duration::from_secs(30));
        assert_eq!(config.retry_deadline, Duration::from_secs(120));
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let bad = [
            builder().max_batch_items(0),
            builder().max_batch_items(101),
            builder().max_batch_bytes(2_000_000),
            builder().max_queue_items(0),
            builder().max_in_flight(0),
            builder().flush_interval(Duration::ZERO),
            builder().retry_max_backoff(Duration::from_millis(10)),
            ClientBuilder::new("ftp://x", "p", "d", "t"),
            ClientBuilder::new("not a url", "p", "d", "t"),
            ClientBuilder::new("http://x?a=1", "p", "d", "t"),
            ClientBuilder::new("http://x", "", "d", "t"),
            ClientBuilder::new("http://x", "p", "d", ""),
        ];
        for builder in bad {
            let mut config = builder.config;
            assert!(
                matches!(check(&mut config), Err(Error::Config(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let text = format!("{:?}", builder());
        assert!(!text.contains("ingk_x"), "{text}");
    }
}
