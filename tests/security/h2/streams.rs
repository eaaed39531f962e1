//! One HTTP/2 request at a time, written as raw frames and HPACK so that
//! nothing a client library would refuse to send is out of reach
//! (RELIABILITY.md §1C): pseudo-header abuse, CONNECT, a content-length
//! the DATA does not match, `:path` normalisation, `te`, an authorization
//! reused from the HPACK table, the stream limit, and h2 only by ALPN.

use std::time::Duration;

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Stream concurrency and header-list size (1.30, 1.27, the §0.3 pins): the
/// server advertises the limits src/inbound/accept.rs sets (200 streams, a 16 KiB
/// header list).
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

/// Pseudo-header abuse (1.21) is a malformed stream (RST or 400) and never
/// reaches the upstream. A valid request on the same connection still works.
#[tokio::test]
async fn pseudo_header_abuse_never_reaches_the_upstream() {
    let h = Setup::default().start().await;
    let ok = get_fields("/1/x");
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
        cases.push((name, get_fields(path)));
    }
    let mut method = get_fields("/1/x");
    method[0].1 = "GET /admin".into();
    cases.push((":method with a space", method));
    let mut protocol = get_fields("/1/x");
    protocol.push((":protocol", "websocket".into()));
    cases.push((":protocol without CONNECT", protocol));
    for (i, (name, fields)) in cases.iter().enumerate() {
        let mut c = Conn::open(&h).await;
        c.headers(1, END_STREAM | END_HEADERS, &block(fields)).await;
        let seen = c.answer().await;
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

/// CONNECT and extended CONNECT over h2 (1.33): a plain CONNECT is a
/// well-formed h2 request that the proxy answers 405 itself; an extended
/// CONNECT (`:protocol`, never enabled by the server) is a malformed stream,
/// reset with PROTOCOL_ERROR. Neither opens a tunnel nor reaches U.
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
    for (fields, want_status, want_reset) in [
        (&plain[..], Some(405), None),
        (&extended[..], None, Some(PROTOCOL_ERROR)),
    ] {
        let mut c = Conn::open(&h).await;
        c.headers(1, END_HEADERS, &block(fields)).await;
        let seen = c.answer().await;
        assert_eq!(seen.status(1), want_status, "{fields:?}: {seen:?}");
        assert_eq!(seen.reset(1), want_reset, "{fields:?}: {seen:?}");
    }
    assert_eq!(h.sim.api_started(), 0);
    assert_invariants(&h);
}

/// A content-length that the DATA does not match (1.23), short (5 of 10
/// bytes) and long (20 of 10), is a stream error: RST_STREAM(PROTOCOL_ERROR)
/// on that stream, never an answer, and the upstream never gets the request
/// (a body this small is read whole before anything is forwarded). The DATA
/// comes a moment after the HEADERS, so that a proxy that forwarded the head
/// before the body had arrived would be seen doing it.
#[tokio::test]
async fn h2_content_length_mismatch_is_a_stream_error() {
    let h = Setup::default().start().await;
    for data in [&b"hello"[..], &b"hello world, twenty!"[..]] {
        let mut c = Conn::open(&h).await;
        let mut fields = get_fields("/1/x");
        fields[0].1 = "POST".into();
        fields.push(("content-length", "10".into()));
        c.headers(1, END_HEADERS, &block(&fields)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        c.send(&frame(DATA, END_STREAM, 1, data)).await;
        let seen = c.answer().await;
        assert_eq!(seen.reset(1), Some(PROTOCOL_ERROR), "{seen:?}");
        assert!(seen.answered.is_empty(), "answered: {seen:?}");
        assert_eq!(seen.goaway, None, "a stream error, not a connection error");
    }
    assert_eq!(
        h.sim.api_started(),
        0,
        "a mismatched body reached U: {:?}",
        h.sim.received()
    );
    assert_invariants(&h);
}

/// Getting round `deny_paths` by path normalisation (1.15) over HTTP/2: the
/// catalog's bypass targets sent as `:path`, then `allow_paths = ["/1/"]`.
/// Each is answered by the proxy (403 when it names the denied prefix, 400
/// when it is ambiguous, counted by the admin listener) and none reaches the
/// upstream.
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
        let seen = exchange(&h, &get_fields(path)).await;
        assert!(seen.answered.contains(&1), "{path}: {seen:?}");
    }
    // A fragment is not part of a `:path`: refused one way or another.
    let seen = exchange(&h, &get_fields("/oauth2/revoke#x")).await;
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
    h.finish().await;

    let h = Setup::default()
        .admin()
        .upstream("allow_paths = [\"/1/\"]")
        .start()
        .await;
    for path in ["/1/../oauth2/token", "/oauth2/token", "/2/x"] {
        let seen = exchange(&h, &get_fields(path)).await;
        assert!(seen.answered.contains(&1), "{path}: {seen:?}");
    }
    assert_eq!(h.sim.api_started(), 0);
    assert_outcomes(&h, &[(("proxy", "400"), 1.0), (("proxy", "403"), 2.0)]).await;
    assert_invariants(&h);
}

/// Connection-specific fields in h2 (1.22): `te: trailers` is the one TE an
/// h2 request may carry (RFC 9113 §8.2.2): accepted, and not forwarded to an
/// HTTP/1.1 upstream.
#[tokio::test]
async fn h2_te_trailers_is_accepted_and_not_forwarded() {
    let h = Setup::default().start().await;
    let mut fields = get_fields("/1/te");
    fields.push(("te", "trailers".into()));
    let seen = exchange(&h, &fields).await;
    assert!(seen.answered.contains(&1), "{seen:?}");
    let received = h.sim.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].version, http::Version::HTTP_11);
    assert!(!received[0].headers.contains_key("te"), "{:?}", received[0]);
    assert_invariants(&h);
}

/// The client's credentials never reach U (2.05): an `authorization` field
/// the client put in the HPACK dynamic table on one stream and reuses by
/// index on the next never reaches U: both requests arrive with the proxy's
/// Bearer token only.
#[tokio::test]
async fn hpack_indexed_authorization_reused_on_a_second_stream_never_reaches_u() {
    let h = Setup::default().start().await;
    let mut c = Conn::open(&h).await;
    let pseudo = get_fields("/1/first");
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

/// Stream concurrency (1.30): streams past the advertised
/// `max_concurrent_streams` (200) are refused with RST_STREAM(REFUSED_STREAM)
/// and never processed. The client opens 250 streams that stay open (no
/// END_STREAM).
#[tokio::test]
async fn streams_past_the_concurrency_limit_are_refused() {
    let h = Setup::default().start().await;
    let mut c = Conn::open(&h).await;
    let mut fields = get_fields("/1/open");
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

/// Edge cases in h2 detection (1.32 a): on a TLS listener, HTTP/2 is chosen
/// by ALPN only (RFC 9113 §3.2, §3.3). A client that negotiated `http/1.1`,
/// or no ALPN at all, and then sends the h2 preface is not served as HTTP/2:
/// no SETTINGS, no answer on a stream, nothing upstream. One that negotiated
/// `h2` is.
#[tokio::test]
async fn h2_preface_over_tls_without_alpn_h2_is_not_served_as_h2() {
    let ca = fitbit_proxy::sim::TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let listen = tls_listen(certs.path(), &ca);
    let h = Setup::default()
        .listen(&format!("{listen}\nheader_read_timeout = \"1s\""))
        .start()
        .await;
    let fields = get_fields("/1/x");
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
