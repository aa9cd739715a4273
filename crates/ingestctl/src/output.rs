//! Everything `ingestctl` prints on stdout goes through here: one JSON document with
//! `--json`, text otherwise, with the text's tables and its formats for times and sizes.
//!
//! A closed stdout is not an error. `ingestctl ... | head -1` or `| grep -q x` closes the
//! pipe as soon as the reader has what it wants; a write then fails with `BrokenPipe`
//! (Rust ignores SIGPIPE, so the process is not killed), and that failure becomes
//! [`Closed`], which `main` turns into a quiet, successful exit. Resetting SIGPIPE to its
//! default would end the process by the signal instead, but takes `unsafe` (denied in
//! this workspace) and makes the shell report status 141, which fails a pipeline under
//! `set -o pipefail` for a reader that only stopped early.

use std::io::{self, Write};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Text or JSON: every command prints exactly one of the two.
#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// `value` as pretty JSON with `--json`, else what `text` writes.
    pub fn print<T: Serialize>(
        self,
        value: &T,
        text: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> anyhow::Result<()> {
        if self.json {
            let json = serde_json::to_string_pretty(value)?;
            write(|w| writeln!(w, "{json}"))
        } else {
            write(text)
        }
    }
}

/// Stdout was closed by its reader: nothing more to say, and nothing failed.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed")]
pub struct Closed;

/// Runs `f` on the locked stdout and flushes it; a closed pipe is [`Closed`].
pub fn write(f: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    match f(&mut stdout).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(Closed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// Left-aligned columns separated by two spaces; `empty` when there are no rows.
pub fn table(
    w: &mut dyn Write,
    headers: &[&str],
    rows: Vec<Vec<String>>,
    empty: &str,
) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(w, "{empty}");
    }
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        writeln!(w, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

/// `2026-11-24 09:00:00 UTC`.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// [`time`], or `-` for none.
pub fn time_or_dash(t: Option<&DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}

/// A size in KiB, MiB or GiB.
pub fn bytes(n: i64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{} KiB", n / 1024),
    }
}

/// At most `max` characters, newlines escaped, with "..." when cut.
pub fn truncate(s: &str, max: usize) -> String {
    let s = s.replace('\n', "\\n");
    if s.chars().count() <= max {
        return s;
    }
    let cut: String = s.chars().take(max.saturating_sub(3)).collect();
    format!("{cut}...")
}
