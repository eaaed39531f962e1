//! Inbound connections, up to the point where a request enters the stack:
//! the accept loop (`accept.rs`: `listen.allow`, `listen.max_connections`,
//! the first-bytes deadline, protocol choice, draining), inbound TLS
//! (`tls.rs`), the connection drivers (`connection.rs`: HTTP/1 parked between
//! requests, HTTP/2 with its Rapid Reset bound in `rapid_reset.rs`), the
//! deadlines hyper has no knob for (`deadline.rs`: idle connections, clients
//! that stop reading), what the drivers report (`observe.rs`: open
//! connections, each request's peer), a lingering close for HTTP/2
//! (`linger.rs`), the proxy's answers in place of
//! hyper's own refusals of HTTP/1 heads (`refusal.rs`) and the threads that
//! serve the connections, one runtime each (`workers.rs`).

mod accept;
mod connection;
mod deadline;
mod linger;
mod observe;
mod rapid_reset;
mod refusal;
mod rewind;
pub mod tls;
mod watch;
mod workers;

use std::convert::Infallible;

use http::{Request, Response};
use hyper::body::Incoming;
use tower_service::Service;

use crate::body::Body;

pub use accept::{serve, serve_watched, Serving, Settings};
pub use workers::Workers;

/// What the listener serves on every connection: the whole stack, cloned
/// per request, its futures sent to tokio's workers.
pub trait ConnectionService:
    Service<
        Request<Incoming>,
        Response = Response<Body>,
        Error = Infallible,
        Future: Send + Unpin + 'static,
    > + Clone
    + Send
    + Sync
    + Unpin
    + 'static
{
}

impl<S> ConnectionService for S where
    S: Service<
            Request<Incoming>,
            Response = Response<Body>,
            Error = Infallible,
            Future: Send + Unpin + 'static,
        > + Clone
        + Send
        + Sync
        + Unpin
        + 'static
{
}
