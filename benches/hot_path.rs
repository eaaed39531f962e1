//! Per-request costs, with criterion:
//!
//! - `hot_path/*`: the pieces every request goes through (header hygiene,
//!   token read, pacing admit + learn) and the whole layer stack in front
//!   of an in-memory upstream (no sockets);
//! - `end_to_end/*`: one request through the running proxy to the
//!   simulator over loopback, plain and TLS upstream, keep-alive.
//!
//! Pacing is configured with a quota so large that it never holds a
//! request back. `cargo bench --bench hot_path`.

// Benches measure real time; no paused-time test runs this.
#![allow(clippy::disallowed_types)]

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use fitbit_proxy::config::LogFormat;
use fitbit_proxy::layers::caller::Caller;
use fitbit_proxy::layers::hop_by_hop;
use fitbit_proxy::ops::metrics::Metrics;
use fitbit_proxy::pacing::Pacer;
use fitbit_proxy::sim::{Sim, SimConfig, TestCa};
use fitbit_proxy::token::{Exchange, TokenSource};
use fitbit_proxy::Config;
use fitbit_proxy::{Body, BoxError};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tower::ServiceExt;

const SECRET: &str = "bench-secret";
const RATE_LIMIT: &str = "hourly_quota = 10000000\nburst = 10000000\nmax_queued = 1000000";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn sim() -> Sim {
    Sim::new(SimConfig {
        client_id: "bench".into(),
        client_secret: SECRET.into(),
        quota: 10_000_000,
        ..SimConfig::default()
    })
}

fn config(base_url: &str, token_url: &str, ca: Option<&Path>) -> Config {
    let ca = ca
        .map(|p| format!("ca_file = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    let toml = format!(
        "[listen]\naddr = \"127.0.0.1:0\"\n[admin]\naddr = \"\"\n[upstream]\nurl = \"{base_url}\"\n{ca}\
         [credentials]\ntoken_url = \"{token_url}\"\nclient_id = \"bench\"\nclient_secret_env = \"BENCH_SECRET\"\n\
         [rate_limit]\n{RATE_LIMIT}\n"
    );
    let env = |name: &str| (name == "BENCH_SECRET").then(|| SECRET.to_owned());
    Config::from_toml_str_with_env(&toml, Path::new("bench.toml"), &env).expect("bench config")
}

/// What a typical client sends.
fn client_request() -> Request<Full<Bytes>> {
    Request::get("/1/user/-/activities/date/today.json")
        .header("host", "fitbit-proxy.internal:8080")
        .header("user-agent", "bench/1.0")
        .header("accept", "application/json")
        .header("accept-language", "en_US")
        .header("authorization", "Basic Zm9vOmJhcg==")
        .header("connection", "keep-alive")
        .body(Full::new(Bytes::new()))
        .expect("request")
}

/// The upstream's answer: 1.2 KB of JSON and rate-limit headers (a window
/// that resets an hour after `start`, as the proxy assumes at first: a
/// reset far from that would make the pacer re-plan, and with a quota this
/// large pace at its 1 ms minimum interval).
fn upstream_answer(body: &Bytes, start: std::time::Instant) -> Response<Body> {
    let elapsed = start.elapsed().as_secs();
    let mut res = Response::new(Body::full(body.clone()));
    let h = res.headers_mut();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("fitbit-rate-limit-limit", HeaderValue::from(10_000_000u32));
    h.insert(
        "fitbit-rate-limit-remaining",
        HeaderValue::from(9_000_000u32),
    );
    h.insert("fitbit-rate-limit-reset", HeaderValue::from(3600 - elapsed));
    res
}

fn hot_path(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("hot_path");

    group.bench_function("strip_headers_and_attach_token", |b| {
        let req = client_request();
        let token = HeaderValue::from_static("Bearer abcdefghijklmnopqrstuvwxyz0123456789");
        b.iter(|| {
            let mut h = req.headers().clone();
            hop_by_hop::strip_hop_by_hop(&mut h);
            hop_by_hop::strip_client_credentials(&mut h);
            h.insert(http::header::AUTHORIZATION, token.clone());
            h
        });
    });

    // A token source with a token, fetched from the simulator.
    let sim = sim();
    let (tokens, cfg, _server) = rt.block_on(async {
        let server = sim.serve_plain(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let cfg = config(&server.base_url(), &server.token_url(), None);
        let client = fitbit_proxy::upstream::build_client(&cfg.upstream).unwrap();
        let tokens = TokenSource::new(Duration::from_secs(5));
        let exchange = Exchange::new(client, &cfg.credentials, Duration::from_secs(5));
        let _refresher = tokens.spawn_refresher(
            exchange,
            cfg.credentials.refresh_before_expiry,
            Arc::new(Metrics::new()),
        );
        tokens.acquire().await.expect("a token from the simulator");
        (tokens, cfg, server)
    });
    group.bench_function("token_read", |b| {
        b.iter(|| tokens.valid().expect("valid"));
    });

    // A fresh pacer for every sample: with one pacer, a few million sends in a
    // row spend enough of the budget that it re-plans and then refuses.
    let json = Bytes::from(vec![b'x'; 1200]);
    group.bench_function("pacer_admit_and_learn", |b| {
        b.iter_custom(|iters| {
            let pacer = Pacer::new(&cfg.rate_limit);
            let start = std::time::Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    let permit = pacer
                        .admit(&Caller::standalone("bench", 1))
                        .await
                        .expect("admitted");
                    let answer = upstream_answer(&json, start);
                    std::hint::black_box(pacer.observe(permit, StatusCode::OK, answer.headers()));
                }
            });
            start.elapsed()
        });
    });

    // Every layer, in front of an in-memory upstream (a fresh stack, so a
    // fresh pacer, for every sample).
    let body = Bytes::from(vec![b'x'; 1200]);
    group.bench_function("layers_to_in_memory_upstream", |b| {
        b.iter_custom(|iters| {
            let metrics = Arc::new(Metrics::new());
            let pacer = Pacer::new(&cfg.rate_limit);
            let start = std::time::Instant::now();
            let body = body.clone();
            let upstream = tower::service_fn(move |_req: Request<Body>| {
                let res = upstream_answer(&body, start);
                async move { Ok::<_, BoxError>(res) }
            });
            let stack = fitbit_proxy::stack::layers(&cfg, Arc::clone(&tokens), pacer, metrics)
                .service(upstream);
            let timer = std::time::Instant::now();
            rt.block_on(async {
                for _ in 0..iters {
                    let res: Response<Body> = stack
                        .clone()
                        .oneshot(client_request())
                        .await
                        .unwrap_or_else(|e: Infallible| match e {});
                    std::hint::black_box(res.into_body().collect().await.expect("body").to_bytes());
                }
            });
            timer.elapsed()
        });
    });
    group.finish();
}

fn end_to_end(c: &mut Criterion) {
    // The access log is part of every request's cost: written as in
    // production (run the bench with `2>/dev/null`).
    let _log = fitbit_proxy::ops::logging::init(LogFormat::Text);
    let rt = runtime();
    let mut group = c.benchmark_group("end_to_end");
    group.measurement_time(Duration::from_secs(5));
    for tls in [false, true] {
        let sim = sim();
        let dir = tempfile::tempdir().unwrap();
        let (proxy, _server, _stop) = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (server, ca_file) = if tls {
                let ca = TestCa::new();
                let path = dir.path().join("ca.pem");
                std::fs::write(&path, ca.cert_pem()).unwrap();
                (sim.serve_tls(listener, &ca), Some(path))
            } else {
                (sim.serve_plain(listener), None)
            };
            let cfg = config(&server.base_url(), &server.token_url(), ca_file.as_deref());
            let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let proxy = proxy_listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            tokio::spawn(fitbit_proxy::run_with_admin(
                proxy_listener,
                None,
                cfg,
                async {
                    let _ = stopped.await;
                },
            ));
            (proxy, server, stop)
        });
        let client: Client<_, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let uri: http::Uri = format!("http://{proxy}/1/user/-/activities/date/today.json")
            .parse()
            .unwrap();
        let name = if tls {
            "tls_upstream"
        } else {
            "plain_upstream"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut req = client_request();
                    *req.uri_mut() = uri.clone();
                    let res = client.request(req).await.expect("proxy answers");
                    assert_eq!(res.status(), StatusCode::OK);
                    res.into_body().collect().await.expect("body").to_bytes()
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, hot_path, end_to_end);
criterion_main!(benches);
