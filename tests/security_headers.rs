//! Catalog §2 (RELIABILITY.md), header hygiene toward the upstream:
//! 2.13 forwarding-identity fields. Over loopback, h1 and h2c; every case
//! ends with the global invariants.

mod support;

use http::{Request, StatusCode};
use http_body_util::Full;
use support::invariants::*;
use support::*;

/// The catalog's 2.13 list, as a client (or an internal load balancer)
/// would send it.
const SPOOFED: [(&str, &str); 12] = [
    ("x-forwarded-for", "1.2.3.4"),
    ("forwarded", "for=10.0.0.1;host=evil;proto=http"),
    ("x-real-ip", "10.0.0.2"),
    ("x-forwarded-host", "evil"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-port", "80"),
    ("x-original-url", "/oauth2/revoke"),
    ("x-rewrite-url", "/oauth2/revoke"),
    ("true-client-ip", "10.0.0.3"),
    ("x-client-ip", "10.0.0.4"),
    ("cf-connecting-ip", "10.0.0.5"),
    ("via", "1.1 lb.corp.internal"),
];

fn spoofed(url: &str) -> Request<Full<bytes::Bytes>> {
    let mut req = get(url);
    for (name, value) in SPOOFED {
        req.headers_mut()
            .append(name, value.parse().expect("valid value"));
    }
    req.headers_mut()
        .insert("accept-language", "en_US".parse().unwrap());
    req
}

/// 2.13: none of the forwarding-identity fields reaches the upstream, and
/// the proxy adds none of its own (nor a `Via`); other end-to-end fields
/// pass. `X-Original-URL: /oauth2/revoke` changes nothing: the request
/// goes to its own path.
#[tokio::test]
async fn forwarding_identity_fields_never_reach_the_upstream() {
    count_panics();
    let h = Setup::default().start().await;
    for client in [http1_client(), h2c_client()] {
        let (res, _) = send(&client, spoofed(&h.url("/1/user/-/profile.json"))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let received = h.sim.received();
    assert_eq!(received.len(), 2);
    for r in &received {
        assert_eq!(r.path, "/1/user/-/profile.json");
        assert_eq!(r.headers["accept-language"], "en_US", "{r:?}");
        for (name, _) in SPOOFED {
            assert!(
                !r.headers.contains_key(name),
                "{name} reached the upstream: {r:?}"
            );
        }
        for name in r.headers.keys() {
            let name = name.as_str();
            assert!(
                !name.starts_with("x-forwarded") && !name.ends_with("-ip"),
                "{name} reached the upstream: {r:?}"
            );
        }
    }
    assert_invariants(&h);
    h.stop().await;
}

/// 2.13: the fields do not sway the proxy's own decisions: `listen.allow`
/// goes by the socket's address, `deny_paths` by the request's path.
#[tokio::test]
async fn forwarding_identity_fields_do_not_sway_allow_or_deny() {
    count_panics();
    let h = Setup::default()
        .listen("allow = [\"10.0.0.0/8\", \"1.2.3.4/32\"]")
        .start()
        .await;
    let (res, _) = send(&http1_client(), spoofed(&h.url("/1/x"))).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(h.sim.received().is_empty());
    h.stop().await;

    let h = Setup::default().start().await;
    let mut req = spoofed(&h.url("/oauth2/token"));
    req.headers_mut()
        .insert("x-original-url", "/1/user/-/profile.json".parse().unwrap());
    let (res, _) = send(&http1_client(), req).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(proxy_error(&res), Some("forbidden"));
    assert!(h.sim.received().is_empty());
    assert_invariants(&h);
    h.stop().await;
}
