//! SIGTERM with requests in flight (5.01), over HTTP/2: the binary gets
//! SIGTERM while 50 h2c streams with 16 KiB bodies and 50 HTTP/1.1
//! requests are in flight. An h2 client library shows the GOAWAY and that
//! every stream completes; a raw-frame connection shows the two GOAWAY
//! steps of RFC 9113 §6.8 and that a stream opened after the last one is
//! never processed.

use std::time::Duration;

use crate::support::binary::*;
use crate::support::h2frames::*;
use crate::support::invariants::CANARIES;
use crate::support::*;
use bytes::Bytes;
use http::{Request, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const SEC: Duration = Duration::from_secs(1);
/// Long enough that everything below happens while requests are in flight.
const SLOW: &str = "/sim/slow/5000";
const BODY: usize = 16 * 1024;

/// One raw h2c connection: the client preface is sent, SETTINGS and PINGs
/// are acknowledged (hyper waits for the PING's ack before its second
/// GOAWAY), and every frame received is handed to the test.
struct RawH2 {
    out: mpsc::UnboundedSender<Vec<u8>>,
    frames: mpsc::UnboundedReceiver<(u8, u8, u32, Vec<u8>)>,
}

impl RawH2 {
    async fn open(addr: std::net::SocketAddr) -> RawH2 {
        let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
        let (out, mut to_send) = mpsc::unbounded_channel::<Vec<u8>>();
        let (seen, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(bytes) = to_send.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
        });
        let acks = out.clone();
        tokio::spawn(async move {
            while let Some(f) = read_frame(&mut rd).await {
                match (f.kind, f.flags & 0x1) {
                    (SETTINGS, 0) => drop(acks.send(frame(SETTINGS, 0x1, 0, &[]))),
                    (PING, 0) => drop(acks.send(frame(PING, 0x1, 0, &f.payload))),
                    _ => {}
                }
                let _ = seen.send((f.kind, f.flags, f.stream, f.payload));
            }
        });
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        out.send(hello).unwrap();
        RawH2 { out, frames }
    }

    /// `GET path` on `stream`, headers only. HPACK: `:method GET` and
    /// `:scheme http` from the static table, `:path` and `:authority` as
    /// literals with an indexed name.
    fn get(&self, stream: u32, path: &str) {
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend(path.as_bytes());
        block.extend([0x01, 1, b'x']);
        let flags = END_HEADERS | END_STREAM;
        self.out
            .send(frame(HEADERS, flags, stream, &block))
            .unwrap();
    }

    /// The next frame, or `None` once the proxy closed the connection.
    async fn next(&mut self) -> Option<(u8, u8, u32, Vec<u8>)> {
        tokio::time::timeout(10 * SEC, self.frames.recv())
            .await
            .expect("a frame or the close within 10 s")
    }
}

/// A POST with a 16 KiB body on the h2 connection: status and echo.
async fn h2_post(
    send: h2::client::SendRequest<Bytes>,
    authority: String,
) -> (StatusCode, serde_json::Value) {
    let mut send = send.ready().await.expect("the connection takes a stream");
    let req = Request::post(format!("http://{authority}{SLOW}"))
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(req, false).unwrap();
    body.send_data(Bytes::from(vec![b'b'; BODY]), true).unwrap();
    let response = response.await.expect("a response");
    let status = response.status();
    let mut recv = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("the body completes");
        let _ = recv.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (
        status,
        serde_json::from_slice(&bytes).expect("the whole echo"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_sends_two_goaways_completes_every_h1_and_h2_request_and_exits_0() {
    let (sim, upstream) = simulator().await;
    let p = Launch::default().start(&upstream).await;

    let tcp = TcpStream::connect(p.proxy).await.unwrap();
    let (opener, conn) = h2::client::handshake(tcp).await.expect("h2c handshake");
    tokio::spawn(conn);
    let h2: Vec<JoinHandle<(StatusCode, serde_json::Value)>> = (0..50)
        .map(|_| tokio::spawn(h2_post(opener.clone(), p.proxy.to_string())))
        .collect();
    let client = http1_client();
    let h1: Vec<JoinHandle<(http::Response<()>, serde_json::Value)>> = (0..50)
        .map(|_| {
            let (client, url) = (client.clone(), format!("http://{}{SLOW}", p.proxy));
            tokio::spawn(async move {
                let (res, body) = send(&client, get(&url)).await;
                (
                    res,
                    serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
                )
            })
        })
        .collect();
    eventually(20 * SEC, || sim.api_started() == 100).await;
    // Opened last, so that it is still in flight after everything below.
    let mut raw = RawH2::open(p.proxy).await;
    raw.get(1, SLOW);
    eventually(10 * SEC, || sim.api_started() == 101).await;

    p.child.sigterm();
    let (draining, refused) = p.draining_and_refusing().await;
    assert!(draining, "/readyz did not go to 503 while draining");
    assert!(refused, "new connections were still accepted after SIGTERM");
    assert!(
        !h1.iter().any(JoinHandle::is_finished) && !h2.iter().any(JoinHandle::is_finished),
        "checked while every request is in flight"
    );

    // The raw connection: GOAWAY(2^31-1), the PING round trip, then
    // GOAWAY(1), both NO_ERROR.
    let mut goaways = Vec::new();
    while goaways.len() < 2 {
        let (kind, _, _, payload) = raw.next().await.expect("two GOAWAYs before the close");
        if kind == GOAWAY {
            let last = u32::from_be_bytes(payload[0..4].try_into().unwrap()) & 0x7fff_ffff;
            let code = u32::from_be_bytes(payload[4..8].try_into().unwrap());
            goaways.push((last, code));
        }
    }
    assert_eq!(goaways, [(0x7fff_ffff, 0), (1, 0)]);
    // A stream opened after the last GOAWAY is ignored.
    raw.get(3, SLOW);
    // The client library saw a GOAWAY too: it refuses to open a stream.
    let mut refused = None;
    for _ in 0..100 {
        if let Err(e) = opener.clone().ready().await {
            refused = Some(e);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("the h2 client saw a GOAWAY within 2 s");
    assert!(refused.is_go_away() && refused.is_remote(), "{refused:?}");
    assert_eq!(refused.reason(), Some(h2::Reason::NO_ERROR));

    // Stream 1 completes; nothing ever comes for stream 3.
    let mut stream_1 = Vec::new();
    while let Some((kind, flags, stream, payload)) = raw.next().await {
        assert_ne!(stream, 3, "the proxy answered a stream after its GOAWAY");
        if stream == 1 {
            stream_1.push((kind, flags, payload));
        }
    }
    assert_eq!(stream_1[0].0, HEADERS);
    assert_eq!(
        stream_1[0].2[0], 0x88,
        "`:status 200` from the static table"
    );
    assert!(
        stream_1
            .iter()
            .any(|(k, f, _)| *k == DATA && f & END_STREAM != 0),
        "stream 1's body ends"
    );

    for r in h2 {
        let (status, echo) = r.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echo["bodyLen"], BODY, "the whole request body arrived");
    }
    for r in h1 {
        let (res, echo) = r.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["connection"], "close");
        assert_eq!(echo["path"], SLOW);
    }
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0), "exit 0 after draining");
    assert_eq!(
        sim.api_started(),
        101,
        "nothing after the GOAWAYs reached the upstream"
    );
    let logs = String::from_utf8_lossy(&out.stderr);
    for canary in CANARIES {
        assert!(!logs.contains(canary), "the logs leak {canary}");
    }
}
