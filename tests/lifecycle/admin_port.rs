//! The admin port is isolated from the data port (3.15): it never
//! forwards, the data port never serves admin paths, and a flood or a
//! slowloris on either leaves the other answering.

use std::time::Duration;

use http::StatusCode;

use super::SEC;
use crate::support::invariants::*;
use crate::support::*;

/// The admin port is isolated (3.15): the admin listener answers only its own
/// paths and never forwards (nothing reaches the upstream, no token is
/// attached); the proxy's port forwards `/healthz`, `/readyz` and `/metrics`
/// to the upstream like any path, and never serves them itself. A slowloris
/// connection held on the data port does not stop the admin port, nor 50 on
/// the admin port the data port.
#[tokio::test(start_paused = true)]
async fn the_admin_port_never_forwards_and_the_proxy_port_never_serves_admin_paths() {
    let h = Setup::default().admin().start().await;
    let client = http1_client();
    eventually(5 * SEC, || h.sim.tokens_issued() == 1).await;
    let before = h.sim.api_started();
    for path in [
        "/1/user/-/profile.json",
        "/sim/slow/1",
        "/oauth2/token",
        "/index.html",
    ] {
        let (res, body) = send(&client, get(&h.admin_url(path))).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_no_canary("an admin answer", &body);
    }
    let raw = raw_exchange(
        h.admin.unwrap(),
        b"GET http://evil.test/1/x HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(first_status(&raw) >= 400, "{raw}");
    assert_nothing_forwarded_since(&h, before, "requests to the admin port");

    let mut slowloris = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut slowloris, b"GET / HTTP/1.1\r\n")
        .await
        .unwrap();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (res, body) = send(&client, get(&h.url(path))).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let echo: serde_json::Value = serde_json::from_slice(&body).expect("the upstream's echo");
        assert_eq!(echo["path"], path, "{echo}");
        let (res, _) = send(&client, get(&h.admin_url(path))).await;
        assert_eq!(res.status(), StatusCode::OK, "admin {path}");
    }
    assert_eq!(h.sim.api_started(), before + 3);

    // And the other way: 50 slowloris heads held on the admin port do not
    // touch the data port, and the admin port still answers.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut conn = tokio::net::TcpStream::connect(h.admin.unwrap())
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut conn, b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(conn);
    }
    let (res, _) = send(&client, get(&h.url("/1/during"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (res, _) = send(&client, get(&h.admin_url("/healthz"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    drop((held, slowloris));
    h.finish().await;
}

/// Rapid Reset (1.24) on the data port: a client that opens 1 000 streams and
/// cancels each at once, on one connection after another, reading each until
/// the proxy cuts it off (at most 5 s), until `stop`; at most 5 000
/// connections. Returns how many it opened.
async fn rapid_reset_until(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u32 {
    use crate::support::h2frames::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut batch = PREFACE.to_vec();
    batch.extend(frame(SETTINGS, 0, 0, &[]));
    let block = request_block("GET", "/1/flood");
    for i in 0..1000u32 {
        batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block));
        batch.extend(frame(RST_STREAM, 0, 2 * i + 1, &CANCEL.to_be_bytes()));
    }
    let mut opened = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && opened < 5_000 {
        opened += 1;
        let Ok(Ok(mut conn)) =
            tokio::time::timeout(5 * SEC, tokio::net::TcpStream::connect(addr)).await
        else {
            continue;
        };
        let _ = tokio::time::timeout(5 * SEC, async {
            conn.write_all(&batch).await?;
            let mut sink = [0u8; 4096];
            while conn.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    }
    opened
}

/// The admin port is isolated (3.15) from a Rapid Reset flood (1.24) and a
/// slowloris (3.01) on the data port: while two clients flood it with rapid
/// resets and 50 slowloris heads sit on it, `/metrics` and `/readyz` are
/// scraped on the admin port once a second for ten rounds; each answers 200
/// within 5 s (a generous bound: real time, as floods need, on a shared
/// machine). Afterwards the data port serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_scrapes_answer_during_a_rapid_reset_flood_on_the_data_port() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let h = Setup::default().admin().start().await;
    eventually(5 * SEC, || h.sim.tokens_issued() == 1).await;
    let mut slowloris = Vec::new();
    for _ in 0..50 {
        let mut conn = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut conn, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        slowloris.push(conn);
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..2)
        .map(|_| tokio::spawn(rapid_reset_until(h.proxy, stop.clone())))
        .collect();
    let client = http1_client();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        for path in ["/metrics", "/readyz"] {
            let asked = tokio::time::Instant::now();
            let scrape = tokio::time::timeout(5 * SEC, send(&client, get(&h.admin_url(path))));
            let (res, _) = scrape
                .await
                .unwrap_or_else(|_| panic!("admin {path} not answered within 5 s"));
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            slowest = slowest.max(asked.elapsed());
        }
        tokio::time::sleep(SEC).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut connections = 0;
    for flood in floods {
        connections += flood.await.unwrap();
    }
    eprintln!(
        "3.15: {connections} rapid-reset connections of 1000 streams, {} reached the upstream; slowest admin answer {slowest:?}",
        h.sim.api_started()
    );
    assert!(connections >= 2, "the flood ran");
    let (res, _) = send(&h2c_client(), get(&h.url("/1/after"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    drop(slowloris);
    h.finish().await;
}

/// The data port is isolated from a slowloris on the admin port (3.15, 3.01):
/// 100 connections (more than its 64) trickle a request head into it, a byte
/// a second. The data port answers a request every second meanwhile without
/// waiting, and once the admin port's 10 s head deadline has dropped the
/// first 64, it answers again.
#[tokio::test(start_paused = true)]
async fn a_slowloris_on_the_admin_port_never_slows_the_data_port() {
    use tokio::io::AsyncWriteExt;
    let h = Setup::default().admin().start().await;
    let client = http1_client();
    eventually(5 * SEC, || h.sim.tokens_issued() == 1).await;
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut conn = tokio::net::TcpStream::connect(h.admin.unwrap())
            .await
            .unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        held.push(conn);
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(SEC).await;
            for conn in &mut held {
                let _ = conn.write_all(b"x").await;
            }
        }
    });
    for second in 0..15 {
        let asked = tokio::time::Instant::now();
        let (res, _) = send(&client, get(&h.url(&format!("/1/during/{second}")))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            asked.elapsed() < SEC,
            "second {second}: {:?}",
            asked.elapsed()
        );
        tokio::time::sleep(SEC).await;
    }
    let fresh = http1_client();
    let healthz = tokio::time::timeout(5 * SEC, send(&fresh, get(&h.admin_url("/healthz"))));
    let (res, _) = healthz.await.expect("the admin port answers again");
    assert_eq!(res.status(), StatusCode::OK);
    trickle.abort();
    h.finish().await;
}
