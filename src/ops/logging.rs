//! Log output: `tracing` with a human format by default or JSON lines
//! (`log.format = "json"`), level from `RUST_LOG` (default `info`, with the
//! `h2` library at `error`: see [`DEFAULT_FILTER`]).

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; call once, early in `main`, and keep
/// the returned guard until the end: dropping it writes out what is still
/// buffered.
pub fn init(format: LogFormat) -> LogGuard {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let writer = WRITER.get_or_init(BufferedStderr::start).clone();
    // Colours only for a person at a terminal, never into a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
    // A second init (tests, embedding) keeps the first subscriber.
    let _ = result;
    LogGuard(writer)
}

/// Without `RUST_LOG`: `info`, but the `h2` library only from `error`. h2
/// writes a `warn` line for every connection it cuts for too many resets
/// (catalog 1.24/1.25), without the peer: a rapid-reset flood became
/// ~1,000 lines a second (benches/attacks.sh). The proxy's own line for
/// connections closed for premature resets stays. `RUST_LOG=info,h2=warn`
/// brings h2's lines back.
pub const DEFAULT_FILTER: &str = "info,h2=error";

static WRITER: std::sync::OnceLock<BufferedStderr> = std::sync::OnceLock::new();

/// Writes out the log lines buffered so far (before the process exits).
pub fn flush() {
    if let Some(writer) = WRITER.get() {
        writer.flush_out();
    }
}

/// How long a log line may wait in memory before it is written.
const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Past this many buffered bytes, the line that crosses it writes them out.
const FLUSH_BYTES: usize = 64 * 1024;

/// Standard error behind an in-memory buffer: a log line (one per request,
/// from the access log) costs a copy under an uncontended lock rather than
/// a `write(2)`. A background thread writes the buffer out every
/// [`FLUSH_INTERVAL`]; a full buffer is written at once by the line that
/// filled it; [`LogGuard`] writes out the rest at exit.
#[derive(Clone)]
struct BufferedStderr(Arc<Mutex<Vec<u8>>>);

impl BufferedStderr {
    fn start() -> BufferedStderr {
        let writer = BufferedStderr(Arc::new(Mutex::new(Vec::with_capacity(FLUSH_BYTES))));
        let flusher = writer.clone();
        let spawned = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || loop {
                // A plain thread outside the runtime, on the wall clock:
                // paused-time tests have nothing to control here.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(FLUSH_INTERVAL);
                flusher.flush_out();
            });
        if spawned.is_err() {
            // No thread: write every line at once instead.
            writer.lock().shrink_to(0);
        }
        writer
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn flush_out(&self) {
        let pending = {
            let mut buf = self.lock();
            if buf.is_empty() {
                return;
            }
            std::mem::replace(&mut *buf, Vec::with_capacity(FLUSH_BYTES))
        };
        let _ = std::io::stderr().lock().write_all(&pending);
    }
}

impl Write for BufferedStderr {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let full = {
            let mut buf = self.lock();
            buf.extend_from_slice(line);
            buf.len() >= buf.capacity().min(FLUSH_BYTES)
        };
        if full {
            self.flush_out();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.flush_out();
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedStderr {
    type Writer = BufferedStderr;
    fn make_writer(&'a self) -> BufferedStderr {
        self.clone()
    }
}

/// Writes out buffered log lines when dropped (at the end of `main`).
pub struct LogGuard(BufferedStderr);

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.0.flush_out();
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
