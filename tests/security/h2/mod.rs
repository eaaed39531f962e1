//! HTTP/2 abuse (RELIABILITY.md §1C) over h2c prior knowledge, written as
//! raw frames so that nothing a well-behaved client library
//! would refuse to send is out of reach: pseudo-header abuse, CONNECT,
//! rapid reset, CONTINUATION floods, HPACK bombs, and the limits the
//! server advertises. Each test ends with the global invariants.

use std::time::Duration;

use crate::support;
use crate::support::h2frames::*;
use crate::support::invariants::*;
use crate::support::*;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::net::TcpStream;

mod floods;
mod fuzz;
mod resets;
mod streams;

/// An HPACK integer with an `n`-bit prefix whose high bits are `first`.
fn hpack_int(first: u8, n: u8, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

fn hpack_str(s: &[u8], out: &mut Vec<u8>) {
    hpack_int(0, 7, s.len(), out);
    out.extend_from_slice(s);
}

/// A literal field without indexing, with a literal name.
fn literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00];
    hpack_str(name.as_bytes(), &mut out);
    hpack_str(value, &mut out);
    out
}

/// A literal field *with* incremental indexing (enters the dynamic table).
fn indexed_literal(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x40];
    hpack_str(name.as_bytes(), &mut out);
    hpack_str(value, &mut out);
    out
}

fn block<V: AsRef<[u8]>>(fields: &[(&str, V)]) -> Vec<u8> {
    fields
        .iter()
        .flat_map(|(n, v)| literal(n, v.as_ref()))
        .collect()
}

fn get_fields(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "GET".into()),
        (":scheme", "http".into()),
        (":authority", "proxy".into()),
        (":path", path.into()),
    ]
}

/// What the server sent back on one connection.
#[derive(Debug, Default)]
struct Seen {
    /// `(stream, error code)` of every RST_STREAM.
    resets: Vec<(u32, u32)>,
    /// Streams the server answered with HEADERS.
    answered: Vec<u32>,
    /// The GOAWAY error code, if one came.
    goaway: Option<u32>,
    /// The server's SETTINGS as `(id, value)`.
    settings: Vec<(u16, u32)>,
    /// PING acknowledgements received.
    pings: usize,
    closed: bool,
}

impl Seen {
    /// The streams the server answered or reset.
    fn streams_done(&self) -> impl Iterator<Item = u32> + '_ {
        let reset = self.resets.iter().map(|(id, _)| *id);
        self.answered.iter().copied().chain(reset)
    }

    /// The server refused stream 1 one way or another (GOAWAY, close,
    /// RST_STREAM) or answered it itself.
    fn dealt_with_stream_1(&self) -> bool {
        self.goaway.is_some()
            || self.closed
            || !self.resets.is_empty()
            || self.answered.contains(&1)
    }
}

struct Conn {
    stream: TcpStream,
}

impl Conn {
    async fn open(h: &Harness) -> Conn {
        let mut stream = TcpStream::connect(h.proxy).await.unwrap();
        stream.write_all(PREFACE).await.unwrap();
        stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
        stream
            .write_all(&frame(SETTINGS, 0x1, 0, &[]))
            .await
            .unwrap();
        Conn { stream }
    }

    /// Writes, ignoring errors: a server that closed mid-flood is an answer.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    async fn headers(&mut self, stream: u32, flags: u8, block: &[u8]) -> bool {
        self.send(&frame(HEADERS, flags, stream, block)).await
    }

    /// Reads frames until the server closes, sends GOAWAY, or `limit`
    /// passes, or `done` says enough was seen.
    async fn read(&mut self, limit: Duration, done: impl Fn(&Seen) -> bool) -> Seen {
        read_frames(&mut self.stream, limit, done).await
    }

    /// Reads until the first answer or reset (5 s at most).
    async fn answer(&mut self) -> Seen {
        self.read(Duration::from_secs(5), |s| {
            !s.resets.is_empty() || !s.answered.is_empty()
        })
        .await
    }
}

/// [`Conn::read`] on any reader (the read half of a split connection).
async fn read_frames<R: AsyncRead + Unpin>(
    stream: &mut R,
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) -> Seen {
    let mut seen = Seen::default();
    let reading = async {
        loop {
            let Some(f) = read_frame(stream).await else {
                seen.closed = true;
                return;
            };
            let code = |at: usize| {
                f.payload
                    .get(at..at + 4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            };
            match f.kind {
                HEADERS => seen.answered.push(f.stream),
                RST_STREAM => seen.resets.push((f.stream, code(0).unwrap_or(0))),
                GOAWAY => seen.goaway = code(4),
                PING if f.flags & 0x1 != 0 => seen.pings += 1,
                SETTINGS if f.flags & 0x1 == 0 => {
                    for s in f.payload.chunks_exact(6) {
                        let id = u16::from_be_bytes([s[0], s[1]]);
                        let value = u32::from_be_bytes([s[2], s[3], s[4], s[5]]);
                        seen.settings.push((id, value));
                    }
                }
                _ => {}
            }
            if seen.goaway.is_some() || done(&seen) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(limit, reading).await;
    seen
}

/// One request as raw frames on a fresh connection; what came back on it.
async fn exchange(h: &Harness, fields: &[(&str, String)]) -> Seen {
    let mut c = Conn::open(h).await;
    c.headers(1, END_STREAM | END_HEADERS, &block(fields)).await;
    c.answer().await
}
