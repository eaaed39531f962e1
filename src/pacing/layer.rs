//! The pacing layer: each request waits for its slot (or is refused at
//! once, without reaching the upstream), and each answer teaches the
//! budget. Also notes upstream `410 Gone` (P9).

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use super::pacer::{Pacer, Refusal};
use crate::body::{Body, BoxError};
use crate::logging::Throttle;
use crate::respond::ProxyError;

/// An upstream 410 is logged at most this often.
const GONE_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct PacingLayer {
    shared: Arc<Shared>,
}

struct Shared {
    pacer: Arc<Pacer>,
    gone: Throttle,
}

impl PacingLayer {
    pub fn new(pacer: Arc<Pacer>) -> Self {
        PacingLayer {
            shared: Arc::new(Shared {
                pacer,
                gone: Throttle::new(GONE_LOG_INTERVAL),
            }),
        }
    }
}

impl<S> Layer<S> for PacingLayer {
    type Service = Pacing<S>;
    fn layer(&self, inner: S) -> Pacing<S> {
        Pacing {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

#[derive(Clone)]
pub struct Pacing<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<Body>> for Pacing<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        ResponseFuture {
            inner: Box::pin(paced(Arc::clone(&self.shared), inner, req)),
        }
    }
}

async fn paced<S>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    S::Future: Send,
{
    let permit = shared.pacer.admit().await.map_err(refused)?;
    let res = inner.call(req).await?;
    if let Some(err) = shared.pacer.observe(permit, res.status(), res.headers()) {
        tracing::debug!(error = %err, "malformed rate-limit headers ignored");
    }
    if res.status() == StatusCode::GONE {
        if let Some(suppressed) = shared.gone.ready() {
            tracing::error!(
                suppressed,
                "upstream answered 410 Gone: the legacy Fitbit Web API is being retired; \
                 move this client to its replacement API"
            );
        }
    }
    Ok(res)
}

fn refused(refusal: Refusal) -> ProxyError {
    match refusal {
        Refusal::RateLimited { retry_after, view } => ProxyError::RateLimited { retry_after, view },
        Refusal::QueueFull { retry_after } => ProxyError::QueueFull { retry_after },
    }
}

/// Waiting for a slot, then the upstream.
pub struct ResponseFuture {
    inner: BoxFuture<'static, Result<Response<Body>, BoxError>>,
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
