//! The access log's line written by hand: the same text and JSON shapes as
//! `tracing`'s formatter (`logging.rs`) for one `INFO` event, built in a
//! reused per-thread buffer and handed straight to the log writer thread.
//!
//! The access line is written once per request, and through `tracing` it
//! cost about a sixth of a request's user-space work (benches/load,
//! instructions.sh): every field went through a `dyn Visit`, a `Debug`
//! formatter and the `Option` checks of a general-purpose layout, and the
//! timestamp was formatted from scratch. Here the date and time to the
//! second are formatted once per second per thread and the fields are
//! written in place. Every other log line still goes through `tracing`,
//! and so does the access line when the fast writer is not installed
//! (colours for a terminal, a test's own subscriber): [`write_info`] says
//! so by returning `false`.
//!
//! A log line's timestamp is the wall clock, as `tracing`'s is: paused-time
//! tests have nothing to control here.
#![allow(clippy::disallowed_types)]

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_appender::non_blocking::NonBlocking;

use crate::config::LogFormat;

/// The log writer and the format, set once by `logging::init`.
static WRITER: OnceLock<(NonBlocking, LogFormat)> = OnceLock::new();

/// Installs `writer` for [`write_info`]; a second call keeps the first.
pub(crate) fn install(writer: NonBlocking, format: LogFormat) {
    let _ = WRITER.set((writer, format));
}

/// Per thread: the writer's sender (cloned once, not per line), the line
/// being built, and the timestamp's date and time to the second.
struct Local {
    writer: NonBlocking,
    json: bool,
    line: Vec<u8>,
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS` of `second`.
    date_time: [u8; 19],
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Writes one `INFO` line of `target` with `message` and the fields that
/// `fields` adds, in the configured format, and returns `true`; `false`
/// (and nothing written) when no writer is installed. The caller checks
/// first that the level filter lets the line through.
pub(crate) fn write_info(
    target: &str,
    message: &str,
    fields: impl FnOnce(&mut Fields<'_>),
) -> bool {
    let Some((writer, format)) = WRITER.get() else {
        return false;
    };
    LOCAL.with(|local| {
        let mut local = local.borrow_mut();
        let local = local.get_or_insert_with(|| Local {
            writer: writer.clone(),
            json: *format == LogFormat::Json,
            line: Vec::with_capacity(512),
            second: u64::MAX,
            date_time: [0; 19],
        });
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        if now.as_secs() != local.second {
            local.second = now.as_secs();
            local.date_time = date_time(local.second);
        }
        local.line.clear();
        let at = Timestamp {
            date_time: &local.date_time,
            micros: now.subsec_micros(),
        };
        render(&mut local.line, local.json, at, target, message, fields);
        // The writer is lossy: a full queue drops the line and counts it.
        let _ = local.writer.write_all(&local.line);
    });
    true
}

/// When a line was written: the date and time to the second, and the
/// microseconds.
struct Timestamp<'a> {
    date_time: &'a [u8; 19],
    micros: u32,
}

/// The whole line, newline included, appended to `line`.
fn render(
    line: &mut Vec<u8>,
    json: bool,
    at: Timestamp<'_>,
    target: &str,
    message: &str,
    fields: impl FnOnce(&mut Fields<'_>),
) {
    if json {
        line.extend_from_slice(b"{\"timestamp\":\"");
    }
    line.extend_from_slice(at.date_time);
    line.push(b'.');
    let mut micros = [b'0'; 6];
    let mut rest = at.micros;
    for digit in micros.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    line.extend_from_slice(&micros);
    line.push(b'Z');
    if json {
        line.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":");
        json_str(line, message);
    } else {
        line.extend_from_slice(b"  INFO ");
        line.extend_from_slice(target.as_bytes());
        line.extend_from_slice(b": ");
        line.extend_from_slice(message.as_bytes());
    }
    fields(&mut Fields { line, json });
    if json {
        line.extend_from_slice(b",\"target\":");
        json_str(line, target);
        line.push(b'}');
    }
    line.push(b'\n');
}

/// The line `write_info` would write at the Unix epoch, for tests that
/// hold it against `tracing`'s formatter.
#[cfg(test)]
pub(crate) fn rendered(
    json: bool,
    target: &str,
    message: &str,
    fields: impl FnOnce(&mut Fields<'_>),
) -> String {
    let mut line = Vec::new();
    let at = Timestamp {
        date_time: &date_time(0),
        micros: 0,
    };
    render(&mut line, json, at, target, message, fields);
    String::from_utf8(line).expect("a log line is UTF-8")
}

/// A line's fields, in the order they are added. Each method writes what
/// `tracing`'s formatter writes for the same value.
pub(crate) struct Fields<'a> {
    line: &'a mut Vec<u8>,
    json: bool,
}

impl Fields<'_> {
    /// A string shown as is in text (`path=/a`, as `display(..)` does), a
    /// string in JSON.
    pub(crate) fn bare(&mut self, name: &str, value: &str) {
        self.name(name);
        if self.json {
            json_str(self.line, value);
        } else {
            self.line.extend_from_slice(value.as_bytes());
        }
    }

    /// A string quoted and escaped as `Debug` does in text
    /// (`origin="proxy"`), a string in JSON.
    pub(crate) fn str(&mut self, name: &str, value: &str) {
        self.name(name);
        if self.json {
            json_str(self.line, value);
        } else if plain_ascii(value) {
            self.line.push(b'"');
            self.line.extend_from_slice(value.as_bytes());
            self.line.push(b'"');
        } else {
            let _ = write!(self.line, "{value:?}");
        }
    }

    /// An unsigned integer, as both formats show it.
    pub(crate) fn uint(&mut self, name: &str, value: u64) {
        self.name(name);
        self.line
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    /// `true` or `false`, as both formats show it.
    pub(crate) fn bool(&mut self, name: &str, value: bool) {
        self.name(name);
        self.line
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    /// A duration in milliseconds to the microsecond, as `tracing` shows
    /// the `f64` `micros / 1000.0`: the shortest decimal that reads back as
    /// that number, which for up to 15 digits is the exact one, trailing
    /// zeros dropped but one (`5001.0`, `1.21`, `0.001`).
    pub(crate) fn millis(&mut self, name: &str, duration: Duration) {
        self.name(name);
        let micros = duration.as_micros().min(MAX_EXACT_MICROS) as u64;
        let mut digits = itoa::Buffer::new();
        self.line
            .extend_from_slice(digits.format(micros / 1000).as_bytes());
        self.line.push(b'.');
        let mut fraction = micros % 1000;
        if fraction == 0 {
            self.line.push(b'0');
            return;
        }
        let mut width = 3;
        while fraction.is_multiple_of(10) {
            fraction /= 10;
            width -= 1;
        }
        let padded = format_args!("{fraction:0width$}");
        let _ = self.line.write_fmt(padded);
    }

    /// A socket address, as `Display` shows it: unquoted in text, a string
    /// in JSON.
    pub(crate) fn addr(&mut self, name: &str, addr: SocketAddr) {
        self.name(name);
        if self.json {
            self.line.push(b'"');
        }
        match addr {
            SocketAddr::V4(v4) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        self.line.push(b'.');
                    }
                    self.line.extend_from_slice(digits.format(octet).as_bytes());
                }
                self.line.push(b':');
                self.line
                    .extend_from_slice(digits.format(v4.port()).as_bytes());
            }
            SocketAddr::V6(v6) => {
                let _ = write!(self.line, "{v6}");
            }
        }
        if self.json {
            self.line.push(b'"');
        }
    }

    fn name(&mut self, name: &str) {
        if self.json {
            self.line.push(b',');
            json_str(self.line, name);
            self.line.push(b':');
        } else {
            self.line.push(b' ');
            self.line.extend_from_slice(name.as_bytes());
            self.line.push(b'=');
        }
    }
}

/// Durations from here on (31 years) would need more than the 15 digits an
/// `f64` holds exactly; they are shown as this.
const MAX_EXACT_MICROS: u128 = 999_999_999_999_999;

/// Printable ASCII other than `"` and `\\`: the same quoted in `Debug`, in
/// JSON and as is.
fn plain_ascii(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
}

/// `value` as a JSON string, quoted and escaped.
fn json_str(line: &mut Vec<u8>, value: &str) {
    if plain_ascii(value) {
        line.push(b'"');
        line.extend_from_slice(value.as_bytes());
        line.push(b'"');
    } else {
        let _ = serde_json::to_writer(line, value);
    }
}

/// `YYYY-MM-DDTHH:MM:SS` (UTC) of `secs` since the Unix epoch, as
/// `humantime` writes RFC 3339 (less its `Z`, which follows the
/// microseconds).
fn date_time(secs: u64) -> [u8; 19] {
    let shown = humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs));
    let mut out = [0u8; 19];
    out.copy_from_slice(&shown.to_string().as_bytes()[..19]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_are_shown_as_tracing_shows_the_f64() {
        let mut micros = 0u64;
        while micros < 100_000_000_000 {
            let mut line = Vec::new();
            Fields {
                line: &mut line,
                json: false,
            }
            .millis("d", Duration::from_micros(micros));
            let expected = format!(" d={:?}", micros as f64 / 1000.0);
            assert_eq!(String::from_utf8(line).unwrap(), expected, "{micros}");
            micros = micros * 3 / 2 + 1 + micros % 7;
        }
    }

    #[test]
    fn addresses_are_shown_as_display_shows_them() {
        for addr in [
            "0.0.0.0:0",
            "127.0.0.1:53650",
            "255.255.255.255:65535",
            "[::1]:80",
            "[2001:db8::7]:4431",
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            for json in [false, true] {
                let mut line = Vec::new();
                Fields {
                    line: &mut line,
                    json,
                }
                .addr("a", addr);
                let expected = if json {
                    format!(",\"a\":\"{addr}\"")
                } else {
                    format!(" a={addr}")
                };
                assert_eq!(String::from_utf8(line).unwrap(), expected);
            }
        }
    }

    #[test]
    fn timestamps_are_rfc3339_to_the_microsecond() {
        for (secs, micros) in [
            (0, 0),
            (951_782_400, 7),
            (1_764_806_399, 999_999),
            (13_000_000_000, 120),
        ] {
            let at = UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros);
            let mut line = Vec::new();
            let date_time = date_time(secs);
            let stamp = Timestamp {
                date_time: &date_time,
                micros: micros as u32,
            };
            render(&mut line, false, stamp, "t", "m", |_| {});
            let line = String::from_utf8(line).unwrap();
            let expected = humantime::format_rfc3339_micros(at).to_string();
            assert_eq!(&line[..expected.len()], expected, "{secs}");
        }
    }
}
