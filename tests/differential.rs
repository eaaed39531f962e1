//! Differential parsing of HTTP/1 (6.08, the HTTP Garden method). The same
//! tricky byte streams (smuggling vectors, re-written from the HTTP Garden
//! and smuggler families) go to nginx, HAProxy (Debian's packages, started
//! here as child processes on loopback) and fitbit-proxy, each in front of
//! its own recording upstream. fitbit-proxy must never forward a request that
//! both references refused, and what it forwards must match what at least one
//! reference forwarded: the same requests, each with the same method, path,
//! body, framing (a length, chunked, or none) and end-to-end fields.
//!
//! .ci/run installs nginx-light and haproxy; a missing binary fails the test,
//! in CI or not: a comparison that did not run must not pass.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request an upstream received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Forwarded {
    method: String,
    path: String,
    body: Vec<u8>,
    /// How the body was framed: `length N`, `chunked` or `none`.
    framing: String,
    /// The end-to-end fields, lower-cased names, sorted by name (values of
    /// a repeated field in the order they came); without the ones
    /// each front sets its own way (`host`, `authorization`,
    /// `x-request-id`, framing and connection fields).
    fields: Vec<(String, String)>,
}

/// Fields a front rewrites by design, left out of the comparison.
const FRONT_FIELDS: [&str; 8] = [
    "host",
    "authorization",
    "x-request-id",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "keep-alive",
];

impl Forwarded {
    fn new(req: &http::request::Parts, body: Vec<u8>) -> Self {
        let h = &req.headers;
        let framing = match (h.get("transfer-encoding"), h.get("content-length")) {
            (Some(te), _) => te.to_str().unwrap_or("?").to_ascii_lowercase(),
            (None, Some(cl)) => format!("length {}", cl.to_str().unwrap_or("?")),
            (None, None) => "none".to_owned(),
        };
        let mut fields: Vec<(String, String)> = h
            .iter()
            .filter(|(n, _)| !FRONT_FIELDS.contains(&n.as_str()))
            .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        // By name only: repeated fields keep their order.
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        Forwarded {
            method: req.method.to_string(),
            path: req.uri.path().to_owned(),
            body,
            framing,
            fields,
        }
    }

    /// A request whose body broke mid-stream reached the upstream aborted:
    /// it saw a framing error, never a whole request.
    fn complete(&self) -> bool {
        self.body != CUT
    }
}
type Seen = Arc<Mutex<Vec<Forwarded>>>;
/// What one front did with a vector: the statuses it answered, and what
/// its upstream received.
type Outcome = (Vec<u16>, Vec<Forwarded>);

/// The body a recorder notes for a request whose body ended in an error.
const CUT: &[u8] = b"<aborted mid-body>";

/// A plain HTTP/1 upstream that records every request and answers 200.
async fn recorder() -> (SocketAddr, Seen) {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let log = Arc::clone(&log);
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body.collect().await.map(|b| b.to_bytes());
                        let body = body.map_or_else(|_| CUT.to_vec(), |b| b.to_vec());
                        log.lock().unwrap().push(Forwarded::new(&parts, body));
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A free loopback port for a child process (bound, then released).
async fn free_port() -> u16 {
    bind().await.local_addr().unwrap().port()
}

/// A reference server run as a child process; stopped (by its own PID) on drop.
struct Reference {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    seen: Seen,
}

impl Drop for Reference {
    /// SIGTERM, not SIGKILL: nginx's master stops its worker on TERM, but a
    /// killed master leaves the worker running, orphaned.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let termed = Command::new("kill").args(["-TERM", &pid]).status();
        if !termed.is_ok_and(|s| s.success()) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn find(binary: &str) -> Option<String> {
    ["/usr/sbin", "/usr/bin", "/usr/local/sbin"]
        .iter()
        .map(|d| format!("{d}/{binary}"))
        .find(|p| Path::new(p).exists())
}

async fn nginx(bin: &str, dir: &Path) -> Reference {
    let (upstream, seen) = recorder().await;
    let port = free_port().await;
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log warn;\n\
         daemon off;\nevents {{ worker_connections 64; }}\nhttp {{\n\
         access_log off;\nclient_body_temp_path {d}/ngx-body;\nproxy_temp_path {d}/ngx-proxy;\n\
         proxy_http_version 1.1;\nproxy_set_header Connection \"\";\n\
         server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://{upstream}; }} }}\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(bin)
        .args(["-p", &d.to_string(), "-e", &format!("{d}/nginx-error.log")])
        .args(["-c", &format!("{d}/nginx.conf")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx");
    started("nginx", child, port, seen).await
}

async fn haproxy(bin: &str, dir: &Path) -> Reference {
    let (upstream, seen) = recorder().await;
    let port = free_port().await;
    let cfg = format!(
        "global\n    nbthread 1\ndefaults\n    mode http\n    timeout connect 5s\n\
         timeout client 10s\n    timeout server 10s\nfrontend f\n    bind 127.0.0.1:{port}\n\
         default_backend b\nbackend b\n    server up {upstream}\n"
    );
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let child = Command::new(bin)
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    started("haproxy", child, port, seen).await
}

async fn started(name: &'static str, child: Child, port: u16, seen: Seen) -> Reference {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let reference = Reference {
        name,
        child,
        addr,
        seen,
    };
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return reference;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} did not listen on {addr}");
}

/// Sends `bytes`, reads until the peer closes or goes quiet; the status
/// codes of the answers.
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u16> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(700), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out)
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| out.get(i + 9..i + 12))
        .filter_map(|c| std::str::from_utf8(c).ok()?.parse().ok())
        .collect()
}

/// The vectors: name, bytes. Each ends its last request with
/// `Connection: close` where it can, so a front that parsed it closes.
fn corpus() -> Vec<(&'static str, Vec<u8>)> {
    // End-to-end fields every front must pass unchanged, in order.
    let h = "Host: a\r\nAccept-Language: en_US\r\nX-Rep: 1\r\nX-Rep: 2\r\n";
    let v = |name, s: String| (name, s.into_bytes());
    vec![
        v("plain GET", format!("GET /1/a HTTP/1.1\r\n{h}Connection: close\r\n\r\n")),
        v("POST with a length", format!("POST /1/a HTTP/1.1\r\n{h}Content-Length: 3\r\nConnection: close\r\n\r\nabc")),
        v("POST chunked", format!("POST /1/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")),
        v("CL+TE (CL.TE smuggling)", format!("POST /1/a HTTP/1.1\r\n{h}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /1/smuggled HTTP/1.1\r\n{h}Connection: close\r\n\r\n")),
        v("two different CLs", format!("POST /1/a HTTP/1.1\r\n{h}Content-Length: 3\r\nContent-Length: 30\r\nConnection: close\r\n\r\nabc")),
        v("CL with a sign", format!("POST /1/a HTTP/1.1\r\n{h}Content-Length: +3\r\nConnection: close\r\n\r\nabc")),
        v("TE chunked, gzip (not last)", format!("POST /1/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked, gzip\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")),
        v("TE with a space before the colon", format!("POST /1/a HTTP/1.1\r\n{h}Transfer-Encoding : chunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\n0\r\n\r\n")),
        v("TE xchunked", format!("POST /1/a HTTP/1.1\r\n{h}Transfer-Encoding: xchunked\r\nContent-Length: 5\r\nConnection: close\r\n\r\n0\r\n\r\n")),
        v("TE obs-folded", format!("POST /1/a HTTP/1.1\r\n{h}Transfer-Encoding:\r\n chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")),
        v("chunk size with an extension and bad hex", format!("POST /1/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;x=y\r\nabc\r\n0x0\r\n\r\n")),
        v("chunk size overflow", format!("POST /1/a HTTP/1.1\r\n{h}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n")),
        v("bare LF line endings", format!("GET /1/a HTTP/1.1\n{h}Connection: close\n\n").replace("\r\n", "\n")),
        v("NUL in a header value", format!("GET /1/a HTTP/1.1\r\n{h}X-A: a\0b\r\nConnection: close\r\n\r\n")),
        v("two Hosts", format!("GET /1/a HTTP/1.1\r\n{h}Host: b\r\nConnection: close\r\n\r\n")),
        v("pipelined pair", format!("GET /1/a HTTP/1.1\r\n{h}\r\nGET /1/b HTTP/1.1\r\n{h}Connection: close\r\n\r\n")),
        v("HTTP/1.0 with TE", format!("POST /1/a HTTP/1.0\r\n{h}Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")),
        v("space in the request target", format!("GET /1/a b HTTP/1.1\r\n{h}Connection: close\r\n\r\n")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fitbit_proxy_forwards_nothing_both_nginx_and_haproxy_refuse() {
    let (Some(ng), Some(ha)) = (find("nginx"), find("haproxy")) else {
        panic!("nginx or haproxy is missing: .ci/run installs nginx-light and haproxy (6.08)");
    };
    let dir = tempfile::tempdir().unwrap();
    let refs = [nginx(&ng, dir.path()).await, haproxy(&ha, dir.path()).await];

    // fitbit-proxy in front of its own recorder (token from the simulator).
    let (fp_upstream, fp_seen) = recorder().await;
    let h = Setup::default()
        .upstream_url(format!("http://{fp_upstream}"))
        .start()
        .await;
    let fp = h.proxy;

    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for (name, bytes) in corpus() {
        let mut forwarded = Vec::new();
        for front in refs
            .iter()
            .map(|r| (r.addr, &r.seen))
            .chain([(fp, &fp_seen)])
        {
            front.1.lock().unwrap().clear();
            let statuses = exchange(front.0, &bytes).await;
            // Let the upstream side finish recording.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let seen: Vec<Forwarded> = front.1.lock().unwrap().clone();
            forwarded.push((statuses, seen));
        }
        let [nginx, haproxy, ours] = &forwarded[..] else {
            unreachable!()
        };
        let show = |(st, seen): &Outcome| {
            let reqs: Vec<String> = seen
                .iter()
                .map(|f| {
                    let body = String::from_utf8_lossy(&f.body);
                    format!(
                        "{} {} [{}] {body:?} {:?}",
                        f.method, f.path, f.framing, f.fields
                    )
                })
                .collect();
            format!("{st:?} fwd {reqs:?}")
        };
        report.push(format!(
            "{name:42} nginx {:40} haproxy {:40} fitbit-proxy {}",
            show(nginx),
            show(haproxy),
            show(ours)
        ));
        // A request whose body broke mid-stream reached the upstream
        // aborted (it saw a framing error, never a whole request): a
        // streaming proxy cannot refuse what it has not read yet.
        let complete = |f: &Outcome| -> Vec<Forwarded> {
            f.1.iter().filter(|r| r.complete()).cloned().collect()
        };
        let ours_complete = complete(ours);
        let agrees = ours_complete.is_empty()
            || ours_complete == complete(nginx)
            || ours_complete == complete(haproxy);
        if !agrees {
            wrong.push(name);
        }
    }
    println!("fronts: {}, {}, fitbit-proxy", refs[0].name, refs[1].name);
    println!("{}", report.join("\n"));
    assert!(
        wrong.is_empty(),
        "fitbit-proxy forwarded what no reference did: {wrong:?}\n{}",
        report.join("\n")
    );
}
