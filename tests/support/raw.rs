//! Raw HTTP/1 over TCP, for requests a client library would refuse to send
//! and answers it would tidy up. Every byte read back is checked for
//! canaries (G2).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::invariants::assert_no_canary;

/// Reads until the peer closes (or resets) the connection or `limit`
/// passes: the bytes, and whether it closed.
pub async fn read_for<R: AsyncRead + Unpin>(stream: &mut R, limit: Duration) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let closed = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .is_ok();
    assert_no_canary("a raw answer", &out);
    (out, closed)
}

/// [`read_for`] where the peer must close within `limit`; the bytes as text.
pub async fn read_until_closed<R: AsyncRead + Unpin>(stream: &mut R, limit: Duration) -> String {
    let (out, closed) = read_for(stream, limit).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(closed, "connection still open after {limit:?}: {text}");
    text
}

/// Writes raw bytes on a fresh connection and reads until the peer closes,
/// for requests a normal client would refuse to send. Panics if the peer
/// keeps the connection open for 10 s: callers send `Connection: close` or
/// expect the proxy to close.
pub async fn raw_exchange(addr: SocketAddr, bytes: impl AsRef<[u8]>) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes.as_ref()).await.unwrap();
    read_until_closed(&mut stream, Duration::from_secs(10)).await
}

/// The status code of the first response in a raw HTTP/1 exchange.
pub fn first_status(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"))
}

/// Status codes of back-to-back responses (bodies here never hold a
/// status line).
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.")
        .filter_map(|(i, _)| {
            let code = raw.get(i + 9..i + 13)?;
            let (digits, space) = code.split_at(3);
            (space == " ").then(|| digits.parse().ok()).flatten()
        })
        .collect()
}
