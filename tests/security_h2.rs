//! Catalog §1C (RELIABILITY.md): HTTP/2 abuse over h2c prior knowledge,
//! written as raw frames so that nothing a well-behaved client library
//! would refuse to send is out of reach: pseudo-header abuse, CONNECT,
//! rapid reset, CONTINUATION floods, HPACK bombs, and the limits the
//! server advertises. Each test ends with the global invariants.

mod support;

use std::time::Duration;

use support::h2frames::*;
use support::invariants::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .flat_map(|(n, v)| literal(n, v.as_bytes()))
        .collect()
}

fn get(path: &str) -> Vec<(&'static str, String)> {
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
    closed: bool,
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
        let mut seen = Seen::default();
        let reading = async {
            loop {
                let mut head = [0u8; 9];
                if self.stream.read_exact(&mut head).await.is_err() {
                    seen.closed = true;
                    return;
                }
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                let mut payload = vec![0u8; len];
                if self.stream.read_exact(&mut payload).await.is_err() {
                    seen.closed = true;
                    return;
                }
                let code = |at: usize| {
                    payload
                        .get(at..at + 4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                };
                match head[3] {
                    HEADERS => seen.answered.push(id),
                    RST_STREAM => seen.resets.push((id, code(0).unwrap_or(0))),
                    GOAWAY => seen.goaway = code(4),
                    SETTINGS if head[4] & 0x1 == 0 => {
                        for s in payload.chunks_exact(6) {
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
}

async fn start() -> Harness {
    count_panics();
    Setup::default().start().await
}

/// 1.30, 1.27 and the §0.3 pins: the server advertises the limits
/// src/server.rs sets (200 streams, a 16 KiB header list).
#[tokio::test]
async fn advertised_limits_are_the_pinned_ones() {
    let h = start().await;
    let mut c = Conn::open(&h).await;
    let seen = c
        .read(Duration::from_secs(5), |s| !s.settings.is_empty())
        .await;
    assert!(seen.settings.contains(&(0x3, 200)), "{seen:?}");
    assert!(seen.settings.contains(&(0x6, 16 * 1024)), "{seen:?}");
    assert_invariants(&h);
}

/// 1.21: pseudo-header abuse is a malformed stream (RST or 400) and never
/// reaches the upstream. A valid request on the same connection still works.
#[tokio::test]
async fn pseudo_header_abuse_never_reaches_the_upstream() {
    let h = start().await;
    let ok = get("/1/x");
    let without = |name: &str| -> Vec<(&str, String)> {
        ok.iter().filter(|(n, _)| *n != name).cloned().collect()
    };
    let with = |extra: (&'static str, &str), first: bool| -> Vec<(&str, String)> {
        let mut v = ok.clone();
        if first {
            v.insert(0, (extra.0, extra.1.to_owned()));
        } else {
            v.push((extra.0, extra.1.to_owned()));
        }
        v
    };
    let mut cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no :method", without(":method")),
        ("no :scheme", without(":scheme")),
        ("no :path", without(":path")),
        ("two :path", with((":path", "/1/y"), false)),
        ("pseudo after regular", {
            let mut v = vec![("accept", "*/*".to_owned())];
            v.extend(ok.clone());
            v
        }),
        (":status in a request", with((":status", "200"), false)),
        (":foo", with((":foo", "x"), false)),
        ("uppercase name", with(("X-Upper", "1"), false)),
        ("connection field", with(("connection", "close"), false)),
        (
            "transfer-encoding",
            with(("transfer-encoding", "chunked"), false),
        ),
        ("te: gzip", with(("te", "gzip"), false)),
        ("value with LF", with(("x-a", "a\nb"), false)),
        ("value with NUL", with(("x-a", "a\0b"), false)),
    ];
    for (path, name) in [
        ("", "empty :path"),
        ("hello-world", ":path without /"),
        ("*", ":path * on GET"),
        ("//evil.test/x", ":path //host"),
        (".evil.test/x", ":path .host"),
    ] {
        cases.push((name, get(path)));
    }
    let mut method = get("/1/x");
    method[0].1 = "GET /admin".into();
    cases.push((":method with a space", method));
    let mut protocol = get("/1/x");
    protocol.push((":protocol", "websocket".into()));
    cases.push((":protocol without CONNECT", protocol));
    for (i, (name, fields)) in cases.iter().enumerate() {
        let mut c = Conn::open(&h).await;
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        c.headers(1, END_STREAM | END_HEADERS, &block(&fields))
            .await;
        let seen = c
            .read(Duration::from_secs(5), |s| {
                !s.resets.is_empty() || !s.answered.is_empty()
            })
            .await;
        let refused = seen.goaway.is_some()
            || seen.resets.iter().any(|(id, _)| *id == 1)
            || seen.answered.contains(&1);
        assert!(refused, "case {i} {name}: {seen:?}");
        assert_eq!(h.sim.api_started(), 0, "case {i} {name} reached U");
    }
    // The same connection shape with a valid request is served.
    let mut c = Conn::open(&h).await;
    let fields: Vec<(&str, &str)> = ok.iter().map(|(n, v)| (*n, v.as_str())).collect();
    c.headers(1, END_STREAM | END_HEADERS, &block(&fields))
        .await;
    let seen = c
        .read(Duration::from_secs(5), |s| s.answered.contains(&1))
        .await;
    assert!(seen.answered.contains(&1), "{seen:?}");
    assert_eq!(h.sim.api_started(), 1);
    assert_invariants(&h);
}

/// 1.33: CONNECT and extended CONNECT over h2: 405 or RST, no tunnel.
#[tokio::test]
async fn h2_connect_is_refused() {
    let h = start().await;
    let plain = [(":method", "CONNECT"), (":authority", "evil.test:443")];
    let extended = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":authority", "proxy"),
        (":path", "/1/x"),
    ];
    for fields in [&plain[..], &extended[..]] {
        let mut c = Conn::open(&h).await;
        c.headers(1, END_HEADERS, &block(fields)).await;
        let seen = c
            .read(Duration::from_secs(5), |s| {
                !s.resets.is_empty() || !s.answered.is_empty()
            })
            .await;
        assert!(
            seen.goaway.is_some() || !seen.resets.is_empty() || seen.answered.contains(&1),
            "{fields:?}: {seen:?}"
        );
    }
    assert_eq!(h.sim.api_started(), 0);
    assert_invariants(&h);
}

/// 1.23: a content-length that the DATA does not match is a stream error;
/// the upstream never sees a completed request with a short body.
#[tokio::test]
async fn h2_content_length_mismatch_is_a_stream_error() {
    let h = start().await;
    for data in [&b"hello"[..], &b"hello world, twenty!"[..]] {
        let mut c = Conn::open(&h).await;
        let mut fields = get("/1/x");
        fields[0].1 = "POST".into();
        fields.push(("content-length", "10".into()));
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        c.headers(1, END_HEADERS, &block(&fields)).await;
        c.send(&frame(DATA, END_STREAM, 1, data)).await;
        let seen = c
            .read(Duration::from_secs(5), |s| {
                !s.resets.is_empty() || !s.answered.is_empty()
            })
            .await;
        let reset = seen.resets.iter().any(|(id, _)| *id == 1) || seen.goaway.is_some();
        assert!(reset || seen.answered.contains(&1), "{seen:?}");
    }
    for r in h.sim.received() {
        assert_ne!(
            r.status.as_u16(),
            200,
            "a mismatched body completed at U: {r:?}"
        );
    }
    assert_invariants(&h);
}

/// 1.24: Rapid Reset. 2 000 streams opened and cancelled at once on one
/// connection: the connection is cut off (GOAWAY or close) or the resets
/// cost nothing upstream beyond a bounded few; other connections are served.
#[tokio::test]
async fn rapid_reset_is_bounded() {
    let h = start().await;
    let mut c = Conn::open(&h).await;
    let fields: Vec<(&str, String)> = get("/1/x");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let hb = block(&fields);
    let mut batch = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &hb));
        batch.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    let sent = tokio::time::timeout(Duration::from_secs(10), c.send(&batch)).await;
    let seen = c.read(Duration::from_secs(5), |_| false).await;
    let started = h.sim.api_started();
    assert!(
        seen.goaway.is_some() || seen.closed || started < 2000,
        "2000 reset streams all reached U: {seen:?} sent={sent:?}"
    );
    // Another client is unaffected.
    let (res, _) = send(&h2c_client(), support::get(&h.url("/1/after"))).await;
    assert_eq!(res.status(), 200);
    assert_invariants(&h);
}

/// 1.26: CONTINUATION flood: HEADERS without END_HEADERS, then endless
/// CONTINUATION frames, of 16 KiB and of 1 byte. The server gives up
/// (GOAWAY or close) long before 8 MiB; nothing reaches the upstream.
#[tokio::test]
async fn continuation_flood_is_cut_off() {
    let h = start().await;
    for piece in [16 * 1024 - 9, 1] {
        let mut c = Conn::open(&h).await;
        let fields: Vec<(&str, String)> = get("/1/x");
        let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
        c.headers(1, END_STREAM, &block(&fields)).await;
        let filler = literal("x-f", &[b'a'; 100]);
        let chunk: Vec<u8> = filler.iter().cycle().take(piece).copied().collect();
        let mut written = 0usize;
        let flood = async {
            while written < 8 << 20 {
                if !c.send(&frame(CONTINUATION, 0, 1, &chunk)).await {
                    return;
                }
                written += chunk.len() + 9;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(10), flood).await;
        let seen = c.read(Duration::from_secs(5), |_| false).await;
        assert!(
            seen.goaway.is_some() || seen.closed,
            "piece {piece}: wrote {written} bytes, {seen:?}"
        );
        assert!(
            written < 8 << 20,
            "piece {piece}: the whole 8 MiB was taken"
        );
    }
    assert_eq!(h.sim.api_started(), 0);
    assert_invariants(&h);
}

/// 1.27: HPACK bomb: a 4 KiB field enters the dynamic table, then a block
/// of thousands of one-byte references to it. The decoded size, not the
/// wire size, is held to the 16 KiB limit: refused, nothing upstream.
#[tokio::test]
async fn hpack_bomb_is_refused() {
    let h = start().await;
    let mut c = Conn::open(&h).await;
    let fields: Vec<(&str, String)> = get("/1/x");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let mut hb = block(&fields);
    hb.extend(indexed_literal("x-bomb", &vec![b'a'; 3000]));
    // Index 62 is the newest dynamic-table entry: 3000 decoded bytes each.
    hb.extend(std::iter::repeat_n(0x80 | 62, 4000));
    c.headers(1, END_STREAM | END_HEADERS, &hb).await;
    let seen = c
        .read(Duration::from_secs(5), |s| {
            !s.resets.is_empty() || !s.answered.is_empty()
        })
        .await;
    assert!(
        seen.goaway.is_some()
            || seen.closed
            || !seen.resets.is_empty()
            || seen.answered.contains(&1),
        "{seen:?}"
    );
    assert_eq!(h.sim.api_started(), 0, "the bomb reached U");
    // 24 576 distinct tiny fields in one block (hyperium/h2#909).
    let mut c = Conn::open(&h).await;
    let mut hb = block(&fields);
    for i in 0..24_600 {
        hb.extend(literal(&format!("x{i}"), b""));
    }
    let mut first = true;
    for part in hb.chunks(16 * 1024 - 9) {
        let kind = if first { HEADERS } else { CONTINUATION };
        first = false;
        if !c.send(&frame(kind, END_STREAM, 1, part)).await {
            break;
        }
    }
    c.send(&frame(CONTINUATION, END_HEADERS, 1, &[])).await;
    let seen = c
        .read(Duration::from_secs(5), |s| {
            !s.resets.is_empty() || !s.answered.is_empty()
        })
        .await;
    assert!(
        seen.goaway.is_some()
            || seen.closed
            || !seen.resets.is_empty()
            || seen.answered.contains(&1),
        "{seen:?}"
    );
    assert_eq!(h.sim.api_started(), 0);
    assert_invariants(&h);
}

/// 1.25 MadeYouReset (CVE-2025-8671): each stream is a valid request,
/// then the client makes the *server* reset it, 10 000 times on one
/// connection. h2 treats a WINDOW_UPDATE of 0, DATA after END_STREAM and
/// an upper-case field name as connection errors (GOAWAY PROTOCOL_ERROR at
/// the first, which RFC 9113 §5.4 allows); a stream window pushed past
/// 2^31-1 is a stream error, counted against the pinned
/// `max_local_error_reset_streams` (1024): GOAWAY ENHANCE_YOUR_CALM. Either way the connection ends long
/// before 10 000 streams, and other clients are served.
#[tokio::test]
async fn made_you_reset_is_bounded() {
    const WINDOW_UPDATE: u8 = 0x8;
    const ENHANCE_YOUR_CALM: u32 = 0xb;
    let h = start().await;
    let fields: Vec<(&str, String)> = get("/1/x");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let hb = block(&fields);
    let mut bad_fields = fields.clone();
    bad_fields.push(("X-Upper", "1"));
    let bad_hb = block(&bad_fields);
    type Provoke = fn(u32, &[u8], &[u8]) -> Vec<u8>;
    let cases: [(&str, Provoke, Option<u32>); 4] = [
        (
            "WINDOW_UPDATE 0",
            |id, hb, _| {
                let mut out = frame(HEADERS, END_STREAM | END_HEADERS, id, hb);
                out.extend(frame(WINDOW_UPDATE, 0, id, &0u32.to_be_bytes()));
                out
            },
            None,
        ),
        (
            "DATA after END_STREAM",
            |id, hb, _| {
                let mut out = frame(HEADERS, END_STREAM | END_HEADERS, id, hb);
                out.extend(frame(DATA, 0, id, b"x"));
                out
            },
            None,
        ),
        (
            "stream window overflow",
            |id, hb, _| {
                let mut out = frame(HEADERS, END_STREAM | END_HEADERS, id, hb);
                for _ in 0..2 {
                    out.extend(frame(WINDOW_UPDATE, 0, id, &0x7fff_ffffu32.to_be_bytes()));
                }
                out
            },
            Some(ENHANCE_YOUR_CALM),
        ),
        (
            "invalid field",
            |id, _, bad| frame(HEADERS, END_STREAM | END_HEADERS, id, bad),
            None,
        ),
    ];
    for (name, provoke, code) in cases {
        let before = h.sim.api_started();
        let mut c = Conn::open(&h).await;
        let batch: Vec<u8> = (0..10_000u32)
            .flat_map(|i| provoke(2 * i + 1, &hb, &bad_hb))
            .collect();
        let sent = tokio::time::timeout(Duration::from_secs(10), c.send(&batch)).await;
        let seen = c.read(Duration::from_secs(5), |_| false).await;
        assert!(
            seen.goaway.is_some() || seen.closed,
            "{name}: 10 000 server-side resets without a GOAWAY: resets={} sent={sent:?}",
            seen.resets.len(),
        );
        if let (Some(want), Some(got)) = (code, seen.goaway) {
            assert_eq!(got, want, "{name}: GOAWAY code");
        }
        let started = h.sim.api_started() - before;
        assert!(
            started < 2000,
            "{name}: {started} made-to-reset streams reached U"
        );
    }
    let (res, _) = send(&h2c_client(), support::get(&h.url("/1/after"))).await;
    assert_eq!(res.status(), 200);
    assert_invariants(&h);
}
