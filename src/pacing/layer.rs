//! The pacing layer: each request waits for its slot (or is refused at
//! once, without reaching the upstream), and each answer teaches the
//! budget. Also notes upstream `410 Gone`.

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

use super::pacer::{Pacer, Permit, Refusal};
use crate::body::Body;
use crate::error::BoxError;
use crate::error::ProxyError;
use crate::layers::caller::{Caller, UNKNOWN};
use crate::ops::logging::Throttle;
use crate::ops::metrics::Metrics;

/// An upstream 410 is logged at most this often.
const GONE_LOG_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct PacingLayer {
    shared: Arc<Shared>,
}

struct Shared {
    pacer: Arc<Pacer>,
    metrics: Arc<Metrics>,
    gone: Throttle,
}

impl PacingLayer {
    pub fn new(pacer: Arc<Pacer>, metrics: Arc<Metrics>) -> Self {
        PacingLayer {
            shared: Arc::new(Shared {
                pacer,
                metrics,
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
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture<S::Future> {
        let caller = self.shared.caller_of(&req);
        // Nobody waiting and a slot free now (nearly every request): no
        // line, no box, and `self.inner` (readied by `poll_ready`) is used
        // as is.
        if let Some(permit) = self.shared.pacer.try_admit_now(&caller) {
            self.shared
                .metrics
                .caller_waited(&caller.series, Duration::ZERO);
            return ResponseFuture {
                state: State::Sent {
                    sending: self.inner.call(req),
                    learn: Some((Arc::clone(&self.shared), permit)),
                },
            };
        }
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Waiting {
                paced: Box::pin(paced(Arc::clone(&self.shared), inner, req, caller)),
            },
        }
    }
}

async fn paced<S>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<Body>,
    caller: Caller,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    S::Future: Send,
{
    let arrived = tokio::time::Instant::now();
    let admitted = {
        let _depth = QueueDepth::enter(&shared);
        shared.pacer.admit(&caller).await
    };
    let permit = admitted.map_err(|refusal| shared.refused(refusal, &caller))?;
    shared
        .metrics
        .caller_waited(&caller.series, arrived.elapsed());
    let res = inner.call(req).await?;
    shared.learn(permit, &res);
    Ok(res)
}

impl Shared {
    /// The caller the access layer named; a stack without it (the
    /// benches) has one unknown caller.
    fn caller_of(&self, req: &Request<Body>) -> Caller {
        req.extensions()
            .get::<Caller>()
            .cloned()
            .unwrap_or_else(|| Caller {
                name: UNKNOWN.into(),
                weight: 1,
                series: self.metrics.callers.series(UNKNOWN),
            })
    }

    fn refused(&self, refusal: Refusal, caller: &Caller) -> ProxyError {
        match refusal {
            Refusal::RateLimited { retry_after, view } => {
                self.metrics.caller_refused(&caller.series, "rate_limited");
                ProxyError::RateLimited { retry_after, view }
            }
            Refusal::QueueFull { retry_after } => {
                self.metrics.caller_refused(&caller.series, "queue_full");
                ProxyError::QueueFull { retry_after }
            }
        }
    }

    /// Feeds an answer to the budget, and the budget to the metrics.
    fn learn(&self, permit: Permit, res: &Response<Body>) {
        let m = &self.metrics;
        if let Some(err) = self.pacer.observe(permit, res.status(), res.headers()) {
            m.rate_limit_header_errors_total.inc();
            tracing::debug!(error = %err, "malformed rate-limit headers ignored");
        }
        match res.status() {
            StatusCode::TOO_MANY_REQUESTS => {
                m.upstream_rate_limited_total.inc();
            }
            StatusCode::GONE => {
                m.upstream_gone_total.inc();
                if let Some(suppressed) = self.gone.ready() {
                    tracing::error!(
                        suppressed,
                        "upstream answered 410 Gone: the legacy Fitbit Web API is being retired; \
                         move this client to its replacement API"
                    );
                }
            }
            _ => {}
        }
        m.show_quota(self.pacer.view());
    }
}

/// Keeps the queue-depth gauge current while a request waits for its slot
/// (however the wait ends).
struct QueueDepth<'a>(&'a Shared);

impl<'a> QueueDepth<'a> {
    fn enter(shared: &'a Shared) -> Self {
        shared.metrics.queue_depth.inc();
        QueueDepth(shared)
    }
}

impl Drop for QueueDepth<'_> {
    fn drop(&mut self) {
        self.0.metrics.queue_depth.dec();
    }
}

pin_project_lite::pin_project! {
    /// Admitted at once and sent (learning from the answer), or waiting for
    /// a slot then sent, boxed.
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Sent {
            #[pin]
            sending: F,
            learn: Option<(Arc<Shared>, Permit)>,
        },
        Waiting {
            paced: BoxFuture<'static, Result<Response<Body>, BoxError>>,
        },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sent { sending, learn } => {
                let res = std::task::ready!(sending.poll(cx))?;
                let (shared, permit) = learn.take().expect("polled after completion");
                shared.learn(permit, &res);
                Poll::Ready(Ok(res))
            }
            StateProj::Waiting { paced } => paced.as_mut().poll(cx),
        }
    }
}
