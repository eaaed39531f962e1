//! An HTTP/2 upstream: a stream reset mid-body, and GOAWAY (or a silent
//! close) with requests on both sides of it.

use super::*;
use std::time::Duration;

use crate::support::faulty::{self};
use http::StatusCode;
use http_body_util::BodyExt;

/// The proxy in front of a [`faulty::GoawayUpstream`].
async fn start_goaway(rst_first: bool) -> (Harness, faulty::GoawayUpstream) {
    let pki = faulty::Pki::new();
    let up = faulty::GoawayUpstream::start(&pki, rst_first).await;
    (start_trusting(up.url(), &pki).await, up)
}

async fn start_h2(end: faulty::H2End) -> (Harness, faulty::H2Upstream) {
    let pki = faulty::Pki::new();
    let up = faulty::H2Upstream::start(&pki, end).await;
    let h = start_trusting(up.url(), &pki).await;
    (h, up)
}

/// U resets in the middle of the body (4.22), an HTTP/2 upstream: headers
/// announcing 1000 bytes, 10 of them, then RST_STREAM. An HTTP/1.1 client's
/// connection closes short of the length; an h2c client's stream fails rather
/// than ending. The upstream connection goes on serving.
#[tokio::test]
async fn an_h2_upstream_reset_mid_body_reaches_the_client_as_a_cut_answer() {
    let (h, up) = start_h2(faulty::H2End::Never).await;
    assert_cut_short(
        &raw_exchange(h.proxy, &get_close("/rst")).await,
        "h1 client",
    );
    let res = h2c_client().request(get(&h.url("/rst"))).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await;
    assert!(body.is_err(), "an h2 stream reset upstream ended cleanly");
    let (res, body) = send(&http1_client(), get(&h.url("/ok"))).await;
    assert_eq!((res.status().as_u16(), &body[..]), (200, &b"{}"[..]));
    let conns: Vec<_> = up.seen().iter().map(|(c, _)| *c).collect();
    assert_eq!(conns, [0, 0, 0], "one multiplexed connection throughout");
    assert_outcomes(&h, &[(("upstream", "200"), 3.0)]).await;
    h.finish().await;
}

/// GOAWAY from an h2 upstream (4.28): an upstream that, after its first
/// answer on a connection, sends GOAWAY(NO_ERROR, last stream id) and closes
/// — or closes without a GOAWAY. The pooled connection is dropped: every
/// later request succeeds, each on a new connection.
#[tokio::test]
async fn after_goaway_or_a_silent_close_h2_requests_go_to_a_new_connection() {
    for end in [faulty::H2End::Goaway, faulty::H2End::Close] {
        let (h, up) = start_h2(end).await;
        let client = http1_client();
        for n in 1..=3 {
            let (res, body) = send(&client, get(&h.url("/ok"))).await;
            assert_eq!(res.status(), 200, "{end:?} #{n}: {body:?}");
            eventually(Duration::from_secs(5), || up.closed() >= n).await;
        }
        let conns: Vec<_> = up.seen().iter().map(|(c, _)| *c).collect();
        assert_eq!(conns, [0, 1, 2], "{end:?}");
        assert_outcomes(&h, &[(("upstream", "200"), 3.0)]).await;
        h.finish().await;
    }
}

/// GOAWAY from an h2 upstream (4.28), streams on both sides of it: two
/// requests in flight on one h2 connection (streams 1 and 3) when the
/// upstream sends GOAWAY(NO_ERROR, last stream id 1). Stream 1 completes;
/// stream 3, which the upstream says it never processed, is sent again on a
/// new connection and succeeds.
#[tokio::test]
async fn a_stream_above_the_goaway_last_stream_id_is_retried_on_a_new_connection() {
    let (h, up) = start_goaway(false).await;
    let (a, b) = (http1_client(), http1_client());
    let (first, second) =
        tokio::join!(send(&a, get(&h.url("/1/a"))), send(&b, get(&h.url("/1/b"))));
    assert_eq!(
        (first.0.status(), &first.1[..]),
        (StatusCode::OK, &b"{}"[..])
    );
    assert_eq!(
        (second.0.status(), &second.1[..]),
        (StatusCode::OK, &b"{}"[..])
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[..2], [(0, 1), (0, 3)], "{seen:?}");
    assert_ne!(seen[2].0, 0, "the retry used a new connection: {seen:?}");
    assert_outcomes(&h, &[(("upstream", "200"), 2.0)]).await;
    h.finish().await;
}

/// GOAWAY from an h2 upstream (4.28), right after RST_STREAM (Envoy
/// CVE-2023-35945): the reset request gets 502 (the upstream may have
/// processed it, so it is not resent), and the next requests succeed on a new
/// connection.
#[tokio::test]
async fn a_reset_followed_by_goaway_gives_502_once_then_a_new_connection() {
    let (h, up) = start_goaway(true).await;
    let client = http1_client();
    let (res, body) = send(&client, get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), 502, "{body:?}");
    assert_eq!(proxy_error(&res), Some("upstream_unreachable"));
    for _ in 0..3 {
        let (res, body) = send(&client, get(&h.url("/1/x"))).await;
        assert_eq!((res.status(), &body[..]), (StatusCode::OK, &b"{}"[..]));
    }
    let seen = up.seen();
    assert_eq!(seen.iter().filter(|(c, _)| *c == 0).count(), 1, "{seen:?}");
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_outcomes(&h, &[(("proxy", "502"), 1.0), (("upstream", "200"), 3.0)]).await;
    h.finish().await;
}

/// What identifies the request to an HTTP/2 upstream (2.08): whatever the
/// client names (`Host: fitbit-proxy.internal` over HTTP/1.1; over h2c
/// `:authority: p.internal`, alone or with `host: x`), the upstream gets
/// `:authority` equal to `upstream.url`'s host and port, and no `host` field
/// that differs from it.
#[tokio::test]
async fn an_h2_upstream_sees_its_own_authority_and_no_other_host() {
    let (h, up) = start_h2(faulty::H2End::Never).await;
    let own = format!("localhost:{}", up.addr.port());
    let raw = "GET /1/h1 HTTP/1.1\r\nHost: fitbit-proxy.internal\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(h.proxy, raw).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let tcp = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut client, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut forwarded = 1;
    for host in [None, Some("x")] {
        let mut req = http::Request::get("http://p.internal/1/h2");
        if let Some(host) = host {
            req = req.header("host", host);
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = client.send_request(req).await.unwrap();
        // A `host` that differs from `:authority` may be refused (1.21);
        // whatever is forwarded names the upstream.
        assert!(
            res.status() == StatusCode::OK || res.status() == StatusCode::BAD_REQUEST,
            "host {host:?}: {}",
            res.status()
        );
        forwarded += usize::from(res.status() == StatusCode::OK);
    }
    let seen = up.authorities();
    assert_eq!(seen.len(), forwarded, "{seen:?}");
    for (authority, hosts) in &seen {
        assert_eq!(authority.as_deref(), Some(own.as_str()), "{seen:?}");
        assert!(hosts.iter().all(|host| *host == own), "{seen:?}");
    }
    h.finish().await;
}
