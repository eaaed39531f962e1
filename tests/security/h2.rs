//! Catalog §1C (RELIABILITY.md): HTTP/2 abuse over h2c prior knowledge,
//! written as raw frames so that nothing a well-behaved client library
//! would refuse to send is out of reach: pseudo-header abuse, CONNECT,
//! rapid reset, CONTINUATION floods, HPACK bombs, and the limits the
//! server advertises. Each test ends with the global invariants.

use std::time::Duration;

use crate::support;
use crate::support::h2frames::*;
use crate::support::invariants::*;
use crate::support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
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

fn block<V: AsRef<[u8]>>(fields: &[(&str, V)]) -> Vec<u8> {
    fields
        .iter()
        .flat_map(|(n, v)| literal(n, v.as_ref()))
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
    /// PING acknowledgements received.
    pings: usize,
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
        read_frames(&mut self.stream, limit, done).await
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

/// 1.30, 1.27 and the §0.3 pins: the server advertises the limits
/// src/server.rs sets (200 streams, a 16 KiB header list).
#[tokio::test]
async fn advertised_limits_are_the_pinned_ones() {
    let h = Setup::default().start().await;
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
    let h = Setup::default().start().await;
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
        c.headers(1, END_STREAM | END_HEADERS, &block(fields)).await;
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
    let h = Setup::default().start().await;
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
    let h = Setup::default().start().await;
    for data in [&b"hello"[..], &b"hello world, twenty!"[..]] {
        let mut c = Conn::open(&h).await;
        let mut fields = get("/1/x");
        fields[0].1 = "POST".into();
        fields.push(("content-length", "10".into()));
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
    let h = Setup::default().start().await;
    let mut c = Conn::open(&h).await;
    let fields = get("/1/x");
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
    let h = Setup::default().start().await;
    for piece in [16 * 1024 - 9, 1] {
        let mut c = Conn::open(&h).await;
        let fields = get("/1/x");
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
    let h = Setup::default().start().await;
    let mut c = Conn::open(&h).await;
    let fields = get("/1/x");
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
    let h = Setup::default().start().await;
    let fields = get("/1/x");
    let hb = block(&fields);
    let mut bad_fields = fields.clone();
    bad_fields.push(("X-Upper", "1".into()));
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

/// One request as raw frames on a fresh connection; what came back on it.
async fn exchange(h: &Harness, fields: &[(&str, String)]) -> Seen {
    let mut c = Conn::open(h).await;
    c.headers(1, END_STREAM | END_HEADERS, &block(fields)).await;
    c.read(Duration::from_secs(5), |s| {
        !s.resets.is_empty() || !s.answered.is_empty()
    })
    .await
}

/// 1.15 over HTTP/2: the catalog's `deny_paths` bypass targets sent as
/// `:path`, then `allow_paths = ["/1/"]`. Each is answered by the proxy
/// (403 when it names the denied prefix, 400 when it is ambiguous, counted
/// by the admin listener) and none reaches the upstream.
#[tokio::test]
async fn h2_path_normalisation_cannot_reach_denied_paths() {
    let h = Setup::default().admin().start().await;
    let forbidden = [
        "/oauth2/revoke",
        "/OAUTH2/revoke",
        "/%6Fauth2/revoke",
        "/oauth2",
    ];
    let ambiguous = [
        "//oauth2/revoke",
        "/./oauth2/revoke",
        "/1/../oauth2/revoke",
        "/1/..;x/oauth2/revoke",
        "/1%2F..%2Foauth2/revoke",
        "/1%5C..%5Coauth2/revoke",
        "/oauth2%2Frevoke",
    ];
    for path in forbidden.iter().chain(&ambiguous) {
        let seen = exchange(&h, &get(path)).await;
        assert!(seen.answered.contains(&1), "{path}: {seen:?}");
    }
    // A fragment is not part of a `:path`: refused one way or another.
    let seen = exchange(&h, &get("/oauth2/revoke#x")).await;
    assert!(
        seen.answered.contains(&1) || !seen.resets.is_empty() || seen.goaway.is_some(),
        "{seen:?}"
    );
    assert_eq!(h.sim.api_started(), 0, "a bypass reached U");
    let got = request_outcomes(&h).await;
    let count = |code: &str| got.get(&("proxy".to_owned(), code.to_owned())).copied();
    assert_eq!(
        count("403").unwrap_or(0.0) as usize,
        forbidden.len() + 1,
        "{got:?}"
    );
    assert!(
        count("400").unwrap_or(0.0) as usize >= ambiguous.len(),
        "{got:?}"
    );
    assert_invariants(&h);
    h.stop().await;

    let h = Setup::default()
        .admin()
        .upstream("allow_paths = [\"/1/\"]")
        .start()
        .await;
    for path in ["/1/../oauth2/token", "/oauth2/token", "/2/x"] {
        let seen = exchange(&h, &get(path)).await;
        assert!(seen.answered.contains(&1), "{path}: {seen:?}");
    }
    assert_eq!(h.sim.api_started(), 0);
    assert_outcomes(&h, &[(("proxy", "400"), 1.0), (("proxy", "403"), 2.0)]).await;
    assert_invariants(&h);
}

/// 1.22: `te: trailers` is the one TE an h2 request may carry (RFC 9113
/// §8.2.2): accepted, and not forwarded to an HTTP/1.1 upstream.
#[tokio::test]
async fn h2_te_trailers_is_accepted_and_not_forwarded() {
    let h = Setup::default().start().await;
    let mut fields = get("/1/te");
    fields.push(("te", "trailers".into()));
    let seen = exchange(&h, &fields).await;
    assert!(seen.answered.contains(&1), "{seen:?}");
    let received = h.sim.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].version, http::Version::HTTP_11);
    assert!(!received[0].headers.contains_key("te"), "{:?}", received[0]);
    assert_invariants(&h);
}

/// 2.05: an `authorization` field the client put in the HPACK dynamic
/// table on one stream and reuses by index on the next never reaches U:
/// both requests arrive with the proxy's Bearer token only.
#[tokio::test]
async fn hpack_indexed_authorization_reused_on_a_second_stream_never_reaches_u() {
    let h = Setup::default().start().await;
    let mut c = Conn::open(&h).await;
    let pseudo = get("/1/first");
    let mut first = block(&pseudo);
    first.extend(indexed_literal(
        "authorization",
        b"Bearer CLIENTAUTH_CANARY",
    ));
    c.headers(1, END_STREAM | END_HEADERS, &first).await;
    let mut second = block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "proxy"),
        (":path", "/1/second"),
    ]);
    // Index 62: the newest dynamic-table entry, the client's authorization.
    second.push(0x80 | 62);
    c.headers(3, END_STREAM | END_HEADERS, &second).await;
    let seen = c
        .read(Duration::from_secs(5), |s| s.answered.len() >= 2)
        .await;
    let mut answered = seen.answered.clone();
    answered.sort_unstable();
    assert_eq!(answered, [1, 3], "{seen:?}");
    let received = h.sim.received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(
            r.headers.get_all("authorization").iter().count(),
            1,
            "{r:?}"
        );
    }
    assert_invariants(&h);
}

/// 1.30: streams past the advertised `max_concurrent_streams` (200) are
/// refused with RST_STREAM(REFUSED_STREAM) and never processed. The
/// client opens 250 streams that stay open (no END_STREAM).
#[tokio::test]
async fn streams_past_the_concurrency_limit_are_refused() {
    const REFUSED_STREAM: u32 = 0x7;
    let h = Setup::default().start().await;
    let mut c = Conn::open(&h).await;
    let mut fields = get("/1/open");
    fields[0].1 = "POST".into();
    let hb = block(&fields);
    let batch: Vec<u8> = (0..250u32)
        .flat_map(|i| frame(HEADERS, END_HEADERS, 2 * i + 1, &hb))
        .collect();
    c.send(&batch).await;
    let seen = c
        .read(Duration::from_secs(5), |s| s.resets.len() >= 50)
        .await;
    let refused: Vec<u32> = seen
        .resets
        .iter()
        .filter(|(_, code)| *code == REFUSED_STREAM)
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(refused.len(), 50, "{seen:?}");
    assert!(refused.iter().all(|id| *id > 2 * 200), "{refused:?}");
    // The refused streams were never processed: at most the 200 admitted
    // ones can have started upstream.
    assert!(h.sim.api_started() <= 200);
    assert_invariants(&h);
}

/// 1.28: a 1 MiB header block right after the preface, before the client
/// has acknowledged the server's SETTINGS: the 16 KiB header-list limit
/// already holds (431, RST or GOAWAY); nothing reaches the upstream.
#[tokio::test]
async fn a_huge_header_block_before_the_settings_ack_is_refused() {
    let h = Setup::default().start().await;
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let mut c = Conn { stream };
    let fields = get("/1/x");
    let mut hb = block(&fields);
    while hb.len() < 1 << 20 {
        hb.extend(literal("x-f", &[b'a'; 1000]));
    }
    let mut written = 0;
    let flood = async {
        for (i, part) in hb.chunks(16 * 1024 - 9).enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            if !c.send(&frame(kind, END_STREAM, 1, part)).await {
                return;
            }
            written += part.len();
        }
        c.send(&frame(CONTINUATION, END_HEADERS, 1, &[])).await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), flood).await;
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
        "wrote {written}: {seen:?}"
    );
    assert_eq!(h.sim.api_started(), 0, "the huge head reached U");
    assert_invariants(&h);
}

/// Resident set of this process (the proxy runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// One connection of the "HTTP/2 Bomb": the window held at 0
/// (SETTINGS_INITIAL_WINDOW_SIZE = 0, nothing read until the end), a
/// `size`-byte field put in the dynamic table, then 100 streams of `refs`
/// one-byte references to it each.
async fn bomb_connection(h: &Harness, refs: usize, size: usize) -> Seen {
    let pseudo = get("/1/bomb");
    let pseudo = block(&pseudo);
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let zero_window = [0, 4, 0, 0, 0, 0];
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &zero_window));
    start.extend(frame(SETTINGS, 0x1, 0, &[]));
    stream.write_all(&start).await.unwrap();
    let mut c = Conn { stream };
    let mut first = pseudo.clone();
    first.extend(indexed_literal("x-bomb", &vec![b'a'; size]));
    let indexed = std::iter::repeat_n(0x80 | 62, refs);
    let sending = async {
        for i in 0..100u32 {
            let mut hb = if i == 0 {
                first.clone()
            } else {
                pseudo.clone()
            };
            hb.extend(indexed.clone());
            let mut parts = hb.chunks(16 * 1024 - 9).peekable();
            let mut kind = HEADERS;
            while let Some(part) = parts.next() {
                let flags = if parts.peek().is_none() {
                    END_HEADERS
                } else {
                    0
                };
                if !c
                    .send(&frame(kind, END_STREAM | flags, 2 * i + 1, part))
                    .await
                {
                    return;
                }
                kind = CONTINUATION;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), sending).await;
    c.read(Duration::from_secs(10), |s| {
        s.answered.len() + s.resets.len() >= 100
    })
    .await
}

/// 1.27 (b), the "HTTP/2 Bomb", on 100 connections at once: each holds
/// its window at 0 and sends, on 100 streams, small references to one
/// dynamic-table entry. Over the 16 KiB decoded limit (200 × 100 B per
/// stream) every stream is refused; far over it (4 000 × 4 KiB, 1.6 GB
/// decoded per connection) each connection is cut. Under it (90 × 100 B,
/// one connection) the requests are forwarded and the answers wait on the
/// closed window. Nothing over the limit reaches U, and the process grows
/// by a few MiB, not by the decoded sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_bomb_with_the_window_held_at_zero_is_bounded() {
    let h = Setup::default().start().await;
    let before = rss();
    for (refs, size) in [(200, 100), (4000, 4096)] {
        let conns = (0..100).map(|_| bomb_connection(&h, refs, size));
        let seen = futures_util::future::join_all(conns).await;
        assert_eq!(
            h.sim.api_started(),
            0,
            "{refs} × {size}: over the limit, reached U"
        );
        for s in &seen {
            assert!(
                s.goaway.is_some() || s.closed || s.answered.len() + s.resets.len() == 100,
                "{refs} × {size}: {s:?}"
            );
        }
        let cut = seen
            .iter()
            .filter(|s| s.goaway.is_some() || s.closed)
            .count();
        eprintln!("{refs} refs × {size} B on 100 connections: {cut} cut off");
    }
    let seen = bomb_connection(&h, 90, 100).await;
    assert_eq!(seen.answered.len(), 100, "90 × 100: {seen:?}");
    assert_eq!(h.sim.api_started(), 100);
    for r in h.sim.received() {
        let size: usize = r
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        assert!(size <= 16 * 1024, "a {size}-byte head reached U");
    }
    let grown = rss().saturating_sub(before);
    eprintln!("grown by {} KiB", grown >> 10);
    assert!(grown < 64 << 20, "grew by {} MiB", grown >> 20);
    assert_invariants(&h);
}

/// `fitbit_proxy_queue_depth` from the admin listener.
async fn queue_depth(h: &Harness) -> usize {
    let (_, body) = send(&http1_client(), support::get(&h.admin_url("/metrics"))).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("fitbit_proxy_queue_depth "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("queue depth metric") as usize
}

/// Waits (10 s at most) until the pacing queue holds `want`, or `stop`
/// says the connection under test is gone; false in that case.
async fn queue_reaches(h: &Harness, want: usize, stop: impl Fn() -> bool) -> bool {
    for _ in 0..1000 {
        if stop() {
            return false;
        }
        if queue_depth(h).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("queue depth never reached {want}: {}", queue_depth(h).await);
}

/// A harness whose pacing admits `per_hour` requests an hour, its burst
/// spent, so that every request after waits in the queue.
async fn paced(per_hour: u32) -> Harness {
    let h = Setup::default()
        .admin()
        .rate_limit(&format!(
            "hourly_quota = {per_hour}\nburst = 1\nmax_wait = \"1h\"\nmax_queued = 1000"
        ))
        .sim(fitbit_proxy::sim::SimConfig {
            quota: per_hour,
            window: Duration::from_secs(3600),
            ..sim_config()
        })
        .start()
        .await;
    let (res, _) = send(&h2c_client(), support::get(&h.url("/1/first"))).await;
    assert_eq!(res.status(), 200);
    h
}

/// 1.24, resets after acceptance (CVE-2023-44487; Envoy 1.27.1 closes a
/// connection once most of its streams are reset prematurely). Rounds of
/// 50 streams on one connection: each round opens 50 that wait in the
/// pacing queue, then resets the 50 before, so that streams are always
/// open, and the client never answers the GOAWAY's PING. Every reset
/// request leaves the queue and none is sent upstream. After 100 resets
/// (`H2_PREMATURE_RESETS_MIN`, more than half the streams opened) the
/// proxy sends GOAWAY; the client goes on, and 100 resets later the
/// connection is closed. A new client is then served after about one
/// interval: the resets kept no pacing slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_after_acceptance_get_goaway_then_a_close() {
    let h = paced(3600).await;
    let c = Conn::open(&h).await;
    let (mut rd, mut wr) = c.stream.into_split();
    let goaway = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (goaway, closed) = (goaway.clone(), closed.clone());
        tokio::spawn(async move {
            for _ in 0..10 {
                let seen = read_frames(&mut rd, Duration::from_secs(30), |_| false).await;
                if seen.goaway.is_some() {
                    goaway.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                if seen.closed {
                    closed.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    let is = |flag: &std::sync::atomic::AtomicBool| flag.load(std::sync::atomic::Ordering::SeqCst);
    let fields = get("/1/reset");
    let hb = block(&fields);
    let mut next = 1u32;
    let mut waiting: Vec<u32> = Vec::new();
    let (mut reset, mut reset_at_goaway) = (0usize, None);
    for _round in 0..10 {
        let ids: Vec<u32> = (0..50).map(|i| next + 2 * i).collect();
        next += 100;
        let opened: Vec<u8> = ids
            .iter()
            .flat_map(|id| frame(HEADERS, END_STREAM | END_HEADERS, *id, &hb))
            .collect();
        let stop = || is(&closed);
        if wr.write_all(&opened).await.is_err()
            || !queue_reaches(&h, waiting.len() + 50, stop).await
        {
            break;
        }
        let resets: Vec<u8> = waiting
            .iter()
            .flat_map(|id| frame(RST_STREAM, 0, *id, &CANCEL.to_be_bytes()))
            .collect();
        if wr.write_all(&resets).await.is_err() {
            break;
        }
        reset += waiting.len();
        if !queue_reaches(&h, 50, stop).await {
            break;
        }
        waiting = ids;
        if reset_at_goaway.is_none() && is(&goaway) {
            reset_at_goaway = Some(reset);
        }
    }
    tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the reader ends")
        .unwrap();
    println!("GOAWAY seen after {reset_at_goaway:?} resets; closed after {reset}");
    assert!(is(&goaway), "no GOAWAY after {reset} resets");
    assert!(is(&closed), "the connection stayed open");
    // GOAWAY at 100 (seen one round later at most); the close 100 later.
    assert!(
        matches!(reset_at_goaway, Some(100..=150)),
        "GOAWAY after {reset_at_goaway:?} resets"
    );
    assert!((200..=250).contains(&reset), "closed after {reset} resets");
    // The close dropped the last round's waiting streams too.
    assert!(queue_reaches(&h, 0, || false).await);
    let reached = h
        .sim
        .received()
        .iter()
        .filter(|r| r.path == "/1/reset")
        .count();
    assert!(reached <= 1, "{reached} reset requests were sent upstream");
    // Had the reset requests kept their pacing slots, this one would wait
    // minutes; it waits about one second.
    let client = h2c_client();
    let after = send(&client, support::get(&h.url("/1/after")));
    let (res, _) = tokio::time::timeout(Duration::from_secs(10), after)
        .await
        .expect("served after the resets, not behind their slots");
    assert_eq!(res.status(), 200);
    assert_invariants(&h);
}

/// 1.24, the other side: a client that cancels a few streams among many
/// good ones is not cut off. Twelve rounds on one connection, each of 100
/// requests the proxy answers at once (a denied path, 403) and 10 that
/// wait for a pacing slot and are then reset: 120 premature resets, past
/// the minimum of 100, but not most of the 1 320 streams. No GOAWAY, and
/// the connection still serves a request at the end. Paced at one a
/// minute, so that no cancelled request is served during the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancelling_a_few_streams_is_not_cut_off() {
    let h = paced(60).await;
    let mut c = Conn::open(&h).await;
    // Room for all the 403 bodies: the connection's receive window.
    let window = frame(WINDOW_UPDATE, 0, 0, &0x7000_0000u32.to_be_bytes());
    assert!(c.send(&window).await);
    let denied = block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "proxy"),
        (":path", "/oauth2/token"),
    ]);
    let fields = get("/1/cancelled");
    let paced = block(&fields);
    let mut next = 1u32;
    let mut ids = || {
        next += 2;
        next - 2
    };
    for round in 0..12 {
        let cancelled: Vec<u32> = (0..10).map(|_| ids()).collect();
        let mut batch = Vec::new();
        for id in &cancelled {
            batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, *id, &paced));
        }
        for _ in 0..100 {
            batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, ids(), &denied));
        }
        assert!(c.send(&batch).await);
        let seen = c
            .read(Duration::from_secs(10), |s| s.answered.len() >= 100)
            .await;
        assert_eq!(seen.answered.len(), 100, "round {round}: {seen:?}");
        assert!(
            seen.goaway.is_none() && !seen.closed,
            "round {round}: cut off"
        );
        assert!(queue_reaches(&h, 10, || false).await);
        let reset: Vec<u8> = cancelled
            .iter()
            .flat_map(|id| frame(RST_STREAM, 0, *id, &CANCEL.to_be_bytes()))
            .collect();
        assert!(c.send(&reset).await);
        assert!(queue_reaches(&h, 0, || false).await);
    }
    let last = ids();
    assert!(c.headers(last, END_STREAM | END_HEADERS, &denied).await);
    let seen = c
        .read(Duration::from_secs(10), |s| s.answered.contains(&last))
        .await;
    assert!(seen.answered.contains(&last), "{seen:?}");
    assert!(seen.goaway.is_none() && !seen.closed, "{seen:?}");
    assert_invariants(&h);
}

/// 1.32 (a): on a TLS listener, HTTP/2 is chosen by ALPN only (RFC 9113
/// §3.2, §3.3). A client that negotiated `http/1.1`, or no ALPN at all,
/// and then sends the h2 preface is not served as HTTP/2: no SETTINGS, no
/// answer on a stream, nothing upstream. One that negotiated `h2` is.
#[tokio::test]
async fn h2_preface_over_tls_without_alpn_h2_is_not_served_as_h2() {
    let ca = fitbit_proxy::sim::TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let listen = tls_listen(certs.path(), &ca);
    let h = Setup::default()
        .listen(&format!("{listen}\nheader_read_timeout = \"1s\""))
        .start()
        .await;
    let fields = get("/1/x");
    let mut request = PREFACE.to_vec();
    request.extend(frame(SETTINGS, 0, 0, &[]));
    request.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, &block(&fields)));
    for alpn in [vec![b"http/1.1".to_vec()], vec![], vec![b"h2".to_vec()]] {
        let mut config = ca.client_config();
        config.alpn_protocols = alpn.clone();
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = TcpStream::connect(h.proxy).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(&request).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            let mut buf = [0u8; 4096];
            while let Ok(n) = tls.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                answer.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        let h2_settings = answer.len() >= 9 && answer[3] == SETTINGS;
        if alpn == [b"h2".to_vec()] {
            assert!(h2_settings, "h2 by ALPN is served: {answer:?}");
            assert_eq!(h.sim.api_started(), 1);
        } else {
            assert!(!h2_settings, "{alpn:?}: served as h2: {answer:?}");
            let text = String::from_utf8_lossy(&answer);
            assert!(
                answer.is_empty() || text.starts_with("HTTP/1.1 4"),
                "{alpn:?}: {text}"
            );
            assert_eq!(h.sim.api_started(), 0, "{alpn:?}");
        }
    }
    assert_invariants(&h);
}

mod fuzz {
    //! 6.09: random frame sequences, with HPACK blocks from a small grammar
    //! of good and bad fields, against one running proxy (after the h2
    //! crate's own `fuzz_e2e`). `FUZZ_CASES` sets the case count (default
    //! 64, a few seconds); for a longer campaign:
    //! `FUZZ_CASES=100000 cargo test --release --test security_h2 fuzz`.

    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    fn field() -> impl Strategy<Value = Vec<u8>> {
        let names = prop::sample::select(vec![
            ":method",
            ":path",
            ":scheme",
            ":authority",
            ":status",
            ":protocol",
            "host",
            "authorization",
            "connection",
            "te",
            "transfer-encoding",
            "content-length",
            "X-Upper",
            "x-a",
            "cookie",
            "",
        ]);
        let values = prop::sample::select(vec![
            "GET",
            "POST",
            "CONNECT",
            "TRACE",
            "/1/x",
            "/oauth2/token",
            "//evil.test/x",
            "/1/../oauth2/x",
            "*",
            "http",
            "https",
            "proxy",
            "trailers",
            "gzip",
            "chunked",
            "5",
            "-1",
            "Bearer CLIENTAUTH_CANARY",
            "a\r\nb",
            "a\0b",
            " x ",
            "",
        ]);
        (0u8..4, names, values, 1usize..72).prop_map(|(kind, name, value, index)| match kind {
            0 => literal(name, value.as_bytes()),
            1 => indexed_literal(name, value.as_bytes()),
            2 => {
                let mut out = Vec::new();
                hpack_int(0x80, 7, index, &mut out);
                out
            }
            _ => {
                let mut out = literal(name, value.as_bytes());
                out[0] = 0x10; // never indexed
                out
            }
        })
    }

    /// A field that matters to the proxy, as a literal (of any of the three
    /// kinds), to follow a valid request's pseudo-header fields.
    fn header() -> impl Strategy<Value = Vec<u8>> {
        let pairs = prop::sample::select(vec![
            ("authorization", "Bearer CLIENTAUTH_CANARY"),
            ("authorization", ""),
            ("proxy-authorization", "Basic CLIENTAUTH_CANARY"),
            ("x-forwarded-for", "1.2.3.4"),
            ("via", "1.1 lb.internal"),
            ("te", "trailers"),
            ("connection", "x-request-id"),
            ("host", "evil.test"),
            ("cookie", "a=1"),
            ("content-length", "0"),
            ("x-request-id", "fuzz"),
            ("accept-language", "en_US"),
        ]);
        (pairs, 0u8..3).prop_map(|((name, value), kind)| {
            let mut out = match kind {
                0 => literal(name, value.as_bytes()),
                _ => indexed_literal(name, value.as_bytes()),
            };
            if kind == 2 {
                out[0] = 0x10; // never indexed
            }
            out
        })
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        let fields = get("/1/fuzz");
        let valid = block(&fields);
        prop_oneof![
            // A valid request, with good or bad fields after it.
            3 => prop::collection::vec(header(), 0..4).prop_map(move |extra| {
                let mut out = valid.clone();
                out.extend(extra.concat());
                out
            }),
            1 => prop::collection::vec(field(), 0..8).prop_map(|f| f.concat()),
            1 => prop::collection::vec(any::<u8>(), 0..24),
        ]
    }

    fn frames() -> impl Strategy<Value = Vec<Vec<u8>>> {
        // Weighted towards HEADERS on client streams, so that some
        // sequences carry requests the proxy forwards.
        let kind = prop_oneof![4 => Just(HEADERS), 4 => 0u8..=9, 1 => any::<u8>()];
        let flags = prop_oneof![
            Just(END_STREAM | END_HEADERS),
            Just(END_HEADERS),
            Just(0),
            any::<u8>()
        ];
        let stream = prop_oneof![2 => Just(1u32), 1 => Just(3), 1 => 0u32..8];
        let one = (kind, flags, stream, payload())
            .prop_map(|(kind, flags, stream, payload)| frame(kind, flags, stream, &payload));
        prop::collection::vec(one, 1..16)
    }

    /// Sends the frames one by one after the preface and SETTINGS, each
    /// followed by a PING: once the proxy has acknowledged it (so it has
    /// processed the frame), and the frame was a complete header block,
    /// waits up to 100 ms for that stream's answer, so that a request the
    /// proxy accepted can reach U before a later frame ends the connection.
    /// Stops when the proxy sends GOAWAY or closes.
    async fn one_case(h: &Harness, frames: &[Vec<u8>]) {
        let mut c = Conn::open(h).await;
        let mut done = Vec::new();
        for f in frames {
            c.send(f).await;
            c.send(&frame(PING, 0, 0, b"fuzzping")).await;
            let seen = c.read(Duration::from_secs(2), |s| s.pings > 0).await;
            if seen.goaway.is_some() || seen.closed {
                return;
            }
            done.extend(
                seen.answered
                    .iter()
                    .chain(seen.resets.iter().map(|(id, _)| id)),
            );
            let id = u32::from_be_bytes([f[5], f[6], f[7], f[8]]);
            if f[3] == HEADERS && f[4] & END_HEADERS != 0 && !done.contains(&id) {
                let seen = c
                    .read(Duration::from_millis(100), |s| {
                        s.answered.contains(&id) || s.resets.iter().any(|(r, _)| *r == id)
                    })
                    .await;
                if seen.goaway.is_some() || seen.closed {
                    return;
                }
                done.extend(
                    seen.answered
                        .iter()
                        .chain(seen.resets.iter().map(|(id, _)| id)),
                );
            }
        }
    }

    /// No panic; after every sequence a valid request is still served;
    /// nothing that reached U breaks G1, and only well-formed requests for
    /// forwardable paths reached it.
    #[test]
    fn random_h2_frame_sequences() {
        let cases = std::env::var("FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(64);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let h = rt.block_on(Setup::default().start());
        let client = h2c_client();
        let mut runner = TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&frames(), |frames| {
            // Only what this case sent is judged, so that shrinking works.
            let before = h.sim.received().len();
            rt.block_on(one_case(&h, &frames));
            let (res, _) = rt.block_on(send(&client, support::get(&h.url("/1/alive"))));
            prop_assert_eq!(res.status(), 200);
            for r in h.sim.received().into_iter().skip(before) {
                prop_assert!(
                    r.path == "/1/fuzz" || r.path == "/1/alive",
                    "{:?} reached U",
                    r
                );
                prop_assert!(r.method == "GET", "{:?}", r);
                let auth: Vec<_> = r.headers.get_all("authorization").iter().collect();
                prop_assert!(
                    auth.len() == 1 && auth[0].as_bytes().starts_with(b"Bearer TOKEN_CANARY_"),
                    "G1: authorization {:?}",
                    r
                );
                for name in HOP_BY_HOP.iter().chain(&["x-forwarded-for", "via"]) {
                    prop_assert!(!r.headers.contains_key(*name), "G1: {} in {:?}", name, r);
                }
                let id = r.headers.get("x-request-id").map(|v| v.as_bytes());
                prop_assert!(id.is_some(), "no request id: {:?}", r);
            }
            assert_no_panics();
            Ok(())
        });
        eprintln!(
            "{cases} sequences; {} requests reached U",
            h.sim.received().len()
        );
        if let Err(e) = result {
            panic!("{e}");
        }
        assert_invariants(&h);
        rt.block_on(h.stop());
    }
}
