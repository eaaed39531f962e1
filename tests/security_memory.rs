//! Floods from HTTP/2 clients that never read what the proxy sends back
//! (RELIABILITY.md §1C): control and empty frames (1.29: PING, SETTINGS,
//! empty DATA, padded empty DATA, zero-length HEADERS, tiny WINDOW_UPDATE,
//! PRIORITY churn; CVE-2019-9511…9518) and thousands of requests the proxy
//! answers itself (1.31). One test in its own binary, so that the
//! resident-set measurement sees only these connections.
//!
//! Each flood is far larger than the kernel's socket buffers can hold in
//! replies (`tcp_wmem` max here is 4 MiB): a server that kept reading and
//! queued its replies in memory would grow by tens of MiB. The proxy must
//! instead stop reading (back-pressure) or close the connection, stay
//! within a small memory budget, and keep serving other clients.

mod support;

use std::time::Duration;

use support::h2frames::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident set of this process (the proxy runs in it), in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// The floods, each built up front (so their own buffers are in the
/// baseline): `(name, bytes after the preface and SETTINGS)`.
fn floods() -> Vec<(&'static str, Vec<u8>)> {
    const N: usize = 1 << 20;
    let repeat = |one: Vec<u8>| one.repeat(N);
    let mut empty_data = frame(HEADERS, END_HEADERS, 1, &request_block("POST", "/1/x"));
    empty_data.extend(repeat(frame(DATA, 0, 1, &[])));
    let mut priority = Vec::with_capacity(N * 14);
    for i in 0..N as u32 {
        // Churn over idle streams, each depending on the one before.
        priority.extend(frame(PRIORITY, 0, 2 * i + 1, &[0, 0, 0, 0, 16]));
    }
    // The outbound flood (1.31): requests the proxy refuses itself (a denied
    // path, 403); ids go up to 2^18, each one answered and never read.
    let denied = request_block("GET", "/oauth2/token");
    let mut answered = Vec::new();
    for i in 0..(1u32 << 17) {
        answered.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &denied));
    }
    // Padded, empty DATA (PADDED flag, pad length 0): no data, one byte of
    // flow control each (CVE-2019-9518 with padding).
    let mut padded = frame(HEADERS, END_HEADERS, 1, &request_block("POST", "/1/x"));
    padded.extend(repeat(frame(DATA, PADDED, 1, &[0])));
    // Zero-length HEADERS on ever new streams (CVE-2019-9516): each an
    // empty, malformed header block.
    let mut zero_headers = Vec::with_capacity(N * 9);
    for i in 0..N as u32 {
        zero_headers.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &[]));
    }
    vec![
        // 34 MiB: more than every socket buffer on the path could hold.
        ("PING", repeat(frame(PING, 0, 0, &[7; 8])).repeat(2)),
        ("SETTINGS", repeat(frame(SETTINGS, 0, 0, &[]))),
        ("empty DATA", empty_data),
        (
            "WINDOW_UPDATE",
            repeat(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1])),
        ),
        ("PRIORITY", priority),
        ("padded empty DATA", padded),
        ("zero-length HEADERS", zero_headers),
        ("403 answers", answered),
    ]
}

/// Floods of control and empty frames, and of answers (1.29, 1.31): eight
/// floods at once, none of them read back. Each is cut off by back-pressure
/// (the write does not finish) or by the proxy closing, and every such
/// connection is closed by the unanswered keep-alive PING; the process grows
/// by less than 8 MiB over all eight (a server that queued its PING acks
/// alone would hold 17 MiB, its 403 answers far more); another client is
/// served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_from_clients_that_never_read_stay_bounded() {
    // `header_read_timeout` is also the h2 keep-alive PING interval and
    // timeout: a client that never reads never acknowledges one. 3 s, so
    // that the floods (2 s each) are measured before the first PING.
    let h = Setup::default()
        .listen("header_read_timeout = \"3s\"")
        .start()
        .await;
    // Warm up the proxy and the client pool, so the baseline includes them.
    let client = h2c_client();
    let (res, _) = send(&client, get(&h.url("/1/warm"))).await;
    assert_eq!(res.status(), 200);
    let floods = floods();
    let before = rss();

    let mut tasks = Vec::new();
    for (name, bytes) in floods {
        let mut conn = TcpStream::connect(h.proxy).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut start = PREFACE.to_vec();
            start.extend(frame(SETTINGS, 0, 0, &[]));
            let _ = conn.write_all(&start).await;
            let finished = tokio::time::timeout(Duration::from_secs(2), conn.write_all(&bytes))
                .await
                .is_ok_and(|r| r.is_ok());
            // The connection stays open and unread until the end, and the
            // flood's buffer stays allocated (it is in the baseline).
            (name, bytes, finished, conn)
        }));
    }
    // Meanwhile, another client is served promptly.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (res, _) = tokio::time::timeout(
        Duration::from_secs(5),
        send(&client, get(&h.url("/1/during"))),
    )
    .await
    .expect("another client is served during the floods");
    assert_eq!(res.status(), 200);

    let mut conns = Vec::new();
    for task in tasks {
        conns.push(task.await.unwrap());
    }
    let grown = rss().saturating_sub(before);
    eprintln!("grown by {} KiB", grown >> 10);
    for (name, bytes, finished, _) in &conns {
        eprintln!(
            "{name}: {} bytes, whole flood taken: {finished}",
            bytes.len()
        );
    }
    assert!(
        grown < 8 << 20,
        "the proxy grew by {} MiB while eight clients did not read",
        grown >> 20
    );
    // The PING flood and the requests need replies: with nothing read, the
    // proxy must stop taking them (their replies cannot all fit in the
    // kernel's buffers, on either side). The other floods are held to the
    // memory bound only.
    for (name, bytes, finished, _) in &conns {
        if matches!(*name, "PING" | "403 answers") {
            assert!(
                !finished,
                "{name}: all {} bytes were taken with nothing read",
                bytes.len()
            );
        }
    }
    // None of them is held forever: the unacknowledged keep-alive PING
    // closes each connection (read here only to see the end).
    for (name, _, _, mut conn) in conns {
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = conn.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(drained.is_ok(), "{name}: still open 10 s later");
    }
    let (res, _) = send(&client, get(&h.url("/1/after"))).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        h.sim
            .received()
            .iter()
            .filter(|r| r.path.starts_with("/oauth2"))
            .count(),
        0
    );
    h.finish().await;
}
