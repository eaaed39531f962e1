//! The load comparison's upstream: a fixed 1.2 KB JSON answer over TLS
//! (HTTP/1.1 only, like the reference setup) and over plain HTTP, plus a
//! client-credentials token endpoint, as fast as hyper serves it. Every
//! proxy under test talks to this same process. Not a criterion bench:
//! `benches/load/run.sh` builds it with `cargo bench --no-run` and starts it.
//!
//! `load_upstream --tls ADDR --plain ADDR --dir DIR` writes `DIR/ca.pem`
//! (the generated CA to trust), then serves until killed. Worker threads:
//! `TOKIO_WORKER_THREADS` (default 1).
//!
//! API answers carry no `fitbit-rate-limit-*` headers: the proxy then
//! paces by its configured quota (10,000,000 an hour, all of it burst in
//! run.sh), so it never holds a request back. With headers, a proxy
//! started a few seconds after this upstream would re-plan its pace to the
//! reported reset, and with a quota this large run at the pacer's 1 ms
//! minimum interval: the bench would measure pacing, not forwarding.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use fitbit_proxy::sim::TestCa;
use http::{HeaderValue, Method, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut tls, mut plain, mut dir) = (None, None, None);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tls" => tls = args.next(),
            "--plain" => plain = args.next(),
            "--dir" => dir = args.next(),
            // `cargo bench` passes `--bench`; nothing to run then.
            "--bench" => return,
            other => panic!("unknown argument {other}"),
        }
    }
    let (Some(tls), Some(plain), Some(dir)) = (tls, plain, dir) else {
        eprintln!("usage: load_upstream --tls ADDR --plain ADDR --dir DIR");
        return;
    };
    let threads = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(serve(
        tls.parse().expect("--tls ADDR"),
        plain.parse().expect("--plain ADDR"),
        dir,
    ));
}

async fn serve(tls_addr: SocketAddr, plain_addr: SocketAddr, dir: String) {
    let ca = TestCa::new();
    std::fs::write(format!("{dir}/ca.pem"), ca.cert_pem()).expect("write ca.pem");
    let (chain, key) = ca.issue(&["localhost", "127.0.0.1"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let tls = TcpListener::bind(tls_addr).await.expect("bind --tls");
    let plain = TcpListener::bind(plain_addr).await.expect("bind --plain");
    let app = Arc::new(App::new());
    let plain_app = Arc::clone(&app);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = plain.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let app = Arc::clone(&plain_app);
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        service_fn(move |req| std::future::ready(app.answer(&req))),
                    )
                    .await;
            });
        }
    });
    eprintln!("load_upstream: tls {tls_addr}, plain {plain_addr}");
    loop {
        let Ok((stream, _)) = tls.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = Arc::clone(&app);
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let _ = http1::Builder::new()
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| std::future::ready(app.answer(&req))),
                )
                .await;
        });
    }
}

struct App {
    body: Bytes,
    token: Bytes,
}

impl App {
    fn new() -> App {
        App {
            body: Bytes::from(json_body()),
            token: Bytes::from_static(
                br#"{"access_token":"load-test-token","expires_in":28800,"scope":"activity heartrate","token_type":"Bearer"}"#,
            ),
        }
    }

    fn answer(&self, req: &Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        let json = HeaderValue::from_static("application/json;charset=UTF-8");
        if req.method() == Method::POST && req.uri().path() == "/oauth2/token" {
            let mut res = Response::new(Full::new(self.token.clone()));
            res.headers_mut().insert(http::header::CONTENT_TYPE, json);
            return Ok(res);
        }
        let mut res = Response::new(Full::new(self.body.clone()));
        let h = res.headers_mut();
        h.insert(http::header::CONTENT_TYPE, json);
        Ok(res)
    }
}

/// About 1.2 KB of activity-summary-like JSON.
fn json_body() -> String {
    let mut s = String::from(
        r#"{"activities":[],"goals":{"activeMinutes":30,"caloriesOut":2500,"distance":8.05,"floors":10,"steps":10000},"summary":{"activeScore":-1,"activityCalories":1134,"caloriesBMR":1722,"caloriesOut":2729,"distances":["#,
    );
    for (i, kind) in [
        "total",
        "tracker",
        "loggedActivities",
        "veryActive",
        "moderatelyActive",
        "lightlyActive",
        "sedentaryActive",
    ]
    .iter()
    .enumerate()
    {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"activity":"{kind}","distance":{}.{:02}}}"#,
            i + 1,
            i * 7 % 100
        ));
    }
    s.push_str(r#"],"elevation":30.48,"fairlyActiveMinutes":21,"floors":10,"heartRateZones":["#);
    for (i, zone) in ["Out of Range", "Fat Burn", "Cardio", "Peak"]
        .iter()
        .enumerate()
    {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"caloriesOut":{}.5,"max":{},"min":{},"minutes":{},"name":"{zone}"}}"#,
            1000 + i * 300,
            100 + i * 30,
            70 + i * 30,
            600 - i * 100
        ));
    }
    s.push_str(r#"],"lightlyActiveMinutes":220,"marginalCalories":700,"restingHeartRate":62,"sedentaryMinutes":679,"steps":11521,"veryActiveMinutes":34}}"#);
    // Pad to exactly 1200 bytes with one more field before the closing brace.
    let pad = 1200usize.saturating_sub(s.len() + r#","note":"""#.len());
    s.insert_str(s.len() - 1, &format!(r#","note":"{}""#, "x".repeat(pad)));
    s
}
