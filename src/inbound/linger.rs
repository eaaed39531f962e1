//! A lingering close for HTTP/2 connections, as nginx's `lingering_close`.
//!
//! A socket closed while the client's bytes wait unread in it is reset
//! (RST), and a client that has not yet read the last of the answer loses
//! it. An HTTP/2 client keeps sending after the proxy's last frame (window
//! updates for the data it reads, pings, a GOAWAY of its own), so at the
//! end of a connection, when hyper shuts the stream down, the proxy sends
//! its FIN and then reads and discards what still comes until the client
//! closes too, for at most `LINGER` and `MAX_DISCARDED` bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// The longest a closed connection waits for the client to close its side.
const LINGER: Duration = Duration::from_secs(2);

/// The most it reads and discards meanwhile.
const MAX_DISCARDED: usize = 256 * 1024;

pin_project_lite::pin_project! {
    pub(crate) struct Linger<T> {
        #[pin]
        inner: T,
        closing: Option<Closing>,
    }
}

struct Closing {
    deadline: Pin<Box<Sleep>>,
    discarded: usize,
}

impl<T> Linger<T> {
    pub(crate) fn new(inner: T) -> Self {
        Linger {
            inner,
            closing: None,
        }
    }
}

impl<T: AsyncRead> AsyncRead for Linger<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncRead + AsyncWrite> AsyncWrite for Linger<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    /// Our FIN first, then what the client still sends, until its FIN,
    /// an error, `LINGER` or `MAX_DISCARDED`.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if this.closing.is_none() {
            ready!(this.inner.as_mut().poll_shutdown(cx))?;
        }
        let closing = this.closing.get_or_insert_with(|| Closing {
            deadline: Box::pin(tokio::time::sleep(LINGER)),
            discarded: 0,
        });
        let mut scratch = [0u8; 1024];
        while closing.discarded < MAX_DISCARDED {
            let mut buf = ReadBuf::new(&mut scratch);
            match this.inner.as_mut().poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    closing.discarded += buf.filled().len();
                }
                // The client's FIN, or an error: nothing more to wait for.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => {
                    ready!(closing.deadline.as_mut().poll(cx));
                    return Poll::Ready(Ok(()));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// The client writes after the server's last bytes, and reads only
    /// then: closed at once, the server resets the connection and the
    /// client may lose the answer; lingering, it reads all of it.
    async fn answer_read_by_a_late_client(linger: bool) -> io::Result<Vec<u8>> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Bytes the server never reads, sent before it closes.
        client.write_all(b"window update").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let server = tokio::spawn(async move {
            let mut server = Linger::new(server);
            server.write_all(b"the last frame").await.unwrap();
            if linger {
                server.shutdown().await.unwrap();
            }
            drop(server);
        });
        if !linger {
            server.await.unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut got = Vec::new();
        let read = client.read_to_end(&mut got).await;
        drop(client);
        read.map(|_| got)
    }

    #[tokio::test]
    async fn a_client_still_sending_gets_the_whole_answer_and_a_fin() {
        let got = answer_read_by_a_late_client(true).await.unwrap();
        assert_eq!(got, b"the last frame");
    }

    #[tokio::test]
    async fn without_it_the_same_client_is_reset() {
        let read = answer_read_by_a_late_client(false).await;
        assert_eq!(
            read.map_err(|e| e.kind()).err(),
            Some(io::ErrorKind::ConnectionReset),
            "the control case: a close with unread bytes resets"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_closes_is_left_after_the_linger() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let started = tokio::time::Instant::now();
        let mut server = Linger::new(server);
        server.shutdown().await.unwrap();
        assert!(started.elapsed() >= LINGER);
        drop(client);
    }
}
