//! HTTP/2 streams reset in bulk (RELIABILITY.md §1C): Rapid Reset, resets
//! the server is tricked into sending (MadeYouReset), resets of requests
//! already waiting for a pacing slot, and a client that cancels only a
//! few streams, which must not be cut off.

use std::time::Duration;

use super::*;
use crate::support;
use tokio::io::AsyncWriteExt;

/// Rapid Reset (1.24, CVE-2023-44487). 2 000 streams opened and cancelled
/// at once on one connection, never more than one open at a time: the
/// proxy cuts the connection off with GOAWAY(ENHANCE_YOUR_CALM) once more
/// than the pinned 20 resets wait for acceptance, and the resets cost
/// nothing upstream beyond the few streams accepted before the GOAWAY.
/// Other connections are served.
#[tokio::test]
async fn rapid_reset_is_bounded() {
    let h = Setup::default().start().await;
    let mut c = Conn::open(&h).await;
    let fields = get_fields("/1/x");
    let hb = block(&fields);
    let mut batch = Vec::new();
    for i in 0..2000u32 {
        let id = 2 * i + 1;
        batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &hb));
        batch.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
    }
    let sent = tokio::time::timeout(Duration::from_secs(10), c.send(&batch)).await;
    let seen = c.read(Duration::from_secs(5), |_| false).await;
    let started = h.sim.api_started();
    assert_eq!(
        seen.goaway,
        Some(ENHANCE_YOUR_CALM),
        "no GOAWAY(ENHANCE_YOUR_CALM) after 2000 resets: {seen:?} sent={sent:?}"
    );
    // None is expected (each HEADERS is followed at once by its RST); at
    // most the 20 the pending-accept limit lets by.
    assert!(started <= 20, "{started} of 2000 reset streams reached U");
    // Another client is unaffected.
    let (res, _) = send(&h2c_client(), support::get(&h.url("/1/after"))).await;
    assert_eq!(res.status(), 200);
    assert_invariants(&h);
}

/// MadeYouReset (1.25, CVE-2025-8671): each stream is a valid request, then
/// the client makes the *server* reset it, 10 000 times on one connection. h2
/// treats a WINDOW_UPDATE of 0, DATA after END_STREAM and an upper-case field
/// name as connection errors (GOAWAY PROTOCOL_ERROR at the first, which RFC
/// 9113 §5.4 allows); a stream window pushed past 2^31-1 is a stream error,
/// counted against the pinned `max_local_error_reset_streams` (1024): GOAWAY
/// ENHANCE_YOUR_CALM. Either way the connection ends long before 10 000
/// streams, at most the 20 streams accepted before it reach U, and other
/// clients are served.
#[tokio::test]
async fn made_you_reset_is_bounded() {
    const WINDOW_UPDATE: u8 = 0x8;
    let h = Setup::default().start().await;
    let fields = get_fields("/1/x");
    let hb = block(&fields);
    let mut bad_fields = fields.clone();
    bad_fields.push(("X-Upper", "1".into()));
    let bad_hb = block(&bad_fields);
    type Provoke = fn(u32, &[u8], &[u8]) -> Vec<u8>;
    let cases: [(&str, Provoke, u32); 4] = [
        (
            "WINDOW_UPDATE 0",
            |id, hb, _| {
                let mut out = frame(HEADERS, END_STREAM | END_HEADERS, id, hb);
                out.extend(frame(WINDOW_UPDATE, 0, id, &0u32.to_be_bytes()));
                out
            },
            PROTOCOL_ERROR,
        ),
        (
            "DATA after END_STREAM",
            |id, hb, _| {
                let mut out = frame(HEADERS, END_STREAM | END_HEADERS, id, hb);
                out.extend(frame(DATA, 0, id, b"x"));
                out
            },
            PROTOCOL_ERROR,
        ),
        (
            "stream window overflow",
            |id, hb, _| {
                let mut out = frame(HEADERS, END_STREAM | END_HEADERS, id, hb);
                for _ in 0..2 {
                    out.extend(frame(WINDOW_UPDATE, 0, id, &0x7fff_ffffu32.to_be_bytes()));
                }
                out
            },
            ENHANCE_YOUR_CALM,
        ),
        (
            "invalid field",
            |id, _, bad| frame(HEADERS, END_STREAM | END_HEADERS, id, bad),
            PROTOCOL_ERROR,
        ),
    ];
    for (name, provoke, code) in cases {
        let before = h.sim.api_started();
        let mut c = Conn::open(&h).await;
        let batch: Vec<u8> = (0..10_000u32)
            .flat_map(|i| provoke(2 * i + 1, &hb, &bad_hb))
            .collect();
        let sent = tokio::time::timeout(Duration::from_secs(10), c.send(&batch)).await;
        let seen = c.read(Duration::from_secs(5), |_| false).await;
        assert_eq!(
            seen.goaway,
            Some(code),
            "{name}: 10 000 server-side resets: resets={} sent={sent:?}",
            seen.resets.len(),
        );
        // None is expected; at most a few accepted before the GOAWAY.
        let started = h.sim.api_started() - before;
        assert!(
            started <= 20,
            "{name}: {started} made-to-reset streams reached U"
        );
    }
    let (res, _) = send(&h2c_client(), support::get(&h.url("/1/after"))).await;
    assert_eq!(res.status(), 200);
    assert_invariants(&h);
}

/// `fitbit_proxy_queue_depth` from the admin listener.
async fn queue_depth(h: &Harness) -> usize {
    let (_, body) = send(&http1_client(), support::get(&h.admin_url("/metrics"))).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("fitbit_proxy_queue_depth "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .expect("queue depth metric") as usize
}

/// Waits (10 s at most) until the pacing queue holds `want`, or `stop`
/// says the connection under test is gone; false in that case.
async fn queue_reaches(h: &Harness, want: usize, stop: impl Fn() -> bool) -> bool {
    for _ in 0..1000 {
        if stop() {
            return false;
        }
        if queue_depth(h).await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("queue depth never reached {want}: {}", queue_depth(h).await);
}

/// A harness whose pacing admits `per_hour` requests an hour, its burst
/// spent, so that every request after waits in the queue.
async fn paced(per_hour: u32) -> Harness {
    let h = Setup::default()
        .admin()
        .rate_limit(&format!(
            "hourly_quota = {per_hour}\nburst = 1\nmax_wait = \"1h\"\nmax_queued = 1000"
        ))
        .sim(fitbit_proxy::sim::SimConfig {
            quota: per_hour,
            window: Duration::from_secs(3600),
            ..sim_config()
        })
        .start()
        .await;
    let (res, _) = send(&h2c_client(), support::get(&h.url("/1/first"))).await;
    assert_eq!(res.status(), 200);
    h
}

/// Resets after acceptance (1.24; CVE-2023-44487; Envoy 1.27.1 closes a
/// connection once most of its streams are reset prematurely). Rounds of 50
/// streams on one connection: each round opens 50 that wait in the pacing
/// queue, then resets the 50 before, so that streams are always open, and the
/// client never answers the GOAWAY's PING. Every reset request leaves the
/// queue and none is sent upstream. After 100 resets
/// (`H2_PREMATURE_RESETS_MIN`, more than half the streams opened) the proxy
/// sends GOAWAY; the client goes on, and 100 resets later the connection is
/// closed. A new client is then served after about one interval: the resets
/// kept no pacing slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_after_acceptance_get_goaway_then_a_close() {
    let h = paced(3600).await;
    let c = Conn::open(&h).await;
    let (mut rd, mut wr) = c.stream.into_split();
    let goaway = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (goaway, closed) = (goaway.clone(), closed.clone());
        tokio::spawn(async move {
            for _ in 0..10 {
                let seen = read_frames(&mut rd, Duration::from_secs(30), |_| false).await;
                if seen.goaway.is_some() {
                    goaway.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                if seen.closed {
                    closed.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            }
        })
    };
    let is = |flag: &std::sync::atomic::AtomicBool| flag.load(std::sync::atomic::Ordering::SeqCst);
    let fields = get_fields("/1/reset");
    let hb = block(&fields);
    let mut next = 1u32;
    let mut waiting: Vec<u32> = Vec::new();
    let (mut reset, mut reset_at_goaway) = (0usize, None);
    for _round in 0..10 {
        let ids: Vec<u32> = (0..50).map(|i| next + 2 * i).collect();
        next += 100;
        let opened: Vec<u8> = ids
            .iter()
            .flat_map(|id| frame(HEADERS, END_STREAM | END_HEADERS, *id, &hb))
            .collect();
        let stop = || is(&closed);
        if wr.write_all(&opened).await.is_err()
            || !queue_reaches(&h, waiting.len() + 50, stop).await
        {
            break;
        }
        let resets: Vec<u8> = waiting
            .iter()
            .flat_map(|id| frame(RST_STREAM, 0, *id, &CANCEL.to_be_bytes()))
            .collect();
        if wr.write_all(&resets).await.is_err() {
            break;
        }
        reset += waiting.len();
        if !queue_reaches(&h, 50, stop).await {
            break;
        }
        waiting = ids;
        if reset_at_goaway.is_none() && is(&goaway) {
            reset_at_goaway = Some(reset);
        }
    }
    tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .expect("the reader ends")
        .unwrap();
    println!("GOAWAY seen after {reset_at_goaway:?} resets; closed after {reset}");
    assert!(is(&goaway), "no GOAWAY after {reset} resets");
    assert!(is(&closed), "the connection stayed open");
    // GOAWAY at 100 (seen one round later at most); the close 100 later.
    assert!(
        matches!(reset_at_goaway, Some(100..=150)),
        "GOAWAY after {reset_at_goaway:?} resets"
    );
    assert!((200..=250).contains(&reset), "closed after {reset} resets");
    // The close dropped the last round's waiting streams too.
    assert!(queue_reaches(&h, 0, || false).await);
    let reached = h
        .sim
        .received()
        .iter()
        .filter(|r| r.path == "/1/reset")
        .count();
    assert!(reached <= 1, "{reached} reset requests were sent upstream");
    // Had the reset requests kept their pacing slots, this one would wait
    // minutes; it waits about one second.
    let client = h2c_client();
    let after = send(&client, support::get(&h.url("/1/after")));
    let (res, _) = tokio::time::timeout(Duration::from_secs(10), after)
        .await
        .expect("served after the resets, not behind their slots");
    assert_eq!(res.status(), 200);
    assert_invariants(&h);
}

/// Rapid Reset (1.24), the other side: a client that cancels a few streams
/// among many good ones is not cut off. Twelve rounds on one connection, each
/// of 100 requests the proxy answers at once (a denied path, 403) and 10 that
/// wait for a pacing slot and are then reset: 120 premature resets, past the
/// minimum of 100, but not most of the 1 320 streams. No GOAWAY, and the
/// connection still serves a request at the end. Paced at one a minute, so
/// that no cancelled request is served during the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cancelling_a_few_streams_is_not_cut_off() {
    let h = paced(60).await;
    let mut c = Conn::open(&h).await;
    // Room for all the 403 bodies: the connection's receive window.
    let window = frame(WINDOW_UPDATE, 0, 0, &0x7000_0000u32.to_be_bytes());
    assert!(c.send(&window).await);
    let denied = block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "proxy"),
        (":path", "/oauth2/token"),
    ]);
    let fields = get_fields("/1/cancelled");
    let paced = block(&fields);
    let mut next = 1u32;
    let mut ids = || {
        next += 2;
        next - 2
    };
    for round in 0..12 {
        let cancelled: Vec<u32> = (0..10).map(|_| ids()).collect();
        let mut batch = Vec::new();
        for id in &cancelled {
            batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, *id, &paced));
        }
        for _ in 0..100 {
            batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, ids(), &denied));
        }
        assert!(c.send(&batch).await);
        let seen = c
            .read(Duration::from_secs(10), |s| s.answered.len() >= 100)
            .await;
        assert_eq!(seen.answered.len(), 100, "round {round}: {seen:?}");
        assert!(
            seen.goaway.is_none() && !seen.closed,
            "round {round}: cut off"
        );
        assert!(queue_reaches(&h, 10, || false).await);
        let reset: Vec<u8> = cancelled
            .iter()
            .flat_map(|id| frame(RST_STREAM, 0, *id, &CANCEL.to_be_bytes()))
            .collect();
        assert!(c.send(&reset).await);
        assert!(queue_reaches(&h, 0, || false).await);
    }
    let last = ids();
    assert!(c.headers(last, END_STREAM | END_HEADERS, &denied).await);
    let seen = c
        .read(Duration::from_secs(10), |s| s.answered.contains(&last))
        .await;
    assert!(seen.answered.contains(&last), "{seen:?}");
    assert!(seen.goaway.is_none() && !seen.closed, "{seen:?}");
    assert_invariants(&h);
}
