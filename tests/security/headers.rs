//! Header hygiene (RELIABILITY.md §2): the forwarding-identity fields a
//! client sends (2.13), a bearer token in the query, repeated fields and
//! `Set-Cookie` kept in order, and the token never indexed in HPACK toward
//! an HTTP/2 upstream. Over loopback, h1 and h2c; every case ends with the
//! global invariants.

use crate::support;
use crate::support::faulty::{self, RawUpstream};
use crate::support::invariants::*;
use crate::support::*;
use http::{Request, StatusCode};
use http_body_util::Full;

/// The catalog's 2.13 list, as a client (or an internal load balancer)
/// would send it.
const SPOOFED: [(&str, &str); 12] = [
    ("x-forwarded-for", "1.2.3.4"),
    ("forwarded", "for=10.0.0.1;host=evil;proto=http"),
    ("x-real-ip", "10.0.0.2"),
    ("x-forwarded-host", "evil"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-port", "80"),
    ("x-original-url", "/oauth2/revoke"),
    ("x-rewrite-url", "/oauth2/revoke"),
    ("true-client-ip", "10.0.0.3"),
    ("x-client-ip", "10.0.0.4"),
    ("cf-connecting-ip", "10.0.0.5"),
    ("via", "1.1 lb.corp.internal"),
];

fn spoofed(url: &str) -> Request<Full<bytes::Bytes>> {
    let mut req = get(url);
    for (name, value) in SPOOFED {
        req.headers_mut()
            .append(name, value.parse().expect("valid value"));
    }
    req.headers_mut()
        .insert("accept-language", "en_US".parse().unwrap());
    req
}

/// None of the forwarding-identity fields (2.13) reaches the upstream, and
/// the proxy adds none of its own (nor a `Via`); other end-to-end fields
/// pass. `X-Original-URL: /oauth2/revoke` changes nothing: the request goes
/// to its own path.
#[tokio::test]
async fn forwarding_identity_fields_never_reach_the_upstream() {
    let h = Setup::default().start().await;
    for client in [http1_client(), h2c_client()] {
        let (res, _) = send(&client, spoofed(&h.url("/1/user/-/profile.json"))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let received = h.sim.received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.path, "/1/user/-/profile.json");
        assert_eq!(r.headers["accept-language"], "en_US", "{r:?}");
        for (name, _) in SPOOFED {
            assert!(
                !r.headers.contains_key(name),
                "{name} reached the upstream: {r:?}"
            );
        }
        for name in r.headers.keys() {
            let name = name.as_str();
            assert!(
                !name.starts_with("x-forwarded") && !name.ends_with("-ip"),
                "{name} reached the upstream: {r:?}"
            );
        }
    }
    h.finish().await;
}

/// Forwarding-identity fields (2.13) do not sway the proxy's own decisions:
/// `listen.allow` goes by the socket's address, `deny_paths` by the request's
/// path.
#[tokio::test]
async fn forwarding_identity_fields_do_not_sway_allow_or_deny() {
    let h = Setup::default()
        .listen("allow = [\"10.0.0.0/8\", \"1.2.3.4/32\"]")
        .start()
        .await;
    let (res, _) = send(&http1_client(), spoofed(&h.url("/1/x"))).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(h.sim.received().is_empty());
    h.stop().await;

    let h = Setup::default().start().await;
    let mut req = spoofed(&h.url("/oauth2/token"));
    req.headers_mut()
        .insert("x-original-url", "/1/user/-/profile.json".parse().unwrap());
    let (res, _) = send(&http1_client(), req).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(proxy_error(&res), Some("forbidden"));
    assert!(h.sim.received().is_empty());
    h.finish().await;
}

/// Other places a credential can ride (2.06): a bearer token in the query
/// (`access_token`, RFC 6750 §2.3), however spelled, is 400 and never
/// forwarded: a client cannot act under another identity. Names that only
/// resemble it pass.
#[tokio::test]
async fn an_access_token_in_the_query_is_refused() {
    let h = Setup::default().start().await;
    for client in [http1_client(), h2c_client()] {
        let before = h.sim.api_started();
        for query in [
            "access_token=CLIENTAUTH_CANARY",
            "a=1&access_token=CLIENTAUTH_CANARY",
            "a=1&+access%5Ftoken+=CLIENTAUTH_CANARY",
            "ACCESS_TOKEN=CLIENTAUTH_CANARY",
            "access%5Ftoken=CLIENTAUTH_CANARY",
            "access_token",
        ] {
            let (res, body) = send(&client, get(&h.url(&format!("/1/x?{query}")))).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{query}");
            assert_fitbit_error(&body, "bad_request");
            assert_no_canary(query, &body);
        }
        assert_nothing_forwarded_since(&h, before, "access_token in the query");
        for query in ["access_tokens=1", "x=access_token", "token=1"] {
            let (res, _) = send(&client, get(&h.url(&format!("/1/x?{query}")))).await;
            assert_eq!(res.status(), StatusCode::OK, "{query}");
        }
    }
    assert_eq!(h.sim.received().len(), 6);
    assert_invariants(&h);
}

/// End-to-end fields pass unchanged (2.15): repeated fields keep their order
/// both ways (RFC 9110 §5.3), and several `Set-Cookie` lines reach the client
/// as they left the upstream, to an HTTP/1.1 and an HTTP/2 client alike.
#[tokio::test]
async fn repeated_fields_and_set_cookie_keep_their_order() {
    let answer = "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nX-Rep: 1\r\nSet-Cookie: b=2, c\r\nX-Rep: 2\r\nSet-Cookie: d=4\r\nAccept-Locale: en_GB\r\nContent-Length: 0\r\n\r\n";
    let raw = RawUpstream::start(move |_| vec![faulty::send(answer)]).await;
    let h = Setup::default().upstream_url(raw.url()).start().await;
    for client in [http1_client(), h2c_client()] {
        let mut req = get(&h.url("/1/x"));
        for v in ["3", "1", "2"] {
            req.headers_mut().append("x-rep", v.parse().unwrap());
        }
        req.headers_mut()
            .insert("accept-language", "fr_FR".parse().unwrap());
        let (res, _) = send(&client, req).await;
        assert_eq!(res.status(), StatusCode::OK);
        let all = |name: &str| -> Vec<String> {
            res.headers()
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(all("set-cookie"), ["a=1; Path=/", "b=2, c", "d=4"]);
        assert_eq!(all("x-rep"), ["1", "2"]);
        assert_eq!(all("accept-locale"), ["en_GB"]);
        let head = raw.seen().last().unwrap().head.to_ascii_lowercase();
        let reps: Vec<&str> = head
            .lines()
            .filter_map(|l| l.strip_prefix("x-rep: "))
            .collect();
        assert_eq!(reps, ["3", "1", "2"], "{head}");
        assert!(head.contains("accept-language: fr_fr"), "{head}");
    }
    assert_invariants(&h);
}

/// How one header field was represented in HPACK (RFC 7541 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repr {
    Indexed(usize),
    /// Literal with incremental indexing (enters the dynamic table).
    Incremental,
    WithoutIndexing,
    NeverIndexed,
}

fn hpack_int(block: &[u8], at: &mut usize, prefix: u8) -> usize {
    let max = (1usize << prefix) - 1;
    let mut value = (block[*at] as usize) & max;
    *at += 1;
    if value == max {
        let mut shift = 0;
        loop {
            let b = block[*at];
            *at += 1;
            value += ((b & 0x7f) as usize) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    value
}

fn skip_string(block: &[u8], at: &mut usize) {
    let len = hpack_int(block, at, 7);
    *at += len;
}

/// Every field of a header block as `(representation, name index)`; a
/// literal name counts as index 0. Strings are skipped, not decoded.
fn representations(block: &[u8]) -> Vec<(Repr, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < block.len() {
        let b = block[at];
        let (repr, prefix) = match b {
            _ if b & 0x80 != 0 => {
                let idx = hpack_int(block, &mut at, 7);
                out.push((Repr::Indexed(idx), idx));
                continue;
            }
            _ if b & 0xc0 == 0x40 => (Repr::Incremental, 6),
            _ if b & 0xe0 == 0x20 => {
                hpack_int(block, &mut at, 5); // dynamic table size update
                continue;
            }
            _ if b & 0xf0 == 0x10 => (Repr::NeverIndexed, 4),
            _ => (Repr::WithoutIndexing, 4),
        };
        let name = hpack_int(block, &mut at, prefix);
        if name == 0 {
            skip_string(block, &mut at);
        }
        skip_string(block, &mut at);
        out.push((repr, name));
    }
    out
}

/// A TLS upstream speaking raw HTTP/2: records the SNI of every handshake
/// and the HPACK representations of every request's header block, and
/// answers each request `200` with no body.
async fn hpack_upstream(
    ca: &fitbit_proxy::sim::TestCa,
) -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(Option<String>, Vec<(Repr, usize)>)>,
) {
    use support::h2frames::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (chain, key) = ca.issue(&["localhost"]);
    let acceptor = support::faulty::tls_acceptor(chain, key, &[b"h2"]);
    let (listener, addr) = support::raw_upstream::listener().await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let mut preface = [0u8; 24];
                if tls.read_exact(&mut preface).await.is_err() {
                    return;
                }
                let _ = tls.write_all(&frame(SETTINGS, 0, 0, &[])).await;
                while let Some(f) = read_frame(&mut tls).await {
                    match f.kind {
                        SETTINGS if f.flags & 0x1 == 0 => {
                            let _ = tls.write_all(&frame(SETTINGS, 0x1, 0, &[])).await;
                        }
                        HEADERS => {
                            // No padding or priority from hyper's client.
                            let _ = tx.send((sni.clone(), representations(&f.payload)));
                            // 0x88: indexed `:status: 200`.
                            let answer =
                                frame(HEADERS, END_STREAM | END_HEADERS, f.stream, &[0x88]);
                            let _ = tls.write_all(&answer).await;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    (addr, rx)
}

/// The token is marked sensitive, and what identifies the request to U (2.07,
/// 2.08): toward an HTTP/2 upstream the Bearer token goes out as a
/// never-indexed literal (`0001xxxx`, RFC 7541 §6.2.3) on every request, so
/// it never enters HPACK's dynamic table; the TLS SNI is the upstream's host
/// (`localhost` here), whatever the client's `Host` said.
#[tokio::test]
async fn the_token_is_never_indexed_and_sni_names_the_upstream() {
    let ca = fitbit_proxy::sim::TestCa::new();
    let (addr, mut seen) = hpack_upstream(&ca).await;
    let url = format!("https://localhost:{}", addr.port());
    let h = Setup::default()
        .upstream_url(url)
        .trust(ca.cert_pem())
        .start()
        .await;
    for client in [http1_client(), h2c_client()] {
        for _ in 0..2 {
            let mut req = get(&h.url("/1/x"));
            req.headers_mut()
                .insert("host", "fitbit-proxy.internal".parse().unwrap());
            let (res, _) = send(&client, req).await;
            assert_eq!(res.status(), StatusCode::OK);
        }
    }
    const AUTHORIZATION: usize = 23; // RFC 7541 Appendix A
    for _ in 0..4 {
        let (sni, fields) = seen.recv().await.expect("a request reached U");
        assert_eq!(sni.as_deref(), Some("localhost"));
        let auth: Vec<_> = fields.iter().filter(|(_, n)| *n == AUTHORIZATION).collect();
        assert_eq!(auth, [&(Repr::NeverIndexed, AUTHORIZATION)], "{fields:?}");
    }
    assert_invariants(&h);
}
