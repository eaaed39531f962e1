//! Clients that hold a connection without using it (RELIABILITY.md §3):
//! connections that send nothing or part of a head (3.02), many slowloris
//! heads at once (3.01), idle HTTP/1.1 keep-alive connections (3.03), idle
//! HTTP/2 connections that answer every PING (3.04), and clients that stop
//! reading the answer (3.06: HTTP/1, and an HTTP/2 window held at 0). All
//! of `listen.header_read_timeout` and `listen.send_timeout` as bounds on
//! idle connections is tested here. On paused tokio time with the default
//! bounds (10 s, 60 s) unless a case says otherwise; every case ends with
//! the global invariants.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::invariants::*;
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

const SEC: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(10);
const SEND: Duration = Duration::from_secs(60);
const PATH: &str = "/1/user/-/profile.json";

/// Connects once the proxy has taken the previous connection: a burst of
/// connects can overflow the listen backlog, and a SYN retried after a
/// second of real time lets paused time run far ahead.
async fn connect(proxy: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(proxy).await.unwrap();
    tokio::task::yield_now().await;
    stream
}

/// Reads one HTTP/1 response with a `content-length`; returns its head.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.expect("response");
        assert!(n > 0, "closed mid-response: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let head = text[..end].to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("content-length");
        if buf.len() >= end + 4 + len {
            assert_no_canary("a response", &buf);
            return text[..end].to_owned();
        }
    }
}

/// Reads until the proxy closes the connection (bounded at 10 minutes of
/// tokio time); returns when that was and how many bytes came.
async fn closed_at(stream: &mut TcpStream) -> (Instant, usize) {
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let read = tokio::time::timeout(600 * SEC, async {
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            total += n;
        }
    })
    .await;
    assert!(read.is_ok(), "still open after 10 minutes");
    (Instant::now(), total)
}

/// Connections that send nothing, part of the h2 preface or part of a
/// head (3.01, 3.02) are closed at the pinned `header_read_timeout` (the
/// default, 10 s; hyper's own default is 30 s): not before it, and within a
/// second after it, on paused time. Nothing is answered but an optional 408
/// (hyper closes a head that timed out without a word).
#[tokio::test(start_paused = true)]
async fn silent_connections_are_closed_after_header_read_timeout() {
    let h = Setup::default().start().await;
    assert_eq!(h.config.listen.header_read_timeout, IDLE, "the default");
    for opening in [&b""[..], b"PRI * HTT", b"GET /1/x HTTP/1.1\r\nHost: x\r\n"] {
        let mut s = TcpStream::connect(h.proxy).await.unwrap();
        s.write_all(opening).await.unwrap();
        let opened = Instant::now();
        let (answer, closed) = read_for(&mut s, 60 * SEC).await;
        let after = opened.elapsed();
        assert!(closed, "opened with {opening:?}: never closed");
        assert!(
            (IDLE..=IDLE + SEC).contains(&after),
            "opened with {opening:?}: closed after {after:?}"
        );
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 408 "),
            "opened with {opening:?}: answered {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
    assert_eq!(h.sim.api_started(), 0);
    h.finish().await;
}

/// An h2c connection that sends the preface and an empty SETTINGS frame,
/// then nothing (no PING answered), is closed within two
/// `header_read_timeout`s (3.02, 3.04).
#[tokio::test(start_paused = true)]
async fn an_h2_connection_that_goes_quiet_after_the_preface_is_closed() {
    let h = Setup::default()
        .listen("header_read_timeout = \"5s\"")
        .start()
        .await;
    let mut s = TcpStream::connect(h.proxy).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_for(&mut s, 600 * SEC).await;
    assert!(closed, "held open for 600 s");
    assert!(
        started.elapsed() <= 11 * SEC,
        "closed only after {:?}",
        started.elapsed()
    );
    h.stop().await;
}

/// Idle HTTP/1.1 keep-alive connections (3.03): 200 connections each make one
/// keep-alive request, then stay idle. Each is closed `header_read_timeout`
/// after its answer (hyper's head timer runs between requests too), not kept
/// forever.
#[tokio::test(start_paused = true)]
async fn idle_http1_keep_alive_connections_are_closed_after_the_idle_bound() {
    let h = Setup::default().admin().start().await;
    let mut closes = tokio::task::JoinSet::new();
    for i in 0..200 {
        let mut stream = connect(h.proxy).await;
        closes.spawn(async move {
            let req = format!("GET {PATH}?i={i} HTTP/1.1\r\nHost: x\r\n\r\n");
            stream.write_all(req.as_bytes()).await.unwrap();
            let head = read_response(&mut stream).await;
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(!head.to_ascii_lowercase().contains("connection: close"));
            let answered = Instant::now();
            let (closed, extra) = closed_at(&mut stream).await;
            assert_eq!(extra, 0, "nothing more is sent");
            closed - answered
        });
    }
    let mut longest = Duration::ZERO;
    while let Some(idle) = closes.join_next().await {
        let idle = idle.unwrap();
        assert!(
            idle >= IDLE - SEC / 2 && idle <= IDLE + SEC / 2,
            "closed after {idle:?}"
        );
        longest = longest.max(idle);
    }
    eprintln!("200 idle keep-alive connections closed, the last after {longest:?}");
    let (res, _) = send(&http1_client(), get(&h.url(PATH))).await;
    assert_eq!(res.status(), 200);
    assert_outcomes(&h, &[(("upstream", "200"), 201.0)]).await;
    h.finish().await;
}

/// One keep-alive connection used in bursts (3.03): requests back to back,
/// a pause of two seconds (long enough for the proxy to park it, giving up
/// its hyper connection), requests again. Every request is answered on the
/// same connection, and it is closed `header_read_timeout` after its last
/// answer, the time it spent before parking included.
#[tokio::test(start_paused = true)]
async fn a_keep_alive_connection_used_in_bursts_is_served_and_closed_idle_bound_after_its_last_answer(
) {
    let h = Setup::default().admin().start().await;
    let mut stream = connect(h.proxy).await;
    let mut ask = async |i: usize| {
        let req = format!("GET {PATH}?i={i} HTTP/1.1\r\nHost: x\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let head = read_response(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "request {i}: {head}");
    };
    for (i, pause) in [0, 0, 2000, 0, 500, 2000, 300].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        ask(i).await;
    }
    let answered = Instant::now();
    let (closed, extra) = closed_at(&mut stream).await;
    assert_eq!(extra, 0, "nothing more is sent");
    let idle = closed - answered;
    assert!(
        idle >= IDLE - SEC / 2 && idle <= IDLE + SEC / 2,
        "closed after {idle:?}"
    );
    assert_outcomes(&h, &[(("upstream", "200"), 7.0)]).await;
    h.finish().await;
}

/// An h2c connection made with the `h2` crate, whose driver answers every
/// PING; the receiver yields when the connection ended.
async fn h2_client(
    proxy: SocketAddr,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    tokio::sync::oneshot::Receiver<Instant>,
) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let (ended_tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let _ = conn.await;
        let _ = ended_tx.send(Instant::now());
    });
    (send, ended)
}

/// Sends a GET on `send` and returns the response head and body stream.
async fn h2_get(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    path: &str,
) -> http::Response<h2::RecvStream> {
    let req = http::Request::get(format!("http://x{path}"))
        .body(())
        .unwrap();
    let (res, _) = send
        .clone()
        .ready()
        .await
        .unwrap()
        .send_request(req, true)
        .unwrap();
    res.await.expect("response head")
}

/// Idle h2 connections (3.04): an h2c client that answers every keep-alive
/// PING and opens no stream is sent GOAWAY `header_read_timeout` after its
/// last request ended; while a request is open (here one that takes 25 s
/// upstream) the connection is not idle.
#[tokio::test(start_paused = true)]
async fn an_idle_h2_connection_that_answers_pings_gets_goaway() {
    let h = Setup::default().admin().start().await;
    let (mut send, mut ended) = h2_client(h.proxy).await;
    let res = h2_get(&mut send, "/sim/slow/25000").await;
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    while let Some(chunk) = body.data().await {
        assert_no_canary("an h2 body", &chunk.unwrap());
    }
    let done = Instant::now();
    assert!(ended.try_recv().is_err(), "closed during a 25 s request");
    let closed = tokio::time::timeout(600 * SEC, ended)
        .await
        .expect("an idle h2 connection is closed")
        .unwrap();
    let idle = closed - done;
    assert!(
        idle >= IDLE - SEC && idle <= IDLE + SEC,
        "closed after {idle:?}"
    );
    assert_outcomes(&h, &[(("upstream", "200"), 1.0)]).await;
    h.finish().await;
}

/// Slowloris (3.01): 200 connections each send a request head one byte every
/// 2 s. Every one is closed at `header_read_timeout`, and a normal client
/// that arrives in the middle is served at once.
#[tokio::test(start_paused = true)]
async fn two_hundred_slowloris_connections_are_all_closed_and_others_are_served() {
    let h = Setup::default().admin().start().await;
    let before = h.sim.api_started();
    let started = Instant::now();
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let stream = connect(h.proxy).await;
        slow.spawn(async move {
            let (mut read, mut write) = stream.into_split();
            write.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
            let trickle = async {
                // Bounded: 30 bytes, a minute of tokio time.
                for _ in 0..30 {
                    tokio::time::sleep(2 * SEC).await;
                    if write.write_all(b"X").await.is_err() {
                        break;
                    }
                }
            };
            let mut got = Vec::new();
            tokio::select! {
                () = trickle => panic!("a slowloris head was still read after 60 s"),
                _ = read.read_to_end(&mut got) => {}
            }
            assert_no_canary("a slowloris answer", &got);
            Instant::now()
        });
    }
    tokio::time::sleep(5 * SEC).await;
    let asked = Instant::now();
    let (res, _) = send(&http1_client(), get(&h.url(PATH))).await;
    assert_eq!(res.status(), 200);
    assert!(asked.elapsed() < SEC, "served after {:?}", asked.elapsed());
    while let Some(closed) = slow.join_next().await {
        let after = closed.unwrap() - started;
        assert!(
            after >= IDLE - SEC && after <= IDLE + SEC,
            "closed after {after:?}"
        );
    }
    assert_eq!(
        h.sim.api_started(),
        before + 1,
        "G6: only the normal client"
    );
    assert_outcomes(&h, &[(("upstream", "200"), 1.0)]).await;
    h.finish().await;
}

/// The proxy (admin listener on) in front of a raw upstream that answers
/// every request with a 50 MiB body, written as fast as the proxy takes
/// it. The channel reports, per connection, how many bytes the upstream
/// could write and when the proxy let go of the connection.
async fn in_front_of_an_endless_upstream() -> (Harness, mpsc::UnboundedReceiver<(usize, Instant)>) {
    let (upstream, released) = raw_upstream::answer_each(|mut conn| async move {
        let len = 50 << 20;
        let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
        let mut written = 0;
        if conn.write_all(answer.as_bytes()).await.is_ok() {
            let chunk = vec![b'z'; 16 * 1024];
            while written < len && conn.write_all(&chunk).await.is_ok() {
                written += chunk.len();
            }
        }
        Some((written, Instant::now()))
    })
    .await;
    let h = Setup::default()
        .admin()
        .upstream_url(format!("http://{upstream}"))
        .start()
        .await;
    (h, released)
}

/// The upstream connection is let go `send_timeout` after `asked` (and
/// at most an idle bound later), having written less than 32 MiB: the
/// proxy took only what the buffers hold.
async fn assert_released(
    released: &mut mpsc::UnboundedReceiver<(usize, Instant)>,
    asked: Instant,
    what: &str,
) {
    let (written, let_go) = tokio::time::timeout(600 * SEC, released.recv())
        .await
        .expect("the upstream connection is released")
        .unwrap();
    let held = let_go - asked;
    eprintln!(
        "{what}: cut after {held:?}, the upstream wrote {} KiB",
        written >> 10
    );
    assert!(
        held >= SEND && held <= SEND + IDLE + SEC,
        "cut after {held:?}"
    );
    assert!(written < 32 << 20, "{} MiB taken from U", written >> 20);
}

/// A client that stops reading (3.06), over HTTP/1: a client asks for 50 MiB
/// and reads nothing. The proxy takes from the upstream only what the buffers
/// hold (memory stays bounded by back-pressure), cuts the client off
/// `send_timeout` after it last took a byte, and lets go of the upstream
/// connection.
#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_off_and_the_upstream_released() {
    let (h, mut released) = in_front_of_an_endless_upstream().await;
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let req = format!("GET {PATH} HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    assert_released(&mut released, Instant::now(), "a client that reads nothing").await;
    let (_, got) = closed_at(&mut stream).await;
    assert!(got < 50 << 20, "the whole body arrived");
    assert_outcomes(&h, &[(("upstream", "200"), 1.0)]).await;
    h.finish().await;
}

/// A slow reader (3.06): one that keeps taking bytes (64 KiB every second) is
/// not cut, however long the download takes; the same over h2c.
#[tokio::test(start_paused = true)]
async fn a_slow_reader_that_keeps_reading_is_not_cut() {
    let h = Setup::default().admin().start().await;
    let size = 4 << 20;
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    let req = format!("GET /sim/stream/{size} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut total = 0;
    let mut buf = vec![0u8; 64 * 1024];
    // Bounded: 4 MiB at 64 KiB/s is 64 s; at most 200 reads.
    for _ in 0..200 {
        tokio::time::sleep(SEC).await;
        match stream.read(&mut buf).await.unwrap() {
            0 => break,
            n => total += n,
        }
    }
    let took = started.elapsed();
    eprintln!("a 64 KiB/s reader took {total} bytes in {took:?}");
    assert!(total > size, "cut after {total} bytes ({took:?})");
    assert!(took > SEND, "the download outlasted send_timeout");
    assert_outcomes(&h, &[(("upstream", "200"), 1.0)]).await;
    h.finish().await;
}

/// A zero window (3.06), over h2c: the client keeps answering PINGs but never
/// opens its stream's window again. `send_timeout` after the window ran out
/// the connection is closed and the upstream connection released.
#[tokio::test(start_paused = true)]
async fn an_h2_window_held_at_zero_is_cut_off_and_the_upstream_released() {
    let (h, mut released) = in_front_of_an_endless_upstream().await;
    let (mut send, ended) = h2_client(h.proxy).await;
    let res = h2_get(&mut send, PATH).await;
    assert_eq!(res.status(), 200);
    let asked = Instant::now();
    // Take the first 64 KiB window's worth without releasing capacity.
    let mut body = res.into_body();
    let mut got = 0;
    while got < 65_535 {
        got += body.data().await.expect("data").unwrap().len();
    }
    assert_released(&mut released, asked, "an h2 window held at 0").await;
    tokio::time::timeout(10 * SEC, ended)
        .await
        .expect("the h2 connection is closed")
        .unwrap();
    assert_outcomes(&h, &[(("upstream", "200"), 1.0)]).await;
    h.finish().await;
}
