//! The listener: inbound TLS with ALPN, the source allow-list, HTTP/2
//! connections that go quiet, and oversized streamed uploads to an HTTP/2
//! upstream.

mod support;

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use fitbit_proxy::sim::TestCa;
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// Writes a certificate and key for `localhost` issued by `ca`; returns
/// the `[listen]` lines that use them.
fn tls_listen_lines(dir: &std::path::Path, ca: &TestCa) -> String {
    let (chain, key) = ca.issue(&["localhost", "127.0.0.1"]);
    let cert_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
    std::fs::write(dir.join("proxy.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("proxy.key"), pem("PRIVATE KEY", key.secret_der())).unwrap();
    format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        dir.join("proxy.pem"),
        dir.join("proxy.key")
    )
}

#[tokio::test]
async fn inbound_tls_serves_http2_and_http1_by_alpn() {
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let h = Setup::default()
        .listen(&tls_listen_lines(certs.path(), &ca))
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
    let mut plain = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    plain
        .write_all(b"GET /1/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut buf)).await;
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

#[tokio::test(start_paused = true)]
async fn an_h2_connection_that_goes_quiet_after_the_preface_is_closed() {
    let h = Setup::default()
        .listen("header_read_timeout = \"5s\"")
        .start()
        .await;
    let mut s = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    // The preface and an empty SETTINGS frame, then silence: no PING answered.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(600), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "held open for 600 s");
    assert!(
        started.elapsed() <= Duration::from_secs(11),
        "closed only after {:?}",
        started.elapsed()
    );
    h.stop().await;
}

#[tokio::test]
async fn oversized_unsized_upload_to_an_http2_upstream_gets_413() {
    let h = Setup::default()
        .tls()
        .listen("max_request_body = 1000")
        .start()
        .await;
    let chunk = format!("{:x}\r\n{}\r\n", 600, "a".repeat(600));
    let raw = format!("POST /1/upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
    let out = raw_exchange(h.proxy, raw.as_bytes()).await;
    assert_eq!(first_status(&out), 413, "{out}");
    assert!(out.contains("payload_too_large"), "{out}");
    // A body within the limit still goes through over h2.
    let req = Request::post(h.url("/1/upload"))
        .body(Full::new(Bytes::from(vec![b'x'; 900])))
        .unwrap();
    assert_eq!(send(&http1_client(), req).await.0.status(), StatusCode::OK);
    h.stop().await;
}
