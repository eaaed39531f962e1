//! Where an HTTP/1 request says it goes (RELIABILITY.md §1B): request
//! targets, CONNECT and Upgrade (no tunnel, ever), `Host`, and the inbound
//! name allow-list `listen.hosts`. Every case ends with the global
//! invariants.

use super::probe::*;
use crate::support;
use crate::support::faulty::{self, RawUpstream, Step};
use crate::support::invariants::*;
use crate::support::*;
use tokio::net::TcpStream;

/// Request-target forms (1.12, 1.13, 1.16). Another authority, authority- and
/// asterisk-form: 400. Odd origin-form paths go to U unchanged, on U.
#[tokio::test]
async fn request_target_forms() {
    let h = start().await;
    for line in [
        "GET http://evil.test/x HTTP/1.1",
        "GET https://169.254.169.254/latest/meta-data HTTP/1.1",
        "GET http://api.fitbit.com@evil.test/ HTTP/1.1",
        "GET http://evil.test#@api.fitbit.com/ HTTP/1.1",
        "GET api.fitbit.com:443 HTTP/1.1",
        "GET admin HTTP/1.1",
        "GET * HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "OPTIONS */test HTTP/1.1",
        "GET //evil.test/x HTTP/1.1",
        "GET /\\evil.test/x HTTP/1.1",
        "GET /%2F%2Fevil.test HTTP/1.1",
    ] {
        assert_refused(&h, line, request_line(line).as_bytes(), &[400]).await;
    }
    let p = probe(&h, request_line("GET /@evil.test HTTP/1.1").as_bytes()).await;
    assert_eq!(p.statuses, [200], "{p:?}");
    assert_eq!(h.sim.received()[0].path, "/@evil.test");
    let p = probe(&h, request_line("GET /oauth2/revoke#x HTTP/1.1").as_bytes()).await;
    assert_eq!(p.statuses, [403], "{p:?}");
    assert_eq!(h.sim.received().len(), 1);
    assert_invariants(&h);
}

/// CONNECT (1.14) gets 405 and no tunnel: TLS bytes after it are not relayed.
#[tokio::test]
async fn connect_is_405_and_opens_no_tunnel() {
    let h = start().await;
    let hello = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00";
    for line in [
        "CONNECT evil.test:443 HTTP/1.1",
        "CONNECT api.fitbit.com:443 HTTP/1.1",
        "CONNECT / HTTP/1.1",
        "CONNECT x HTTP/1.0",
    ] {
        let mut bytes = format!("{line}\r\nHost: evil.test:443\r\n\r\n").into_bytes();
        bytes.extend_from_slice(hello);
        let p = probe(&h, &bytes).await;
        assert!(
            matches!(p.statuses[..], [405] | [405, 400] | [400]),
            "{line}: {p:?}"
        );
        assert!(p.closed, "{line}: {p:?}");
    }
    assert_eq!(h.sim.api_started(), 0);
    assert_invariants(&h);
}

/// Upgrade requests (1.11, 2.01), websocket or h2c, open no tunnel; the
/// upgrade fields and HTTP2-Settings never reach U; trailing bytes are just
/// the next request. 2.03: `Connection` naming the proxy's own fields strips
/// nothing the proxy adds.
#[tokio::test]
async fn upgrades_open_no_tunnel_and_connection_cannot_strip_what_the_proxy_adds() {
    let h = start().await;
    let next = "GET /1/second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for upgrade in [
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__",
        "HTTP2-Settings: AAMAAABkAAQAAP__",
    ] {
        let bytes = format!("GET /1/x HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n\r\n{next}");
        let p = probe(&h, bytes.as_bytes()).await;
        assert_eq!(p.statuses, [200, 200], "{upgrade}: {p:?}");
        assert!(!p.raw.contains(" 101 "), "{p:?}");
    }
    let p = probe(&h, get_with("Connection: Authorization, Host, X-Request-Id, Content-Length\r\nAuthorization: Bearer CLIENTAUTH_CANARY\r\nX-Request-Id: abc").as_bytes()).await;
    assert_eq!(p.statuses, [200], "{p:?}");
    let last = h.sim.received().pop().unwrap();
    let id = last
        .headers
        .get("x-request-id")
        .expect("the proxy's request id");
    assert!(
        p.raw
            .contains(&format!("x-request-id: {}", id.to_str().unwrap())),
        "{p:?}"
    );
    assert_invariants(&h);
}

/// An unasked 101 (1.11 c): an upstream that answers `101 Switching
/// Protocols` to a plain GET (and then sends bytes of another protocol) opens
/// no tunnel: the client gets 502 `upstream_unreachable`, never the 101 or
/// those bytes.
#[tokio::test]
async fn an_unasked_101_from_the_upstream_opens_no_tunnel() {
    let raw = RawUpstream::start(|_| {
        vec![
            faulty::send("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nTUNNEL_BYTES"),
            Step::Hold,
        ]
    })
    .await;
    let h = Setup::default().upstream_url(raw.url()).start().await;
    let p = probe(&h, request_line("GET /1/x HTTP/1.1").as_bytes()).await;
    assert_eq!(p.statuses, [502], "{p:?}");
    assert!(
        p.raw.contains("x-fitbit-proxy-error: upstream_unreachable"),
        "{p:?}"
    );
    assert!(!p.raw.contains("TUNNEL_BYTES"), "{p:?}");
    let (res, body) = send(&h2c_client(), support::get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), 502);
    assert!(!body.windows(6).any(|w| w == b"TUNNEL"));
    assert_invariants(&h);
}

/// Host validation (1.17): HTTP/1.1 needs exactly one valid Host (RFC 9112
/// §3.2); whatever it says, U gets its own.
#[tokio::test]
async fn host_must_be_single_and_valid() {
    let h = start().await;
    let cases = [
        "GET /1/x HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: 123.49.0.78:98777\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: example.com.:1.2\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: [::1\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: a b\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: user@evil.test\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: \r\n\r\n".to_owned(),
    ];
    for bytes in &cases {
        assert_refused(&h, bytes, bytes.as_bytes(), &[400]).await;
    }
    for ok in [
        "GET /1/x HTTP/1.1\r\nHost: attacker.test\r\nConnection: close\r\n\r\n",
        "GET /1/x HTTP/1.0\r\n\r\n",
    ] {
        let p = probe(&h, ok.as_bytes()).await;
        assert_eq!(p.statuses, [200], "{ok:?}: {p:?}");
    }
    assert_eq!(h.sim.received().len(), 2);
    assert_invariants(&h);
}

/// A proxy that serves only the names in `listen.hosts` (catalog 1.17).
async fn start_with_hosts() -> Harness {
    Setup::default()
        .admin()
        .listen("hosts = [\"proxy.internal\", \"127.0.0.1\", \"::1\"]")
        .start()
        .await
}

fn get_host(host: &str) -> String {
    format!("GET /1/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// DNS rebinding (1.17, CVE-2018-5702): a browser led to the proxy by a
/// rebound name sends that name as its Host. With `listen.hosts` set, only
/// the listed names are served, whatever their case, port or trailing dot;
/// any other gets 403 `forbidden`, is counted and logged, and reaches
/// nothing.
#[tokio::test]
async fn hosts_outside_listen_hosts_get_403_and_reach_nothing() {
    let h = start_with_hosts().await;
    let listed = [
        "proxy.internal",
        "Proxy.Internal:8080",
        "proxy.internal.",
        "PROXY.INTERNAL.:80",
        "127.0.0.1:1234",
        "[0:0::1]:8080",
    ];
    for host in listed {
        let p = probe(&h, get_host(host).as_bytes()).await;
        assert_eq!(p.statuses, [200], "{host}: {p:?}");
    }
    let before = h.sim.api_started();
    let refused = [
        get_host("attacker.test"),
        get_host("attacker.test:8080"),
        get_host("proxy.internal.attacker.test"),
        get_host("127.0.0.2"),
        // No name at all is not a listed name.
        "GET /1/x HTTP/1.0\r\n\r\n".to_owned(),
        // Absolute-form naming the upstream does not replace the Host.
        format!(
            "GET {}1/x HTTP/1.1\r\nHost: attacker.test\r\nConnection: close\r\n\r\n",
            h.config.upstream.url
        ),
    ];
    for bytes in &refused {
        let p = probe(&h, bytes.as_bytes()).await;
        assert_eq!(p.statuses, [403], "{bytes:?}: {p:?}");
        assert!(p.raw.contains("x-fitbit-proxy-error: forbidden"), "{p:?}");
        assert!(p.raw.contains("not in listen.hosts"), "{p:?}");
    }
    assert_nothing_forwarded_since(&h, before, "a Host not in listen.hosts");
    assert_outcomes(&h, &[(("proxy", "403"), 6.0), (("upstream", "200"), 6.0)]).await;
    assert_invariants(&h);
}

/// An h2c request for `/1/x` with `authority` as its `:authority` and, if
/// given, a `Host` field too; the answer's status.
async fn h2_status(h: &Harness, authority: &str, host: Option<&str>) -> u16 {
    let tcp = TcpStream::connect(h.proxy).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut req = http::Request::get(format!("http://{authority}/1/x"));
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let mut send = send.ready().await.unwrap();
    let (res, _) = send.send_request(req.body(()).unwrap(), true).unwrap();
    let status = res.await.expect("an answer").status().as_u16();
    conn.abort();
    status
}

/// The inbound name allow-list (1.17) over HTTP/2: `:authority` is the name,
/// and a `Host` field beside it must be listed as well.
#[tokio::test]
async fn h2_authority_outside_listen_hosts_gets_403() {
    let h = start_with_hosts().await;
    assert_eq!(h2_status(&h, "Proxy.Internal.:8080", None).await, 200);
    assert_eq!(h2_status(&h, "[::1]", Some("proxy.internal")).await, 200);
    let before = h.sim.api_started();
    for (authority, host) in [
        ("attacker.test", None),
        ("attacker.test:443", Some("proxy.internal")),
        ("proxy.internal", Some("attacker.test")),
    ] {
        let status = h2_status(&h, authority, host).await;
        assert_eq!(status, 403, "{authority} {host:?}");
    }
    assert_nothing_forwarded_since(&h, before, "an :authority not in listen.hosts");
    assert_outcomes(&h, &[(("proxy", "403"), 3.0), (("upstream", "200"), 2.0)]).await;
    assert_invariants(&h);
}

/// The inbound name allow-list (1.17): without `listen.hosts` (the default)
/// any valid Host is served.
#[tokio::test]
async fn without_listen_hosts_any_host_is_served() {
    let h = start().await;
    assert!(h.config.listen.hosts.is_empty());
    for host in ["attacker.test", "proxy.internal", "10.9.8.7:1"] {
        let p = probe(&h, get_host(host).as_bytes()).await;
        assert_eq!(p.statuses, [200], "{host}: {p:?}");
    }
    assert_eq!(h2_status(&h, "attacker.test", None).await, 200);
    assert_eq!(h.sim.received().len(), 4);
    assert_invariants(&h);
}
