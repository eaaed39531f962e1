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

/// RST_STREAM / GOAWAY error codes (RFC 9113 §7).
const PROTOCOL_ERROR: u32 = 0x1;
const REFUSED_STREAM: u32 = 0x7;
const ENHANCE_YOUR_CALM: u32 = 0xb;

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
    /// The `:status` of each answer, in the order they came
    /// ([`status_of`]; `None` when it could not be read).
    statuses: Vec<(u32, Option<u16>)>,
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

    /// The status the server answered `stream` with, if it answered it.
    fn status(&self, stream: u32) -> Option<u16> {
        self.statuses
            .iter()
            .find(|(id, _)| *id == stream)
            .and_then(|(_, status)| *status)
    }

    /// The error code of the server's RST_STREAM for `stream`, if any.
    fn reset(&self, stream: u32) -> Option<u32> {
        self.resets
            .iter()
            .find(|(id, _)| *id == stream)
            .map(|(_, code)| *code)
    }

    /// The server refused stream 1 without serving it: a RST_STREAM or
    /// GOAWAY with an error code, or an answer with one of `statuses`.
    /// Silence, a bare close, or any other answer (a 200) is not a refusal.
    fn refused_stream_1(&self, statuses: &[u16]) -> bool {
        let goaway_error = self.goaway.is_some_and(|code| code != 0);
        let answered = self.status(1).is_some_and(|s| statuses.contains(&s));
        self.reset(1).is_some() || goaway_error || answered
    }
}

/// SETTINGS_HEADER_TABLE_SIZE = 0: the server's encoder keeps no dynamic
/// table, so that every answer's `:status` can be read on its own.
const NO_HEADER_TABLE: [u8; 6] = [0, 1, 0, 0, 0, 0];

/// The `:status` of a response header block from an encoder that keeps no
/// dynamic table (RFC 7541): a static-table index (200, 204, 206, 304, 400,
/// 404, 500), or a literal with the `:status` name (index 8) whose value is
/// plain or Huffman-coded digits. Anything else is `None`.
fn status_of(block: &[u8]) -> Option<u16> {
    let mut rest = block;
    // Dynamic table size updates (`001xxxxx`) come first.
    while let Some(b) = rest.first().filter(|b| *b & 0xe0 == 0x20) {
        let more = *b & 0x1f == 0x1f;
        rest = &rest[1..];
        if more {
            let end = rest.iter().position(|b| b & 0x80 == 0)?;
            rest = &rest[end + 1..];
        }
    }
    let (&first, rest) = rest.split_first()?;
    if first & 0x80 != 0 {
        const STATIC: [u16; 7] = [200, 204, 206, 304, 400, 404, 500];
        return STATIC
            .get(usize::from(first & 0x7f).checked_sub(8)?)
            .copied();
    }
    // Literal with the static name `:status`: with incremental indexing
    // (0x48), without indexing (0x08) or never indexed (0x18).
    if ![0x48, 0x08, 0x18].contains(&first) {
        return None;
    }
    let (&head, rest) = rest.split_first()?;
    let value = rest.get(..usize::from(head & 0x7f))?;
    let digits = if head & 0x80 == 0 {
        value.to_vec()
    } else {
        huffman_digits(value)?
    };
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Decodes a Huffman string made only of digits (RFC 7541 Appendix B:
/// `0`-`2` are the 5-bit codes 0-2, `3`-`9` the 6-bit codes 25-31), ending in
/// up to 7 bits of EOS padding (all ones).
fn huffman_digits(bytes: &[u8]) -> Option<Vec<u8>> {
    let bits: Vec<u8> = bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
        .collect();
    let code = |at: usize, n: usize| -> Option<u8> {
        let slice = bits.get(at..at + n)?;
        Some(slice.iter().fold(0, |acc, b| (acc << 1) | b))
    };
    let (mut at, mut out) = (0, Vec::new());
    while bits.len() - at >= 5 {
        match (code(at, 5)?, code(at, 6)) {
            (c @ 0..=2, _) => {
                out.push(b'0' + c);
                at += 5;
            }
            (_, Some(c @ 25..=31)) => {
                out.push(b'3' + (c - 25));
                at += 6;
            }
            _ => break,
        }
    }
    let padding = &bits[at..];
    (padding.len() < 8 && padding.iter().all(|b| *b == 1)).then_some(out)
}

struct Conn {
    stream: TcpStream,
}

impl Conn {
    async fn open(h: &Harness) -> Conn {
        let mut stream = TcpStream::connect(h.proxy).await.unwrap();
        stream.write_all(PREFACE).await.unwrap();
        stream
            .write_all(&frame(SETTINGS, 0, 0, &NO_HEADER_TABLE))
            .await
            .unwrap();
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
                HEADERS => {
                    seen.answered.push(f.stream);
                    seen.statuses.push((f.stream, status_of(&f.payload)));
                }
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

/// No answer came from the upstream (the admin listener counts none with
/// origin `upstream`): a refused head never went out. The simulator's own
/// count misses a head that its HTTP parser refused itself (a 431 passed
/// back would look like the proxy's).
async fn assert_upstream_never_answered(h: &Harness) {
    let outcomes = request_outcomes(h).await;
    let upstream: Vec<_> = outcomes.keys().filter(|(o, _)| o == "upstream").collect();
    assert!(upstream.is_empty(), "answers from U: {outcomes:?}");
}

#[test]
fn statuses_are_read_from_static_and_literal_fields() {
    assert_eq!(status_of(&[0x88]), Some(200));
    assert_eq!(status_of(&[0x20, 0x8d]), Some(404));
    assert_eq!(status_of(&[0x08, 3, b'4', b'3', b'1']), Some(431));
    // "405" Huffman-coded: 011010 00000 011011, then 7 bits of padding.
    assert_eq!(status_of(&[0x48, 0x83, 0x68, 0x0d, 0xff]), Some(405));
    assert_eq!(status_of(&[0xbe]), None, "a dynamic-table reference");
}

/// One request as raw frames on a fresh connection; what came back on it.
async fn exchange(h: &Harness, fields: &[(&str, String)]) -> Seen {
    let mut c = Conn::open(h).await;
    c.headers(1, END_STREAM | END_HEADERS, &block(fields)).await;
    c.answer().await
}
