//! Log output: `tracing` with a human format by default or JSON lines
//! (`log.format = "json"`), level from `RUST_LOG` (default `info`, with the
//! `h2` library at `error`: see [`DEFAULT_FILTER`]).

use std::io::{BufWriter, IsTerminal, Stderr, Write};
use std::sync::OnceLock;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines that may wait for the writer thread. A line costs the request
/// that logs it a copy into a channel, never a `write(2)`; the writer thread
/// writes whatever has queued up in one buffered batch.
const QUEUED_LINES: usize = 128_000;

/// The writer thread's pause after each batch (see [`PacedStderr`]).
const BATCH_INTERVAL: Duration = Duration::from_millis(50);

/// Lines dropped because the queue was full (stderr blocked for longer
/// than it takes to queue [`QUEUED_LINES`]), for `/metrics`.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Installs the global subscriber; call once, early in `main`, and keep
/// the returned guard until the end: dropping it writes out what is still
/// queued. A second call (tests, embedding) keeps the first subscriber.
pub fn init(format: LogFormat) -> LogGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Lossy: a full queue drops the line and counts it rather than block a
    // runtime thread (and with it every connection on that thread).
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("log-writer")
        .finish(PacedStderr(BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        )));
    let dropped = writer.error_counter();
    // Colours only for a person at a terminal, never into a log file.
    let ansi = std::io::stderr().is_terminal();
    let access_writer = (!ansi).then(|| writer.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    if installed.is_ok() {
        let _ = DROPPED.set(dropped);
        // Without colours, the access line is written by hand (log_line.rs)
        // in the same shape, into the same writer.
        if let Some(writer) = access_writer {
            super::log_line::install(writer, format);
        }
    }
    LogGuard {
        _writer: installed.is_ok().then_some(guard),
    }
}

/// Log lines dropped so far because the writer could not keep up.
pub fn dropped_lines() -> u64 {
    DROPPED.get().map_or(0, |c| c.dropped_lines() as u64)
}

/// Without `RUST_LOG`: `info`, but the `h2` library only from `error`. h2
/// writes a `warn` line for every connection it cuts for too many resets,
/// without the peer: a rapid-reset flood became ~1,000 lines a second
/// (benches/attacks.sh). The proxy's own line for connections closed for
/// premature resets stays. `RUST_LOG=info,h2=warn` brings h2's lines back.
pub const DEFAULT_FILTER: &str = "info,h2=error";

/// Standard error as the writer thread sees it: buffered, and after each
/// flush the thread pauses [`BATCH_INTERVAL`] before it takes more lines.
/// While it pauses, a line sent costs no wake-up of the thread (the channel
/// only wakes a thread that waits on it), so a busy proxy pays one
/// `write(2)` and one wake-up per batch instead of per line, as nginx's
/// `access_log … buffer= flush=` does. Measured with the criterion bench
/// `end_to_end`: without the pause, a wake-up per request cost more than
/// the write itself.
struct PacedStderr(BufWriter<Stderr>);

impl Write for PacedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let flushed = self.0.flush();
        // The writer thread is a plain thread on the wall clock, outside
        // the runtime: paused-time tests have nothing to control here.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(BATCH_INTERVAL);
        flushed
    }
}

/// Writes out the queued log lines when dropped (at the end of `main`).
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<WorkerGuard>,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogGuard")
    }
}

/// Lets a repeated log line through at most once per interval, counting
/// the ones it held back (for floods: refused connections, 410s…).
pub struct Throttle {
    interval: std::time::Duration,
    last: std::sync::Mutex<Option<tokio::time::Instant>>,
    suppressed: std::sync::atomic::AtomicU64,
}

impl Throttle {
    pub fn new(interval: std::time::Duration) -> Self {
        Throttle {
            interval,
            last: std::sync::Mutex::new(None),
            suppressed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(held back since the last line)` when a line may be logged now.
    pub fn ready(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = tokio::time::Instant::now();
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| now < at + self.interval) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn throttle_lets_one_line_through_per_interval() {
        let t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(t.ready(), Some(2));
        assert_eq!(t.ready(), None);
    }
}
