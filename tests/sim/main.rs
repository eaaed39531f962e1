//! Integration tests of the simulated Fitbit API over real loopback sockets:
//! the token endpoint, the API with its quota, and the transports (HTTP/1.1,
//! h2c, TLS with ALPN). Time-dependent cases run under paused tokio time.

mod api;
mod token;
mod transport;

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use fitbit_proxy::sim::{ServerHandle, Sim, SimConfig, TestCa};
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

type TestClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// What came back, read in full.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn error_type(&self) -> String {
        self.json()["errors"][0]["errorType"]
            .as_str()
            .expect("a Fitbit-shaped error")
            .to_owned()
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

/// A sim serving plain HTTP on 127.0.0.1, and a client for it.
async fn start_plain(cfg: SimConfig) -> (Sim, ServerHandle, TestClient) {
    let sim = Sim::new(cfg);
    let handle = sim.serve_plain(bind().await);
    (sim, handle, client(None, false))
}

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// HTTP/1.1 and HTTP/2 (ALPN) over TLS trusting `ca`, plain HTTP otherwise;
/// `h2_only` sends HTTP/2 with prior knowledge (h2c on plain HTTP).
fn client(ca: Option<&TestCa>, h2_only: bool) -> TestClient {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        roots.add(ca.cert_der()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .build();
    Client::builder(TokioExecutor::new())
        .http2_only(h2_only)
        .build(connector)
}

async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Reply {
    let response = client.request(req).await.expect("the sim answers");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: body.collect().await.expect("a whole body").to_bytes(),
    }
}

fn basic(id: &str, secret: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(id), enc(secret));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A token request as the proxy sends it (SPEC T1).
fn token_request(url: &str, authorization: &str, form: &str) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("authorization", authorization)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(Full::new(Bytes::from(form.to_owned())))
        .unwrap()
}

/// Fetches a token with the default credentials and returns it.
async fn fetch_token(client: &TestClient, handle: &ServerHandle, form: &str) -> String {
    let auth = basic("sim-client", "sim-secret");
    let reply = send(client, token_request(&handle.token_url(), &auth, form)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()["access_token"].as_str().unwrap().to_owned()
}

fn api_request(method: Method, url: &str, token: Option<&str>) -> Request<Full<Bytes>> {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(Full::new(Bytes::new())).unwrap()
}

async fn get(client: &TestClient, handle: &ServerHandle, path: &str, token: &str) -> Reply {
    let url = format!("{}{path}", handle.base_url());
    send(client, api_request(Method::GET, &url, Some(token))).await
}
