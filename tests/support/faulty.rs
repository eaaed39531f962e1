//! A scripted raw upstream (catalog actor U/X) for the answers and faults a
//! real server would never produce: broken framing, resets, truncation,
//! trickles, bad certificates. It records every request head it reads, on
//! which connection, and counts accepted connections. A proxy started with
//! [`super::Setup::upstream_url`] (or [`super::Setup::token_url`]) set to its URL talks
//! to it and to the simulator for the rest.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::bind;
use super::invariants::HOP_BY_HOP;

/// What the upstream does after reading a request head (and its body).
#[derive(Debug, Clone)]
pub enum Step {
    Send(Vec<u8>),
    /// Waits this long (tokio time).
    Pause(Duration),
    /// Closes the connection with a TCP RST.
    Reset,
    /// Closes the connection (FIN; over TLS without `close_notify`).
    Close,
    /// Keeps the connection open and silent until the peer closes it (at
    /// most 60 s).
    Hold,
}

pub fn send(bytes: impl AsRef<[u8]>) -> Step {
    Step::Send(bytes.as_ref().to_vec())
}

/// One request as the upstream read it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which accepted connection (0, 1, …) carried it.
    pub conn: usize,
    /// Its place on that connection (0 for the first request).
    pub nth: usize,
    /// The request line and header fields, as sent.
    pub head: String,
    pub body: Vec<u8>,
}

impl Seen {
    /// The request target of the request line.
    pub fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }
}

type Script = dyn Fn(&Seen) -> Vec<Step> + Send + Sync;

/// A running raw upstream.
#[derive(Clone)]
pub struct RawUpstream {
    pub addr: SocketAddr,
    tls: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    accepted: Arc<AtomicUsize>,
}

/// A TLS server (ring, TLS 1.2 and 1.3) for a scripted upstream, offering
/// `alpn` (nothing: no ALPN).
pub fn tls_acceptor(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> TlsAcceptor {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("certificate matches key");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsAcceptor::from(Arc::new(config))
}

impl RawUpstream {
    /// Serves plain HTTP/1.1: after each request the script's steps run;
    /// unless they end the connection, the next request is read.
    pub async fn start(script: impl Fn(&Seen) -> Vec<Step> + Send + Sync + 'static) -> Self {
        Self::spawn(bind().await, None, Arc::new(script)).await
    }

    /// The same over TLS with `chain` and `key` (no ALPN: HTTP/1.1).
    pub async fn start_tls(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        script: impl Fn(&Seen) -> Vec<Step> + Send + Sync + 'static,
    ) -> Self {
        Self::start_tls_on(bind().await, chain, key, script).await
    }

    /// [`RawUpstream::start_tls`] on a listener of the caller's (another
    /// loopback address, for instance).
    pub async fn start_tls_on(
        listener: TcpListener,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        script: impl Fn(&Seen) -> Vec<Step> + Send + Sync + 'static,
    ) -> Self {
        let tls = Some(tls_acceptor(chain, key, &[]));
        Self::spawn(listener, tls, Arc::new(script)).await
    }

    async fn spawn(listener: TcpListener, tls: Option<TlsAcceptor>, script: Arc<Script>) -> Self {
        let raw = RawUpstream {
            addr: listener.local_addr().unwrap(),
            tls: tls.is_some(),
            seen: Arc::default(),
            accepted: Arc::default(),
        };
        let (seen, accepted) = (raw.seen.clone(), raw.accepted.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let conn = accepted.fetch_add(1, Ordering::SeqCst);
                let (seen, script, tls) = (seen.clone(), script.clone(), tls.clone());
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    match tls {
                        None => serve_conn(tcp, conn, seen, script).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                serve_conn(stream, conn, seen, script).await;
                            }
                        }
                    }
                });
            }
        });
        raw
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` over TLS.
    pub fn url(&self) -> String {
        match self.tls {
            false => format!("http://{}", self.addr),
            true => format!("https://localhost:{}", self.addr.port()),
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The upstream sees only clean requests (G1), for a raw upstream: every
    /// request carries exactly one of the proxy's bearer tokens, no
    /// hop-by-hop field and nothing of the client's credentials.
    pub fn assert_clean(&self) {
        for s in self.seen() {
            let lower = s.head.to_ascii_lowercase();
            let auth: Vec<_> = lower
                .lines()
                .filter(|l| l.starts_with("authorization:"))
                .collect();
            assert_eq!(auth.len(), 1, "G1: {}", s.head);
            assert!(
                s.head.contains("Bearer TOKEN_CANARY_") || s.path().starts_with("/oauth2/"),
                "G1: {}",
                s.head
            );
            for name in HOP_BY_HOP {
                assert!(
                    !lower.contains(&format!("\r\n{name}:")),
                    "G1: {name} reached U: {}",
                    s.head
                );
            }
            assert!(!s.head.contains("CLIENTAUTH_CANARY"), "G1: {}", s.head);
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {
    fn tcp(&self) -> &TcpStream;
}

impl Io for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Io for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

async fn serve_conn(
    mut io: impl Io,
    conn: usize,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Script>,
) {
    let mut buf = Vec::new();
    for nth in 0..1000 {
        let Some(request) = read_request(&mut io, &mut buf, conn, nth).await else {
            return;
        };
        seen.lock().unwrap().push(request.clone());
        for step in script(&request) {
            match step {
                Step::Send(bytes) => {
                    if io.write_all(&bytes).await.is_err() {
                        return;
                    }
                    let _ = io.flush().await;
                }
                Step::Pause(d) => tokio::time::sleep(d).await,
                Step::Reset => {
                    let _ = io.tcp().set_zero_linger();
                    return;
                }
                Step::Close => return,
                Step::Hold => {
                    let mut sink = [0u8; 1024];
                    let _ = tokio::time::timeout(Duration::from_secs(60), async {
                        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
                    })
                    .await;
                    return;
                }
            }
        }
    }
}

/// Reads one request head and its body (Content-Length or chunked).
async fn read_request(
    io: &mut impl Io,
    buf: &mut Vec<u8>,
    conn: usize,
    nth: usize,
) -> Option<Seen> {
    let end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        fill(io, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end);
    let lower = head.to_ascii_lowercase();
    let mut body = Vec::new();
    if lower.contains("\r\ntransfer-encoding: chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = find(buf, b"\r\n") {
                    break i;
                }
                fill(io, buf).await?;
            };
            let size = usize::from_str_radix(
                String::from_utf8_lossy(&buf[..line_end])
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            buf.drain(..line_end + 2);
            while buf.len() < size + 2 {
                fill(io, buf).await?;
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(len) = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
    {
        while buf.len() < len {
            fill(io, buf).await?;
        }
        body.extend(buf.drain(..len));
    }
    Some(Seen {
        conn,
        nth,
        head,
        body,
    })
}

async fn fill(io: &mut impl Io, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match io.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A certificate authority for the TLS cases, with an intermediate.
pub struct Pki {
    pub root_pem: String,
    root: Issuer<'static, KeyPair>,
    intermediate: Issuer<'static, KeyPair>,
    intermediate_der: CertificateDer<'static>,
}

/// A calendar date: year, month, day.
pub type Ymd = (i32, u8, u8);

/// How a leaf certificate is made.
pub struct Leaf<'a> {
    pub names: &'a [&'a str],
    /// Not valid before / after these (year, month, day); `None`: valid now.
    pub validity: Option<[Ymd; 2]>,
    /// Signed by the intermediate rather than the root.
    pub by_intermediate: bool,
}

impl Pki {
    pub fn new() -> Pki {
        let ca_params = |name: &str| {
            let mut p = CertificateParams::default();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p
        };
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("faulty root");
        let root_cert = root_params.self_signed(&root_key).unwrap();
        let root = Issuer::new(root_params, root_key);
        let mid_key = KeyPair::generate().unwrap();
        let mid_params = ca_params("faulty intermediate");
        let mid_cert = mid_params.signed_by(&mid_key, &root).unwrap();
        Pki {
            root_pem: root_cert.pem(),
            root,
            intermediate: Issuer::new(mid_params, mid_key),
            intermediate_der: mid_cert.der().clone(),
        }
    }

    /// A server certificate and key; the chain holds the leaf only.
    pub fn leaf(&self, leaf: Leaf<'_>) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        let names: Vec<String> = leaf.names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.names[0]);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if let Some([(y1, m1, d1), (y2, m2, d2)]) = leaf.validity {
            params.not_before = rcgen::date_time_ymd(y1, m1, d1);
            params.not_after = rcgen::date_time_ymd(y2, m2, d2);
        }
        let key = KeyPair::generate().unwrap();
        let issuer = match leaf.by_intermediate {
            true => &self.intermediate,
            false => &self.root,
        };
        let cert = params.signed_by(&key, issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (vec![cert.der().clone()], key)
    }

    /// A leaf for `localhost`, valid now, signed by the root.
    pub fn localhost(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        self.leaf(Leaf {
            names: &["localhost"],
            validity: None,
            by_intermediate: false,
        })
    }

    /// The intermediate's certificate, to complete a chain.
    pub fn intermediate(&self) -> CertificateDer<'static> {
        self.intermediate_der.clone()
    }
}

/// Accepts TLS connections offering ALPN `h2`, with `pki`'s leaf for
/// `localhost`, and runs `serve` on each with its number (0, 1, …).
async fn serve_h2_tls<F, Fut>(pki: &Pki, serve: F) -> SocketAddr
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (chain, key) = pki.localhost();
    let acceptor = tls_acceptor(chain, key, &[b"h2"]);
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let serve = Arc::new(serve);
    tokio::spawn(async move {
        for conn in 0.. {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, serve) = (acceptor.clone(), serve.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls, conn).await;
                }
            });
        }
    });
    addr
}

/// How an HTTP/2 upstream ([`H2Upstream`]) ends a connection after its
/// first answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2End {
    /// Keeps serving.
    Never,
    /// GOAWAY (NO_ERROR, last stream id = the one answered), then closes
    /// once its streams are done.
    Goaway,
    /// Closes the TCP connection without a GOAWAY once the answer is out.
    Close,
}

/// An HTTP/2 upstream over TLS (ALPN `h2` only). `/rst` answers 200 with
/// `content-length: 1000`, 10 bytes and (50 ms later) RST_STREAM(INTERNAL_ERROR);
/// anything else `{}`. Records paths with their connection numbers.
#[derive(Clone)]
pub struct H2Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
    closed: Arc<AtomicUsize>,
    authorities: Authorities,
}

/// Each request's `:authority` and its `host` fields, in arrival order.
type Authorities = Arc<Mutex<Vec<(Option<String>, Vec<String>)>>>;

impl H2Upstream {
    /// Serves with `pki`'s leaf for `localhost`.
    pub async fn start(pki: &Pki, end: H2End) -> Self {
        let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
        let closed: Arc<AtomicUsize> = Arc::default();
        let authorities: Authorities = Arc::default();
        let (s, c, a) = (
            Arc::clone(&seen),
            Arc::clone(&closed),
            Arc::clone(&authorities),
        );
        let addr = serve_h2_tls(pki, move |tls, conn| {
            let (seen, closed, authorities) = (s.clone(), c.clone(), a.clone());
            async move {
                let _ = serve_h2(tls, conn, end, seen, authorities).await;
                closed.fetch_add(1, Ordering::SeqCst);
            }
        })
        .await;
        H2Upstream {
            addr,
            seen,
            closed,
            authorities,
        }
    }

    /// Each request's `:authority` and `host` fields, in arrival order.
    pub fn authorities(&self) -> Vec<(Option<String>, Vec<String>)> {
        self.authorities.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Connections this upstream has finished with.
    pub fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }

    /// (connection number, path) of every request, in arrival order.
    pub fn seen(&self) -> Vec<(usize, String)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_h2(
    tls: tokio_rustls::server::TlsStream<TcpStream>,
    conn: usize,
    end: H2End,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
    authorities: Authorities,
) -> Result<(), h2::Error> {
    use bytes::Bytes;
    let mut h2 = h2::server::handshake(tls).await?;
    while let Some(accepted) = h2.accept().await {
        let (req, mut respond) = accepted?;
        let hosts = req.headers().get_all("host").iter();
        let hosts = hosts.map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let authority = req.uri().authority().map(|a| a.to_string());
        authorities
            .lock()
            .unwrap()
            .push((authority, hosts.collect()));
        let path = req.uri().path().to_owned();
        seen.lock().unwrap().push((conn, path.clone()));
        if path == "/rst" {
            let head = http::Response::builder()
                .header("content-length", "1000")
                .body(())
                .unwrap();
            let mut stream = respond.send_response(head, false)?;
            stream.send_data(Bytes::from_static(b"0123456789"), false)?;
            // Let the head and data go out first, so the reset lands mid-body.
            let _ = tokio::time::timeout(
                Duration::from_millis(50),
                std::future::poll_fn(|cx| h2.poll_closed(cx)),
            )
            .await;
            stream.send_reset(h2::Reason::INTERNAL_ERROR);
        } else {
            let mut stream = respond.send_response(http::Response::new(()), false)?;
            stream.send_data(Bytes::from_static(b"{}"), true)?;
        }
        match end {
            H2End::Never => {}
            H2End::Goaway => h2.graceful_shutdown(),
            H2End::Close => {
                // Flush the answer, then drop the socket without a GOAWAY.
                let _ = tokio::time::timeout(
                    Duration::from_millis(100),
                    std::future::poll_fn(|cx| h2.poll_closed(cx)),
                )
                .await;
                return Ok(());
            }
        }
    }
    Ok(())
}

/// A frame-level HTTP/2 upstream over TLS (ALPN `h2`) for the GOAWAY cases
/// (catalog 4.28). On its first connection it waits for two requests
/// (streams 1 and 3), sends GOAWAY(NO_ERROR, last stream id 1), answers
/// stream 1 and never stream 3 — or, with `rst_first`, answers the first
/// stream with RST_STREAM(INTERNAL_ERROR) followed at once by GOAWAY. Later
/// connections answer every stream: `:status: 200` (HPACK static index 8)
/// and `{}`.
pub struct GoawayUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<(usize, u32)>>>,
}

impl GoawayUpstream {
    /// Serves with `pki`'s leaf for `localhost`.
    pub async fn start(pki: &Pki, rst_first: bool) -> Self {
        let seen: Arc<Mutex<Vec<(usize, u32)>>> = Arc::default();
        let s = Arc::clone(&seen);
        let addr = serve_h2_tls(pki, move |tls, conn| {
            let seen = s.clone();
            async move {
                let _ = serve_goaway(tls, conn, rst_first, seen).await;
            }
        })
        .await;
        GoawayUpstream { addr, seen }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// (connection number, stream id) of every request, in arrival order.
    pub fn seen(&self) -> Vec<(usize, u32)> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve_goaway(
    mut io: tokio_rustls::server::TlsStream<TcpStream>,
    conn: usize,
    rst_first: bool,
    seen: Arc<Mutex<Vec<(usize, u32)>>>,
) -> std::io::Result<()> {
    use super::h2frames::*;
    let mut preface = [0u8; 24];
    io.read_exact(&mut preface).await?;
    io.write_all(&frame(SETTINGS, 0, 0, &[])).await?;
    let answer = |stream: u32| {
        let mut out = frame(HEADERS, END_HEADERS, stream, &[0x88]);
        out.extend(frame(DATA, END_STREAM, stream, b"{}"));
        out
    };
    let mut streams = Vec::new();
    for _ in 0..1000 {
        let Some(f) = read_frame(&mut io).await else {
            return Ok(());
        };
        match f.kind {
            SETTINGS if f.flags & 0x1 == 0 => io.write_all(&frame(SETTINGS, 0x1, 0, &[])).await?,
            HEADERS => {
                let stream = f.stream;
                seen.lock().unwrap().push((conn, stream));
                streams.push(stream);
                let goaway = |last: u32| {
                    let mut payload = last.to_be_bytes().to_vec();
                    payload.extend(0u32.to_be_bytes());
                    frame(GOAWAY, 0, 0, &payload)
                };
                if conn > 0 {
                    io.write_all(&answer(stream)).await?;
                } else if rst_first {
                    let mut out = frame(RST_STREAM, 0, stream, &2u32.to_be_bytes());
                    out.extend(goaway(stream));
                    io.write_all(&out).await?;
                } else if streams.len() == 2 {
                    io.write_all(&goaway(streams[0])).await?;
                    io.write_all(&answer(streams[0])).await?;
                }
            }
            _ => {}
        }
        io.flush().await?;
    }
    Ok(())
}
