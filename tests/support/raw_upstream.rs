//! The pieces of a hand-written upstream, for the tests whose upstream does
//! something [`super::faulty::RawUpstream`] cannot script: a loopback
//! listener, reading one request head off a connection, and an upstream
//! that hands each connection to the test once its request is read.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

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

/// A loopback upstream that reads the first request head of each
/// connection, then hands the connection to `answer`; what `answer`
/// reports (one value a connection, or nothing) comes out of the channel.
pub async fn answer_each<T, F, Fut>(answer: F) -> (SocketAddr, mpsc::UnboundedReceiver<T>)
where
    T: Send + 'static,
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<T>> + Send + 'static,
{
    let (listener, addr) = listener().await;
    let (tx, rx) = mpsc::unbounded_channel();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (tx, answer) = (tx.clone(), answer.clone());
            tokio::spawn(async move {
                if read_head(&mut conn).await.is_some() {
                    if let Some(report) = answer(conn).await {
                        let _ = tx.send(report);
                    }
                }
            });
        }
    });
    (addr, rx)
}
