//! What the connection drivers tell the rest of the proxy: how many
//! connections are open by protocol (`fitbit_proxy_open_connections`), and
//! each request's peer address ([`ClientAddr`], the access log's `client`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use prometheus_client::metrics::gauge::Gauge;
use tower_service::Service;

use crate::layers::access::ClientAddr;
use crate::layers::Answers;
use crate::ops::metrics::Metrics;

/// The listener's handles on the metrics, shared by its connections.
pub(crate) struct Observe {
    pub(crate) metrics: Arc<Metrics>,
    /// The shape of the proxy's own answers, for the refusals the
    /// connection driver writes itself.
    pub(crate) answers: Answers,
    http1: Gauge,
    h2: Gauge,
}

/// The protocol a connection speaks once its first bytes are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http1,
    H2,
}

impl Observe {
    pub(crate) fn new(metrics: Arc<Metrics>, answers: Answers) -> Self {
        Observe {
            answers,
            http1: metrics.open_connections("http1"),
            h2: metrics.open_connections("h2"),
            metrics,
        }
    }

    /// Counts one connection speaking `protocol` as open until the returned
    /// guard is dropped.
    pub(crate) fn open(&self, protocol: Protocol) -> OpenConnection {
        let gauge = match protocol {
            Protocol::Http1 => &self.http1,
            Protocol::H2 => &self.h2,
        };
        gauge.inc();
        OpenConnection(gauge.clone())
    }
}

/// One open connection in `fitbit_proxy_open_connections`.
pub(crate) struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The stack, given each request's peer address in its extensions.
#[derive(Clone)]
pub(crate) struct WithClient<S> {
    pub(crate) inner: S,
    pub(crate) peer: SocketAddr,
}

impl<S, B> Service<Request<B>> for WithClient<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> S::Future {
        req.extensions_mut().insert(ClientAddr(self.peer));
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_connections_are_counted_by_protocol_while_their_guard_lives() {
        let observe = Observe::new(Arc::new(Metrics::new()), Answers::default());
        let a = observe.open(Protocol::Http1);
        let b = observe.open(Protocol::Http1);
        let c = observe.open(Protocol::H2);
        assert_eq!(observe.http1.get(), 2);
        assert_eq!(observe.h2.get(), 1);
        drop((a, c));
        assert_eq!(observe.http1.get(), 1);
        assert_eq!(observe.h2.get(), 0);
        drop(b);
        assert_eq!(observe.http1.get(), 0);
    }
}
