//! Slow and broken bodies in both directions (RELIABILITY.md §3): a client
//! that stalls or cuts short its upload (3.05), and an upstream that sends
//! its headers and then stalls the body (3.06). Over loopback with a short
//! `header_read_timeout` (the client body's idle bound) and
//! `request_timeout` (the upstream body's idle bound), so each case takes
//! about a second. Every case ends with the global invariants.

use std::convert::Infallible;
use std::time::Duration;

use super::impatient;
use crate::support::invariants::*;
use crate::support::*;
use bytes::Bytes;
use fitbit_proxy::sim::Sim;
use futures_util::StreamExt;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const PATH: &str = "/1/user/-/foods/log.json";

async fn start() -> Harness {
    impatient().admin().start().await
}

/// No request body reached the upstream whole.
fn assert_no_complete_upload(sim: &Sim, declared: u64) {
    for r in sim.received() {
        assert!(
            r.body_len < declared,
            "the upstream got the whole body of a request the client never finished: {r:?}"
        );
    }
}

/// Sends a POST head declaring `declared` bytes and the first `sent` of
/// them. Bodies of up to 64 KiB are read whole by the proxy before anything
/// is forwarded (kept for a replay after a revoked token); larger ones
/// stream, so the upstream request is under way when the upload breaks.
async fn start_upload(h: &Harness, declared: usize, sent: usize) -> TcpStream {
    let before = h.sim.api_started();
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let head = format!("POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b'a'; sent]).await.unwrap();
    if declared > 64 * 1024 {
        eventually(Duration::from_secs(5), || h.sim.api_started() > before).await;
    } else {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stream
}

/// Both sizes: read whole by the proxy, and streamed to the upstream.
const UPLOADS: [(usize, usize); 2] = [(100, 10), (1 << 20, 100 * 1024)];

/// A slow upload (3.05): part of the declared body, then nothing. The body
/// idle timeout (`header_read_timeout`) ends the upload: 408
/// `request_timeout` in Fitbit's shape, the connection closed, the upstream
/// request aborted. A body that trickles faster than the bound goes through.
#[tokio::test]
async fn a_stalled_upload_gets_408_and_the_upstream_request_is_aborted() {
    let h = start().await;
    for (declared, sent) in UPLOADS {
        let started = Instant::now();
        let before = h.sim.received().len();
        let forwarded = h.sim.api_started();
        let mut stream = start_upload(&h, declared, sent).await;
        if declared > 64 * 1024 {
            // The streamed upload's upstream request ends, cut short: the
            // simulator records a request once its body ends, by an error
            // here, since the proxy dropped it.
            let aborted = || {
                h.sim.received()[before..]
                    .iter()
                    .any(|r| r.body_len >= sent as u64 && r.body_len < declared as u64)
            };
            eventually(Duration::from_secs(5), aborted).await;
        }
        let raw = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        if declared <= 64 * 1024 {
            // Read whole before forwarding: the upstream never saw it.
            assert_eq!(h.sim.api_started(), forwarded, "{declared}: forwarded");
        }
        let waited = started.elapsed();
        assert_eq!(first_status(&raw), 408, "{declared}: {raw}");
        assert!(
            raw.to_ascii_lowercase()
                .contains("x-fitbit-proxy-error: request_timeout"),
            "{raw}"
        );
        let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert_fitbit_error(body.as_bytes(), "request_timeout");
        assert!(
            waited >= Duration::from_millis(900),
            "answered after {waited:?}"
        );
        assert_no_complete_upload(&h.sim, declared as u64);
    }

    // One byte every 400 ms never leaves the body idle for 1 s.
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    for byte in b"12345" {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(&[*byte]).await.unwrap();
    }
    let raw = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(first_status(&raw), 200, "{raw}");
    assert!(raw.contains("\"bodyLen\":5"), "{raw}");

    assert_outcomes(&h, &[(("proxy", "408"), 2.0), (("upstream", "200"), 1.0)]).await;
    h.finish().await;
}

/// A slow upload (3.05) over h2c: one DATA frame, then the stream stays open
/// and silent.
#[tokio::test]
async fn a_stalled_h2_upload_gets_408() {
    let h = start().await;
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let frames = futures_util::stream::iter([Ok::<_, Infallible>(Frame::data(
        Bytes::from_static(b"0123456789"),
    ))])
    .chain(futures_util::stream::pending());
    let req = Request::post(h.url(PATH))
        .header("content-length", "100")
        .body(StreamBody::new(frames))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(5), client.request(req))
        .await
        .expect("answered within 5 s")
        .expect("an answer");
    assert_eq!(res.status(), 408);
    assert_eq!(res.headers()["x-fitbit-proxy-error"], "request_timeout");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_fitbit_error(&body, "request_timeout");
    assert_no_complete_upload(&h.sim, 100);
    assert_outcomes(&h, &[(("proxy", "408"), 1.0)]).await;
    h.finish().await;
}

/// The open bug found by benches/soak.sh: a client that cuts its upload
/// short (here: ends its half of the connection part-way) was
/// answered and counted as 502 `upstream_unreachable`. It is the client's
/// fault: 400 `bad_request`, and the metrics do not blame the upstream.
#[tokio::test]
async fn an_upload_cut_short_is_the_clients_400_not_a_502() {
    let h = start().await;
    for (declared, sent) in UPLOADS {
        let mut stream = start_upload(&h, declared, sent).await;
        stream.shutdown().await.unwrap();
        let raw = read_until_closed(&mut stream, Duration::from_secs(5)).await;
        if !raw.is_empty() {
            assert_eq!(first_status(&raw), 400, "{declared}: {raw}");
            assert!(raw.contains("the request body ended early"), "{raw}");
        }
        assert_no_complete_upload(&h.sim, declared as u64);
    }
    // Counted once, as the client's, whether or not the answer could be
    // written back.
    let outcomes = request_outcomes(&h).await;
    assert!(
        !outcomes.keys().any(|(_, code)| code.starts_with('5')),
        "a client's broken upload was counted as a server error: {outcomes:?}"
    );
    assert_eq!(
        outcomes.get(&("proxy".into(), "400".into())),
        Some(&2.0),
        "{outcomes:?}"
    );
    h.finish().await;
}

/// A raw upstream: answers every request with headers announcing 1000
/// bytes, sends 10 of them, then holds the connection silent. Reports, for
/// each connection, how long it stayed open after the partial body (the
/// proxy must drop it rather than pool it), bounded at 30 s.
async fn stalling_upstream() -> (
    std::net::SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<Duration>,
) {
    raw_upstream::answer_each(|mut conn| async move {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: 1000\r\n\r\n0123456789";
        conn.write_all(answer).await.ok()?;
        let sent = Instant::now();
        let mut buf = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
        })
        .await;
        Some(sent.elapsed())
    })
    .await
}

/// An upstream that stalls its body (3.06): it sends its headers and part of
/// the body, then stalls. After `upstream.request_timeout` (1 s here) with no
/// body data the response is aborted: an HTTP/1 client sees its connection
/// closed before the declared length, an h2c client a stream error; the proxy
/// drops its connection to the upstream instead of holding (or pooling) it.
#[tokio::test]
async fn an_upstream_that_stalls_its_body_is_cut_off() {
    let (raw_addr, mut closed) = stalling_upstream().await;
    let h = impatient()
        .upstream("request_timeout = \"1s\"")
        .upstream_url(format!("http://{raw_addr}"))
        .start()
        .await;
    let proxy = h.proxy;

    // HTTP/1: headers and 10 bytes, then the connection ends short.
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream
        .write_all(format!("GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let raw = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert_eq!(first_status(&raw), 200, "{raw}");
    assert!(raw.ends_with("\r\n\r\n0123456789"), "{raw}");
    assert!(
        waited >= Duration::from_millis(900),
        "cut off after {waited:?}"
    );
    let held = tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the proxy let go of the upstream connection")
        .unwrap();
    assert!(held < Duration::from_secs(30), "held for {held:?}");

    // h2c: the stream fails rather than hanging.
    let client = h2c_client();
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(get(&format!("http://{proxy}{PATH}"))),
    )
    .await
    .expect("headers within 5 s")
    .expect("headers");
    assert_eq!(res.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect())
        .await
        .expect("the body ends within 5 s");
    assert!(body.is_err(), "a stalled body must not end cleanly");
    let held = tokio::time::timeout(Duration::from_secs(5), closed.recv())
        .await
        .expect("the proxy let go of the upstream connection")
        .unwrap();
    assert!(held < Duration::from_secs(30), "held for {held:?}");

    h.finish().await;
}
