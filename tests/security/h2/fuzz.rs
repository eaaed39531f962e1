//! Fuzzing h2 frame sequences against a running proxy (6.09): random frame
//! sequences, with HPACK blocks from a small grammar of good and bad fields,
//! against one running proxy (after the h2 crate's own `fuzz_e2e`).
//! `FUZZ_CASES` sets the case count (default 64, a few seconds); for a longer
//! campaign: `FUZZ_CASES=100000 cargo test --release --test security
//! h2::fuzz`.

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
    let fields = get_fields("/1/fuzz");
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
        done.extend(seen.streams_done());
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
            done.extend(seen.streams_done());
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
