//! Transports: h2c prior knowledge, TLS from the test CA with ALPN choosing
//! HTTP/2 or HTTP/1.1, untrusted TLS failing, and shutdown.

use fitbit_proxy::sim::SimConfig;

use super::*;

const FORM: &str = "grant_type=client_credentials";

#[tokio::test]
async fn h2c_prior_knowledge_on_plain() {
    let sim = Sim::new(SimConfig::default());
    let handle = sim.serve_plain(bind().await);
    assert!(handle.base_url().starts_with("http://127.0.0.1:"));
    let client = client(None, true);
    let token = fetch_token(&client, &handle, FORM).await;
    let reply = get(&client, &handle, "/1/x", &token).await;
    assert_eq!(
        (reply.status, reply.version),
        (StatusCode::OK, Version::HTTP_2)
    );
    assert_eq!(sim.received()[0].version, Version::HTTP_2);
    assert_eq!(sim.token_requests()[0].version, Version::HTTP_2);
}

#[tokio::test]
async fn tls_with_alpn_h2_and_http1() {
    let ca = TestCa::new();
    assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    let sim = Sim::new(SimConfig::default());
    let handle = sim.serve_tls(bind().await, &ca);
    assert_eq!(
        handle.token_url(),
        format!("https://localhost:{}/oauth2/token", handle.addr.port())
    );

    let h2 = client(Some(&ca), false);
    let token = fetch_token(&h2, &handle, FORM).await;
    let reply = get(&h2, &handle, "/1/x", &token).await;
    assert_eq!(
        (reply.status, reply.version),
        (StatusCode::OK, Version::HTTP_2)
    );
    // HTTP/2 forbids connection-specific headers, so `/sim/hop` sends none.
    let reply = get(&h2, &handle, "/sim/hop", &token).await;
    assert!(!reply.headers.contains_key("x-hop") && !reply.headers.contains_key("connection"));

    let http1 = http1_tls_client(&ca);
    let reply = get(&http1, &handle, "/sim/hop", &token).await;
    assert_eq!(
        (reply.status, reply.version),
        (StatusCode::OK, Version::HTTP_11)
    );
    assert_eq!(reply.header("x-hop"), "1");
    let versions: Vec<_> = sim.received().iter().map(|r| r.version).collect();
    assert_eq!(
        versions,
        [Version::HTTP_2, Version::HTTP_2, Version::HTTP_11]
    );
}

#[tokio::test]
async fn tls_fails_closed_without_the_ca() {
    let sim = Sim::new(SimConfig::default());
    let handle = sim.serve_tls(bind().await, &TestCa::new());
    let other_ca = TestCa::new();
    let req = token_request(
        &handle.token_url(),
        &basic("sim-client", "sim-secret"),
        FORM,
    );
    assert!(client(Some(&other_ca), false).request(req).await.is_err());
    assert_eq!(sim.token_fetches(), 0);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_drop_aborts() {
    let sim = Sim::new(SimConfig::default());
    let handle = sim.serve_plain(bind().await);
    let addr = handle.addr;
    let client = client(None, false);
    fetch_token(&client, &handle, FORM).await;
    handle.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    let handle = sim.serve_plain(bind().await);
    let addr = handle.addr;
    drop(handle);
    tokio::task::yield_now().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A TLS client that offers only `http/1.1` by ALPN.
fn http1_tls_client(ca: &TestCa) -> TestClient {
    let tls = ca.client_config();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}
