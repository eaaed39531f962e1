//! 4.26: an upstream whose host name does not resolve. `.invalid` never
//! resolves (RFC 6761 §6.4): the lookup fails (NXDOMAIN from the machine's
//! resolver) or, with no resolver answering, runs into `connect_timeout`,
//! which the proxy's connector applies to DNS, TCP and TLS together
//! (src/upstream.rs). Either way every client gets a 502 and nothing hangs.

mod support;

use std::time::Duration;

use fitbit_proxy::sim::Sim;
use http::StatusCode;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_host_that_does_not_resolve_gets_502_for_everyone() {
    let sim = Sim::new(sim_config());
    let token_server = sim.serve_plain(bind().await);
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(
        &token_server,
        None,
        &Extras {
            upstream: "connect_timeout = \"3s\"\nrequest_timeout = \"30s\"".into(),
            ..Extras::default()
        },
    )
    .replacen(
        &token_server.base_url(),
        "https://api.fitbit-proxy-test.invalid",
        1,
    );
    let (proxy, _stop, _task) = spawn_proxy(parse_config(&toml, dir.path())).await;

    // 20 at once: lookups run on the blocking pool, none may hold a
    // request beyond the connect deadline. The 20 s guard only turns a
    // hang into a failure; it is not a measure of speed.
    let client = http1_client();
    let requests = (0..20).map(|i| {
        let client = client.clone();
        let url = format!("http://{proxy}/1/dns/{i}");
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(20), send(&client, get(&url)))
                .await
                .expect("the proxy answered (no hang on DNS)")
        })
    });
    for r in futures_util::future::join_all(requests).await {
        let (res, body) = r.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY, "{body:?}");
        assert_eq!(proxy_error(&res), Some("upstream_unreachable"));
        assert_fitbit_error(&body, "upstream_unreachable");
        let text = String::from_utf8_lossy(&body).to_lowercase();
        assert!(
            text.contains("dns") || text.contains("timed out"),
            "the answer does not say why: {text}"
        );
        support::invariants::assert_no_canary("the 502", &body);
    }
    // The token endpoint was the only peer: nothing else was reachable.
    assert_eq!(sim.api_requests(), 0);
}
