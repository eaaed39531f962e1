//! The status page in a real browser: `fitbit-proxy demo` runs, 20
//! requests go through it (10 sent at once, one waiting for its slot, nine
//! refused), and headless Chromium renders the admin port's `/`. The figures
//! the page shows must equal `/status.json` and `/metrics`, and every
//! request the browser makes must go to the admin port: Chromium is pointed
//! at a recording proxy in this test that sees all of them, loopback
//! included.
//!
//! Needs Debian's `chromium` (`.ci/run` installs it); without it the test
//! fails rather than pass unseen.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::binary::{free_addr, BIN};
use crate::support::{self, get, http1_client, send};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

const CHROMIUM: &str = "chromium";

/// `fitbit-proxy demo` as a child process, killed when dropped.
struct Demo {
    _child: tokio::process::Child,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Demo {
    async fn start() -> Demo {
        let proxy = free_addr().await;
        let mut child = tokio::process::Command::new(BIN)
            .args(["demo", "--listen", &proxy.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the binary starts");
        // The banner names the admin address (9090 when free).
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let admin = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.trim().strip_prefix("admin:") {
                    return url.trim().trim_start_matches("http://").parse().unwrap();
                }
            }
            panic!("the demo printed no admin address");
        })
        .await
        .expect("the demo starts");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Demo {
            _child: child,
            proxy,
            admin,
        }
    }

    async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let (res, body) = send(
            &http1_client(),
            get(&format!("http://{}{path}", self.admin)),
        )
        .await;
        (res.status(), String::from_utf8(body.to_vec()).unwrap())
    }

    async fn status(&self) -> serde_json::Value {
        let (status, body) = self.admin_get("/status.json").await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_str(&body).unwrap()
    }
}

/// The figures compared, as the page, `/status.json` and `/metrics` each
/// give them.
#[derive(Debug, PartialEq)]
struct Figures {
    limit: u64,
    remaining: u64,
    waiting: u64,
    refused: u64,
}

fn from_status(s: &serde_json::Value) -> Figures {
    Figures {
        limit: s["quota"]["limit"].as_u64().unwrap(),
        remaining: s["quota"]["remaining"].as_u64().unwrap(),
        waiting: s["line"]["waiting"].as_u64().unwrap(),
        refused: s["line"]["refused_rate_limited"].as_u64().unwrap(),
    }
}

fn from_metrics(text: &str) -> (Figures, f64) {
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} in /metrics"))
            .parse()
            .unwrap()
    };
    let figures = Figures {
        limit: value("fitbit_proxy_rate_limit_limit") as u64,
        remaining: value("fitbit_proxy_rate_limit_remaining") as u64,
        waiting: value("fitbit_proxy_queue_depth") as u64,
        refused: value("fitbit_proxy_paced_rejections_total{reason=\"rate_limited\"}") as u64,
    };
    (figures, value("fitbit_proxy_token_expires_in_seconds"))
}

/// The text of the element with `id` in a dumped DOM, and its attributes.
fn element(dom: &str, id: &str) -> (String, BTreeMap<String, String>) {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page"));
    let open = dom[..at].rfind('<').unwrap();
    let close = at + dom[at..].find('>').unwrap();
    let mut attrs = BTreeMap::new();
    for part in dom[open..close].split('"').collect::<Vec<_>>().chunks(2) {
        if let [name, value] = part {
            let name = name.trim().trim_end_matches('=');
            let name = name.rsplit(' ').next().unwrap();
            attrs.insert(name.to_owned(), (*value).to_owned());
        }
    }
    let end = close + 1 + dom[close + 1..].find('<').unwrap();
    (dom[close + 1..end].to_owned(), attrs)
}

fn from_page(dom: &str) -> (Figures, f64) {
    let number = |id: &str| -> u64 {
        let (text, _) = element(dom, id);
        text.trim()
            .parse()
            .unwrap_or_else(|_| panic!("#{id} shows {text:?}, not a number"))
    };
    let figures = Figures {
        limit: number("limit"),
        remaining: number("remaining"),
        waiting: number("waiting"),
        refused: number("refused-rate-limited"),
    };
    let (_, attrs) = element(dom, "token-expires");
    (figures, attrs["data-secs"].parse().unwrap())
}

/// An HTTP proxy that records the target of every request the browser
/// makes and forwards it, if it is for `allowed`, to there.
/// What the recording proxy saw: each request's target, and whether it
/// was a `CONNECT` (a tunnel for HTTPS).
type Seen = Arc<Mutex<Vec<(String, bool)>>>;

async fn recording_proxy(allowed: SocketAddr) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        let connect = req.method() == http::Method::CONNECT;
                        record
                            .lock()
                            .unwrap()
                            .push((req.uri().to_string(), connect));
                        Ok::<_, Infallible>(forward(allowed, req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn forward(allowed: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let target = req.uri().authority().map(|a| a.as_str().to_owned());
    if target.as_deref() != Some(allowed.to_string().as_str()) {
        let mut res = Response::new(Full::new(Bytes::from_static(b"not forwarded")));
        *res.status_mut() = StatusCode::BAD_GATEWAY;
        return res;
    }
    let (parts, _) = req.into_parts();
    let (res, body) = send(
        &http1_client(),
        Request::builder()
            .method(parts.method)
            .uri(parts.uri)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    let mut out = Response::new(Full::new(body));
    *out.status_mut() = res.status();
    *out.headers_mut() = res.headers().clone();
    out
}

/// The page as headless Chromium renders it, with its script run.
async fn render(url: &str, proxy: SocketAddr) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--disable-client-side-phishing-detection",
            "--disable-domain-reliability",
            "--disable-breakpad",
            "--metrics-recording-only",
            "--no-default-browser-check",
            "--no-pings",
            "--disable-features=NetworkTimeServiceQuerying,OptimizationHints,MediaRouter,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions,SafeBrowsing,PrivacySandboxSettings4",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--proxy-server=http://{proxy}"))
        // Without this, Chromium sends loopback requests past the proxy.
        .arg("--proxy-bypass-list=<-loopback>")
        .arg("--virtual-time-budget=5000")
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("Chromium renders the page in time")
        .unwrap_or_else(|e| {
            panic!("cannot run {CHROMIUM} (Debian's chromium package; .ci/run installs it): {e}")
        });
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_what_status_json_and_metrics_say() {
    let demo = Demo::start().await;
    support::eventually_async(Duration::from_secs(30), || async {
        demo.admin_get("/readyz").await.0 == StatusCode::OK
    })
    .await;

    // 20 requests at once against the demo's 150 an hour, burst 10: ten
    // go at once, the next waits 24 s for its slot, the other nine would
    // wait past max_wait (30 s) and are refused.
    let proxy = demo.proxy;
    let sending: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let mut req = get(&format!("http://{proxy}/1/user/-/profile.json"));
                req.headers_mut()
                    .insert("x-caller", http::HeaderValue::from_static("dashboard"));
                send(&http1_client(), req).await.0.status()
            })
        })
        .collect();
    support::eventually_seen(Duration::from_secs(20), || async {
        let s = demo.status().await;
        let settled = s["line"]["waiting"] == 1 && s["line"]["refused_rate_limited"] == 9;
        settled.then_some(()).ok_or(s)
    })
    .await;

    // What Chromium requests on its own, with no page at all (its Google
    // services over HTTPS, whatever the flags): not the page's doing.
    let (recorder, seen) = recording_proxy(demo.admin).await;
    render("about:blank", recorder).await;
    let own: Vec<String> = std::mem::take(&mut *seen.lock().unwrap())
        .into_iter()
        .filter(|(_, connect)| *connect)
        .map(|(target, _)| target)
        .collect();

    // The state is still while the one request waits; compare the three
    // views, again if something moved between the readings.
    let mut compared = false;
    for _ in 0..3 {
        let before = from_status(&demo.status().await);
        let dom = render(&format!("http://{}/", demo.admin), recorder).await;
        let after = demo.status().await;
        let (_, metrics) = demo.admin_get("/metrics").await;
        if before != from_status(&after) {
            continue;
        }
        let (page, page_expires) = from_page(&dom);
        let (metered, metric_expires) = from_metrics(&metrics);
        assert_eq!(page, before, "the page against /status.json");
        assert_eq!(metered, before, "/metrics against /status.json");
        assert_eq!(
            before,
            Figures {
                limit: 150,
                remaining: 140,
                waiting: 1,
                refused: 9
            }
        );
        // The token's expiry, in seconds from now at each reading.
        let json_expires = after["token"]["expires_in_secs"].as_f64().unwrap();
        assert!(json_expires > 28_000.0, "{json_expires}");
        assert!(
            (page_expires - json_expires).abs() <= 5.0,
            "{page_expires} {json_expires}"
        );
        assert!(
            (metric_expires - json_expires).abs() <= 5.0,
            "{metric_expires} {json_expires}"
        );
        assert_eq!(element(&dom, "ready").0, "ready");
        // The callers table: one caller, which spent all of the quota sent.
        assert_eq!(
            after["callers"],
            serde_json::json!([{ "caller": "dashboard", "requests": 19, "sent": 10,
                                 "quota_share": 1.0, "refused": 9 }])
        );
        assert!(
            dom.contains("<td>dashboard</td><td>19</td><td>100.0 %</td><td>9</td>"),
            "the callers table in {dom}"
        );
        compared = true;
        break;
    }
    assert!(compared, "the state kept moving while the page was read");

    // Every request made while the page was shown went to the admin port
    // (the page, its data, the favicon), or is one Chromium makes on its
    // own without any page.
    let seen = seen.lock().unwrap().clone();
    let admin = format!("http://{}/", demo.admin);
    let targets: Vec<&String> = seen.iter().map(|(target, _)| target).collect();
    assert!(targets.contains(&&admin), "{seen:?}");
    assert!(
        targets.contains(&&format!("{admin}status.json")),
        "{seen:?}"
    );
    for (target, connect) in &seen {
        assert!(
            target.starts_with(&admin) || (*connect && own.contains(target)),
            "the page requested {target} (Chromium's own: {own:?})"
        );
    }

    drop(demo);
    for s in sending {
        let _ = s.await;
    }
}

#[tokio::test]
async fn the_page_is_small_safe_and_read_only() {
    let demo = Demo::start().await;
    let (res, body) = send(&http1_client(), get(&format!("http://{}/", demo.admin))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(body.len() < 50 * 1024, "{} bytes", body.len());
    let csp = res.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    // Nothing on the admin port changes state: other methods are refused.
    for method in ["POST", "PUT", "DELETE"] {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}/status.json", demo.admin))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let (res, _) = send(&http1_client(), req).await;
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
}
