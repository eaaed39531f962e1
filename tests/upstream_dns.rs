//! DNS failures (4.26). An upstream name that does not resolve gets every
//! client a 502 and nothing hangs: the lookup fails (NXDOMAIN, SERVFAIL) or
//! runs into `connect_timeout`, which the proxy's connector applies to DNS,
//! TCP and TLS together (src/upstream/mod.rs). A name that leads to another
//! server (DNS rebinding or hijack) fails at TLS, before any HTTP byte.
//!
//! The names come from the environment so that `.ci/dns-faults.sh` can run
//! the same tests against a resolver that answers SERVFAIL, one that hangs,
//! and one that rebinds; by default `.invalid` (RFC 6761 §6.4: never
//! resolves) and `localhost` (the machine's hosts file).

mod support;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use support::faulty::{self, Leaf, RawUpstream};
use support::invariants::*;
use support::*;

/// A name whose lookup fails or hangs.
fn failing_name() -> String {
    std::env::var("FITBIT_PROXY_DNS_FAILING").unwrap_or("api.fitbit-proxy-test.invalid".into())
}

/// A name that resolves to a loopback address where no upstream of that
/// name sits.
fn rebound_name() -> String {
    std::env::var("FITBIT_PROXY_DNS_REBOUND").unwrap_or("localhost".into())
}

/// A proxy whose upstream is `https://{failing_name()}`, tokens from a
/// simulator (which stays the only peer the proxy can reach).
async fn proxy_to_a_failing_name() -> Harness {
    Setup::default()
        .upstream("connect_timeout = \"3s\"\nrequest_timeout = \"30s\"")
        .upstream_url(format!("https://{}", failing_name()))
        .start()
        .await
}

/// Sends `n` requests at once; each must be a 502 that says why. The 20 s
/// guard only turns a hang into a failure; it is not a measure of speed.
async fn all_get_502(proxy: SocketAddr, n: usize) {
    let client = http1_client();
    let requests = (0..n).map(|i| {
        let client = client.clone();
        let url = format!("http://{proxy}/1/dns/{i}");
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(20), send(&client, get(&url)))
                .await
                .expect("the proxy answered (no hang on DNS)")
        })
    });
    let mut causes = std::collections::BTreeSet::new();
    for r in futures_util::future::join_all(requests).await {
        let (res, body) = r.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY, "{body:?}");
        assert_eq!(proxy_error(&res), Some("upstream_unreachable"));
        assert_fitbit_error(&body, "upstream_unreachable");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let text = v["errors"][0]["message"].as_str().unwrap().to_lowercase();
        assert!(
            text.contains("dns") || text.contains("timed out"),
            "the answer does not say why: {text}"
        );
        assert_no_canary("the 502", &body);
        causes.insert(text);
    }
    println!("{n} requests for {}: all 502, {causes:?}", failing_name());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_host_that_does_not_resolve_gets_502_for_everyone() {
    let up = proxy_to_a_failing_name().await;
    all_get_502(up.proxy, 20).await;
    // The token endpoint was the only peer: nothing else was reachable.
    assert_eq!(up.sim.api_requests(), 0);
}

/// Threads of this process, from /proc (Linux).
fn threads() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line[8..].trim().parse().unwrap()
}

/// How many requests go at once in the burst test: 50 by default, which
/// the machine's resolver answers quickly; `.ci/dns-faults.sh` sends the
/// catalog's 500 while the resolver hangs.
fn burst() -> usize {
    std::env::var("FITBIT_PROXY_DNS_BURST").map_or(50, |n| n.parse().unwrap())
}

/// Many requests at once (500 in the catalog) while lookups fail or hang: hyper-util's
/// `GaiResolver` runs each `getaddrinfo` on tokio's blocking pool, so the
/// lookups in flight are bounded by the runtime's `max_blocking_threads`
/// (512, tokio's default, which the proxy keeps); a lookup whose request
/// gave up at `connect_timeout` is aborted if it has not started, and
/// otherwise holds its thread until the resolver gives up (glibc: 2 tries
/// of 5 s). Real time: 500 tasks exhaust the coop budget of paused time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_while_lookups_fail_or_hang_stays_bounded() {
    let up = proxy_to_a_failing_name().await;
    let base = threads();
    let peak = Arc::new(AtomicUsize::new(base));
    let sampler = tokio::spawn({
        let peak = peak.clone();
        async move {
            loop {
                peak.fetch_max(threads(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    all_get_502(up.proxy, burst()).await;
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    println!("threads: {base} before, {peak} at the peak (blocking pool cap 512)");
    // The other test of this file may add its own 20 lookups meanwhile.
    assert!(peak <= base + 512 + 32, "{peak} threads from {base}");
    assert_eq!(up.sim.api_requests(), 0);
}

/// A TLS upstream on `ip` whose certificate (from `pki`) names `cert_for`.
async fn tls_upstream(ip: IpAddr, pki: &faulty::Pki, cert_for: &str) -> RawUpstream {
    let (chain, key) = pki.leaf(Leaf {
        names: &[cert_for],
        validity: None,
        by_intermediate: false,
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    RawUpstream::start_tls_on(listener, chain, key, |_| {
        vec![faulty::send(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
        )]
    })
    .await
}

/// DNS rebinding or hijack (4.26): the upstream's name leads to a server with
/// a valid certificate (trusted CA) for another name, `api.fitbit.com`. The
/// handshake fails: 502, and not one HTTP byte, so no token, reaches it. A
/// server at the same address with a certificate for the name itself is
/// reached (200), so the failure is the certificate's.
#[tokio::test]
async fn a_name_leading_to_another_server_fails_at_tls_with_no_token_sent() {
    let name = rebound_name();
    let ip = tokio::net::lookup_host((name.as_str(), 0))
        .await
        .expect("the name resolves")
        .find(|a| a.is_ipv4())
        .expect("an IPv4 address")
        .ip();
    let pki = faulty::Pki::new();
    for (cert_for, want) in [("api.fitbit.com", 502), (name.as_str(), 200)] {
        let raw = tls_upstream(ip, &pki, cert_for).await;
        let url = format!("https://{name}:{}", raw.addr.port());
        let h = Setup::default()
            .upstream_url(url)
            .trust(&pki.root_pem)
            .start()
            .await;
        let (res, body) = send(&http1_client(), get(&h.url("/1/x"))).await;
        println!(
            "{name} -> {ip}, a certificate for {cert_for}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(res.status(), want, "{body:?}");
        assert_no_canary("the answer", &body);
        assert!(raw.connections() >= 1, "never reached {ip}");
        if want == 502 {
            assert_eq!(proxy_error(&res), Some("upstream_unreachable"));
            assert!(raw.seen().is_empty(), "a request reached the wrong server");
        }
        raw.assert_clean();
        h.finish().await;
    }
}
