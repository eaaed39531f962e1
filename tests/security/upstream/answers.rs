//! What an upstream answers, and what of it reaches the client: answers
//! that do not parse, 1xx, HEAD and 304, hop-by-hop fields, redirects
//! (never followed), bodies byte for byte, and fields echoing the token.

use super::*;

use crate::support::faulty::{self, RawUpstream, Step};
use http::Request;
use http_body_util::Full;

/// Responses from U that do not parse (4.19): what a broken upstream may
/// send, and whether the proxy answers 502 (`true`) or passes a response
/// cleaned of the bad framing (`false`; only the bare-LF answer is sound
/// enough to keep its connection).
const UNPARSABLE: &[(&str, &[u8], bool)] = &[
    ("content-length abc", b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n{}", true),
    ("two content-lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\n{}abc", true),
    ("te and cl, smuggled", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nResponse splitting attach", true),
    ("chunked not last", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n2\r\n{}\r\n0\r\n\r\n", true),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 2\r\n\r\n{}", true),
    ("bare lf", b"HTTP/1.1 200 OK\ncontent-length: 2\n\n{}", false),
    ("huge head", b"", true),
    ("204 with a body", b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nSMUGGLED", false),
    ("bytes after the body", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nSMUGGLED", false),
    ("101 unasked", b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nSMUGGLED", true),
    ("status 2000", b"HTTP/1.1 2000 OK\r\ncontent-length: 2\r\n\r\n{}", true),
    ("garbage", b"HELLO THERE\r\n\r\n", true),
];

fn huge_head() -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
    for i in 0..300 {
        head.extend(format!("x-filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    head.extend(b"\r\n{}");
    head
}

/// Responses from U that do not parse (4.19): each broken answer gives 502
/// `upstream_unreachable` in Fitbit's shape, or (where hyper can frame it
/// safely) a clean answer; the bytes beyond the framing never reach the
/// client, and the connection it came on carries no other request.
#[tokio::test]
async fn unparsable_answers_get_502_and_their_connection_is_not_reused() {
    let raw = RawUpstream::start(|s| {
        let Some(i) = s.path().strip_prefix("/bad/") else {
            return vec![faulty::send(OK)];
        };
        let answer = match UNPARSABLE[i.parse::<usize>().unwrap()] {
            ("huge head", ..) => huge_head(),
            (_, bytes, _) => bytes.to_vec(),
        };
        // Left open: only the proxy decides not to reuse it.
        vec![Step::Send(answer)]
    })
    .await;
    let h = start(&raw).await;
    let client = http1_client();
    for (i, (what, _, is_502)) in UNPARSABLE.iter().enumerate() {
        let path = format!("/bad/{i}");
        let text = raw_exchange(h.proxy, &get_close(&path)).await;
        println!("{what}: {}", text.lines().next().unwrap_or_default());
        if *is_502 {
            assert_502(&text, what);
        } else {
            assert_ne!(first_status(&text), 502, "{what}: {text}");
        }
        assert!(
            !text.contains("SMUGGLED") && !text.contains("splitting"),
            "{what}: {text}"
        );
        // The next request does not land on the broken connection.
        let (res, _) = send(&client, get(&h.url("/ok"))).await;
        assert_eq!(res.status(), 200, "{what}");
        let seen = raw.seen();
        let bad: Vec<_> = seen.iter().filter(|s| s.path() == path).collect();
        assert_eq!(bad.len(), 1, "{what}");
        let reused = seen
            .iter()
            .any(|s| s.conn == bad[0].conn && s.nth > bad[0].nth);
        assert!(
            !reused || *what == "bare lf",
            "{what}: its connection was reused"
        );
    }
    let refused = UNPARSABLE.iter().filter(|c| c.2).count() as f64;
    let outcomes = [
        (("proxy", "502"), refused),
        (("upstream", "200"), UNPARSABLE.len() as f64 + 2.0),
        (("upstream", "204"), 1.0),
    ];
    assert_outcomes(&h, &outcomes).await;
    raw.assert_clean();
    h.finish().await;
}

/// 1xx responses, HEAD and 304 (4.20): `103 Early Hints` and `100 Continue`
/// before the answer are dropped (hyper's client consumes 1xx; the proxy
/// passes only the final answer), which arrives intact. A HEAD answer's
/// `Content-Length: 1000` and a 304's are passed on without a body and
/// without waiting for one, and the upstream connection stays usable.
#[tokio::test]
async fn interim_answers_are_dropped_and_head_and_304_come_back_bodiless() {
    let raw = RawUpstream::start(|s| {
        let answer: &[u8] = match s.path() {
            "/early" => b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            "/head" => b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
            "/304" => b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 1000\r\n\r\n",
            _ => OK,
        };
        vec![faulty::send(answer)]
    })
    .await;
    let h = start(&raw).await;

    let got = raw_exchange(h.proxy, &get_close("/early")).await;
    let text = &got;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        !text.contains("HTTP/1.1 103") && !text.contains("HTTP/1.1 100"),
        "{text}"
    );
    assert_eq!(split(&got).1, b"hello");

    let got = raw_exchange(
        h.proxy,
        "HEAD /head HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = split(&got);
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(head.contains("content-length: 1000"), "{head}");
    assert!(body.is_empty(), "{body:?}");

    let got = raw_exchange(h.proxy, &get_close("/304")).await;
    let (head, body) = split(&got);
    assert!(head.starts_with("http/1.1 304"), "{head}");
    assert!(head.contains("etag: \"v1\""), "{head}");
    assert!(body.is_empty(), "{body:?}");

    // One connection carried all three, then a fourth request.
    let (res, _) = send(&http1_client(), get(&h.url("/ok"))).await;
    assert_eq!(res.status(), 200);
    let conns: Vec<_> = raw.seen().iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 0, 0, 0], "{conns:?}");
    assert_outcomes(
        &h,
        &[(("upstream", "200"), 3.0), (("upstream", "304"), 1.0)],
    )
    .await;
    raw.assert_clean();
    h.finish().await;
}

const HOP_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authenticate: Basic realm=x\r\nUpgrade: h2c\r\nTrailer: X-T\r\nX-Kept: yes\r\ncontent-length: 2\r\n\r\n{}";

/// Hop-by-hop fields in the response (2.04): an answer full of them, to an
/// HTTP/1.1 and an h2c client: neither sees any of them (the end-to-end
/// `X-Kept` passes). The upstream said `Connection: close` but leaves the
/// socket open: the proxy does not pool it, so the next request arrives on a
/// new connection.
#[tokio::test]
async fn hop_by_hop_answer_fields_are_stripped_and_connection_close_is_not_pooled() {
    let raw = RawUpstream::start(|_| vec![faulty::send(HOP_ANSWER)]).await;
    let h = start(&raw).await;
    let hop = [
        "connection",
        "x-internal",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "upgrade",
        "trailer",
        "transfer-encoding",
    ];
    for (client, name) in [(http1_client(), "h1"), (h2c_client(), "h2c")] {
        for _ in 0..2 {
            let (res, body) = send(&client, get(&h.url("/1/x"))).await;
            assert_eq!(res.status(), 200, "{name}");
            assert_eq!(&body[..], b"{}");
            assert_eq!(res.headers()["x-kept"], "yes", "{name}");
            for field in hop {
                assert!(
                    !res.headers().contains_key(field),
                    "{name}: {field} reached C"
                );
            }
        }
    }
    let conns: Vec<_> = raw.seen().iter().map(|s| (s.conn, s.nth)).collect();
    assert_eq!(
        conns,
        [(0, 0), (1, 0), (2, 0), (3, 0)],
        "a closed connection was reused"
    );
    assert_outcomes(&h, &[(("upstream", "200"), 4.0)]).await;
    raw.assert_clean();
    h.finish().await;
}

/// Redirects from U are never followed (2.16): they go back to the client
/// verbatim and are never followed: one request reaches the upstream per
/// redirect, and nothing connects to the redirect's target.
#[tokio::test]
async fn upstream_redirects_are_passed_back_not_followed() {
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!("http://{}/steal", elsewhere.local_addr().unwrap());
    let (r302, r307) = (
        format!("HTTP/1.1 302 Found\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n"),
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: /1/y\r\ncontent-length: 3\r\n\r\nabc"
            .to_owned(),
    );
    let raw = RawUpstream::start(move |s| match s.path() {
        "/302" => vec![faulty::send(&r302)],
        _ => vec![faulty::send(&r307)],
    })
    .await;
    let h = start(&raw).await;
    let client = http1_client();
    for (path, status, location) in [("/302", 302, target.as_str()), ("/307", 307, "/1/y")] {
        let (res, _) = send(&client, get(&h.url(path))).await;
        assert_eq!(res.status(), status);
        assert_eq!(res.headers()["location"], location);
        assert_eq!(conns_of(&raw.seen(), path).len(), 1, "{path}");
    }
    assert_eq!(raw.seen().len(), 2, "a redirect was followed");
    // Following it would have connected before the answer came back.
    let accepted = elsewhere.accept().map_err(|e| e.kind());
    assert!(
        matches!(accepted, Err(std::io::ErrorKind::WouldBlock)),
        "the proxy connected to the redirect target"
    );
    raw.assert_clean();
    h.finish().await;
}

/// Deterministic bytes that no coding would leave alone.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// No body transformation (3.17): bodies pass byte for byte both ways, at odd
/// sizes, and a `Content-Encoding: gzip` answer (here bytes that are not even
/// valid gzip, so any attempt to decode would show) is neither decoded nor
/// re-encoded: its header and bytes arrive as sent.
#[tokio::test]
async fn bodies_pass_byte_for_byte_both_ways() {
    const SIZES: [usize; 6] = [1, 7, 16_383, 16_385, 65_537, 1_048_577];
    let raw = RawUpstream::start(|s| {
        let len: usize = s.path().trim_start_matches('/').parse().unwrap_or(0);
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        )
        .into_bytes();
        answer.extend(noise(len, len as u32));
        vec![Step::Send(answer)]
    })
    .await;
    let h = start(&raw).await;
    for (client, name) in [(http1_client(), "h1"), (h2c_client(), "h2c")] {
        for len in SIZES {
            let upload = noise(len, len as u32 + 1);
            let req = Request::post(h.url(&format!("/{len}")))
                .header("content-encoding", "gzip")
                .body(Full::from(upload.clone()))
                .unwrap();
            let (res, body) = send(&client, req).await;
            assert_eq!(res.status(), 200, "{name} {len}");
            assert_eq!(res.headers()["content-encoding"], "gzip", "{name} {len}");
            assert!(
                body[..] == noise(len, len as u32)[..],
                "{name} {len}: download changed"
            );
            let seen = raw.seen();
            let got = &seen.last().unwrap();
            assert!(got.body == upload, "{name} {len}: upload changed");
            assert!(got
                .head
                .to_ascii_lowercase()
                .contains("content-encoding: gzip"));
        }
    }
    raw.assert_clean();
    h.finish().await;
}

/// The token never appears in responses (2.09): an upstream echoing the
/// request's `Authorization` in answer fields (one named field, one inside a
/// longer value, one on a second `Set-Cookie` line). The proxy drops every
/// field that contains the live token and keeps the rest; the client never
/// sees it (G2).
#[tokio::test]
async fn answer_fields_echoing_the_token_are_dropped() {
    let raw = RawUpstream::start(|s| {
        let auth = s
            .head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .unwrap_or_default()
            .to_owned();
        let token = auth.trim_start_matches("Bearer ");
        vec![faulty::send(format!(
            "HTTP/1.1 200 OK\r\nx-echo-authorization: {auth}\r\nx-debug: req=1;tok={token};end\r\nset-cookie: a=1\r\nset-cookie: t={token}\r\nx-kept: yes\r\ncontent-length: 2\r\n\r\n{{}}"
        ))]
    })
    .await;
    let h = start(&raw).await;
    for client in [http1_client(), h2c_client()] {
        let got = raw_exchange(h.proxy, &get_close("/1/echo")).await;
        let (head, _) = split(&got);
        assert!(head.contains("x-kept: yes"), "{head}");
        for field in ["x-echo-authorization", "x-debug", "set-cookie"] {
            assert!(!head.contains(field), "{field} reached C: {head}");
        }
        let (res, body) = send(&client, get(&h.url("/1/echo"))).await;
        assert_eq!(res.headers()["x-kept"], "yes");
        let fields = format!("{:?}", res.headers());
        assert_no_canary("h2c/h1 answer fields", fields.as_bytes());
        assert_no_canary("the body", &body);
    }
    raw.assert_clean();
    h.finish().await;
}
