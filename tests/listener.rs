//! The listener, before any request is read: inbound TLS with ALPN, the
//! source allow-list (`listen.allow`) and `listen.max_connections`. How long
//! a silent or idle connection is kept is in tests/security (idle).

mod support;

use std::time::Duration;

use bytes::Bytes;
use fitbit_proxy::sim::TestCa;
use http::{StatusCode, Version};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::invariants::assert_outcomes;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn inbound_tls_serves_http2_and_http1_by_alpn() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let h = Setup::default()
        .listen(&tls_listen(certs.path(), &ca))
        .start()
        .await;
    let tls = ca.client_config();
    let url = format!("https://localhost:{}/1/tls.json", h.proxy.port());
    for (h2, want) in [(true, Version::HTTP_2), (false, Version::HTTP_11)] {
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls.clone())
            .https_only();
        let connector = if h2 {
            builder.enable_http2().build()
        } else {
            builder.enable_http1().build()
        };
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
            .http2_only(h2)
            .build(connector);
        let res = client.request(get(&url)).await.expect("TLS request");
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.version(), want);
    }
    assert_eq!(h.sim.received().len(), 2);
    // Plain HTTP on the TLS port gets nowhere.
    let mut plain = TcpStream::connect(h.proxy).await.unwrap();
    plain
        .write_all(b"GET /1/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (buf, _) = read_for(&mut plain, Duration::from_secs(10)).await;
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
    assert_eq!(h.sim.received().len(), 2);
    h.stop().await;
}

#[tokio::test]
async fn sources_outside_the_allow_list_get_403_before_anything_else() {
    let h = Setup::default()
        .listen("allow = [\"10.0.0.0/8\", \"::1\"]")
        .start()
        .await;
    let (res, body) = send(&http1_client(), get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(proxy_error(&res), Some("forbidden"));
    assert_fitbit_error(&body, "forbidden");
    assert!(h.sim.received().is_empty());
    assert_eq!(h.sim.token_fetches(), 1, "only the start-up fetch");
    h.stop().await;

    let h = Setup::default()
        .listen("allow = [\"127.0.0.0/8\"]")
        .start()
        .await;
    assert_eq!(
        send(&http1_client(), get(&h.url("/1/x"))).await.0.status(),
        StatusCode::OK
    );
    h.stop().await;
}

/// A source outside `listen.allow` gets its 403 through the access layer:
/// a request id and a count (and an access-log line, written by the same
/// record); the admin port is not subject to `listen.allow`.
#[tokio::test(start_paused = true)]
async fn a_source_outside_listen_allow_is_counted_and_gets_a_request_id() {
    let h = Setup::default()
        .listen("allow = [\"10.0.0.0/8\"]")
        .admin()
        .start()
        .await;
    let (res, _) = send(&http1_client(), get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(proxy_error(&res), Some("forbidden"));
    assert!(!res.headers()["x-request-id"].is_empty());
    assert_outcomes(&h, &[(("proxy", "403"), 1.0)]).await;
    assert!(h.sim.received().is_empty());
    h.stop().await;
}

#[tokio::test]
async fn connections_past_max_connections_are_closed_at_once() {
    let h = Setup::default().listen("max_connections = 2").start().await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(h.proxy).await.unwrap();
        // A request, answered, keeps each connection open and counted.
        s.write_all(b"GET /1/x HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(n > 0);
        held.push(s);
    }
    let mut third = TcpStream::connect(h.proxy).await.unwrap();
    let _ = third
        .write_all(b"GET /1/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let (got, closed) = read_for(&mut third, Duration::from_secs(10)).await;
    assert!(
        closed && got.is_empty(),
        "third connection was served: {got:?}"
    );
    drop(held);
    h.stop().await;
}
