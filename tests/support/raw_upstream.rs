//! The pieces of a hand-written upstream, for the tests whose upstream does
//! something [`super::faulty::RawUpstream`] cannot script: a loopback
//! listener, and reading one request head off a connection.

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpListener;

use super::bind;

/// A loopback listener for the raw upstream and its address.
pub async fn listener() -> (TcpListener, SocketAddr) {
    let l = bind().await;
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Reads one HTTP/1 request head (through the blank line), or `None` if
/// the peer closed first.
pub async fn read_head<I: AsyncRead + Unpin>(io: &mut I) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if io.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}
