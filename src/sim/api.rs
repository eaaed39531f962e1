//! The simulated API, every path but the token endpoint: bearer-token check,
//! quota, recording, then the echo or one of the `/sim/...` special answers
//! listed in the module doc of `sim`.

use std::time::Duration;

use http::header::{HeaderValue, ACCEPT_LANGUAGE, AUTHORIZATION};
use http::request::Parts;
use http::{HeaderMap, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use super::fitbit;
use super::quota::QuotaView;
use super::record::Received;
use super::respond::{
    add_date, add_rate_limit_headers, fitbit_error, json, SimBody, ZeroStream, DOCS_HINT,
};
use super::state::{Shared, TokenStatus};

/// The echo carries about this much filler, so responses have a realistic size.
const PAYLOAD_LEN: usize = 1024;

/// What a path asks of the simulator, decided before the request is admitted
/// so that the recorded status is the one sent.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Echo,
    Status(StatusCode, String),
    Slow(Duration),
    Stream(u64),
    Hop,
    Bad(String),
}

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<SimBody> {
    let (parts, body) = req.into_parts();
    shared.lock().api_started += 1;
    let (body_len, trailers) = drain(body).await;
    let route = route(parts.uri.path(), parts.uri.query());
    let views = match admit(shared, &parts, body_len, trailers, &route) {
        Ok(views) => views,
        Err(refusal) => {
            let mut response = refusal.into_response(&shared.cfg);
            add_date(&mut response, &shared.cfg);
            return response;
        }
    };
    if !shared.cfg.response_delay.is_zero() {
        tokio::time::sleep(shared.cfg.response_delay).await;
    }
    let mut response = answer(route, &parts, body_len).await;
    add_rate_limit_headers(&mut response, &views, &shared.cfg);
    add_date(&mut response, &shared.cfg);
    response
}

/// Reads the request body to its end, keeping its length and trailers.
async fn drain(mut body: Incoming) -> (u64, HeaderMap) {
    let mut len = 0;
    let mut trailers = HeaderMap::new();
    while let Some(Ok(frame)) = body.frame().await {
        match frame.into_data() {
            Ok(data) => len += data.len() as u64,
            Err(frame) => trailers.extend(frame.into_trailers().unwrap_or_default()),
        }
    }
    (len, trailers)
}

/// Why an API request is turned away before it reaches its route.
#[derive(Debug)]
enum Refusal {
    /// 401 with this `errorType` and message start.
    Unauthorized(&'static str, &'static str),
    /// 429: the window is spent.
    RateLimited(Vec<QuotaView>),
}

impl Refusal {
    fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthorized(..) => StatusCode::UNAUTHORIZED,
            Refusal::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn into_response(self, cfg: &super::SimConfig) -> Response<SimBody> {
        match self {
            Refusal::Unauthorized(error_type, detail) => {
                let message = format!("{detail} {DOCS_HINT}");
                fitbit_error(StatusCode::UNAUTHORIZED, error_type, &message)
            }
            Refusal::RateLimited(views) => {
                let status = StatusCode::TOO_MANY_REQUESTS;
                let mut response = fitbit_error(status, "rate_limit_exceeded", "Too Many Requests");
                add_rate_limit_headers(&mut response, &views, cfg);
                response
            }
        }
    }
}

/// Checks the token and spends quota, recording the request with the status
/// it gets, all under one lock so the log order is the decision order.
fn admit(
    shared: &Shared,
    parts: &Parts,
    body_len: u64,
    trailers: HeaderMap,
    route: &Route,
) -> Result<Vec<QuotaView>, Refusal> {
    let mut state = shared.lock();
    let now = Instant::now();
    let verdict = match bearer(&parts.headers) {
        None => Err(Refusal::Unauthorized(
            "invalid_client",
            "Authorization header required.",
        )),
        Some(token) => match state.token_status(token, now) {
            TokenStatus::Valid => state.quota.try_spend(now).map_err(Refusal::RateLimited),
            TokenStatus::Expired => Err(Refusal::Unauthorized(
                "expired_token",
                "Access token expired.",
            )),
            TokenStatus::Unknown | TokenStatus::Revoked => Err(Refusal::Unauthorized(
                "invalid_token",
                "Access token invalid.",
            )),
        },
    };
    let status = verdict
        .as_ref()
        .map_or_else(Refusal::status, |_| route.status());
    if let Err(Refusal::RateLimited(_)) = verdict {
        state.rate_limited += 1;
    }
    state.record_api(Received {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        version: parts.version,
        headers: parts.headers.clone(),
        body_len,
        trailers,
        authorization: header_str(&parts.headers, AUTHORIZATION.as_str()).map(str::to_owned),
        status,
        at: now,
    });
    verdict
}

async fn answer(route: Route, parts: &Parts, body_len: u64) -> Response<SimBody> {
    match route {
        Route::Echo => fitbit::answer(parts.uri.path())
            .map_or_else(|| echo(parts, body_len), |body| json(StatusCode::OK, &body)),
        Route::Status(status, error_type) => fitbit_error(
            status,
            &error_type,
            &format!("Simulated status {}.", status.as_u16()),
        ),
        Route::Slow(delay) => {
            tokio::time::sleep(delay).await;
            echo(parts, body_len)
        }
        Route::Stream(len) => {
            let mut response = Response::new(ZeroStream::new(len).boxed());
            let octets = HeaderValue::from_static("application/octet-stream");
            response
                .headers_mut()
                .insert(http::header::CONTENT_TYPE, octets);
            response
        }
        Route::Hop => with_hop_headers(echo(parts, body_len), parts.version),
        Route::Bad(message) => fitbit_error(StatusCode::BAD_REQUEST, "validation", &message),
    }
}

fn echo(parts: &Parts, body_len: u64) -> Response<SimBody> {
    let body = serde_json::json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "version": format!("{:?}", parts.version),
        "bodyLen": body_len,
        "acceptLanguage": header_str(&parts.headers, ACCEPT_LANGUAGE.as_str()),
        "acceptLocale": header_str(&parts.headers, "accept-locale"),
        "payload": "x".repeat(PAYLOAD_LEN),
    });
    json(StatusCode::OK, &body)
}

/// Hop-by-hop headers a proxy must strip (RFC 9110 §7.6.1). HTTP/2 forbids
/// connection-specific headers outright, so they are only sent on HTTP/1.x.
fn with_hop_headers(mut response: Response<SimBody>, version: Version) -> Response<SimBody> {
    if version <= Version::HTTP_11 {
        let headers = response.headers_mut();
        for (name, value) in [
            ("connection", "x-hop"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "x"),
            ("trailer", "x"),
            ("upgrade", "h2c"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = header_str(headers, AUTHORIZATION.as_str())?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn route(path: &str, query: Option<&str>) -> Route {
    let Some(rest) = path.strip_prefix("/sim/") else {
        return Route::Echo;
    };
    let (kind, arg) = rest.split_once('/').unwrap_or((rest, ""));
    let bad = || Route::Bad(format!("Unknown simulator path {path}."));
    match (kind, arg.parse::<u64>()) {
        ("hop", _) if arg.is_empty() => Route::Hop,
        ("slow", Ok(ms)) => Route::Slow(Duration::from_millis(ms)),
        ("stream", Ok(len)) => Route::Stream(len),
        ("status", Ok(code @ 200..=599)) => match StatusCode::from_u16(code as u16) {
            Ok(status) => Route::Status(status, error_type_param(query)),
            Err(_) => bad(),
        },
        _ => bad(),
    }
}

/// `?errorType=X` on `/sim/status/{code}`.
fn error_type_param(query: Option<&str>) -> String {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "errorType")
        .map_or_else(|| "sim_status".to_owned(), |(_, v)| v.into_owned())
}

impl Route {
    fn status(&self) -> StatusCode {
        match self {
            Route::Status(status, _) => *status,
            Route::Bad(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let status = |c| StatusCode::from_u16(c).unwrap();
        let cases = [
            ("/1/user/-/profile.json", None, Route::Echo),
            ("/sim", None, Route::Echo),
            ("/sim/hop", None, Route::Hop),
            (
                "/sim/slow/250",
                None,
                Route::Slow(Duration::from_millis(250)),
            ),
            ("/sim/stream/1048576", None, Route::Stream(1 << 20)),
            (
                "/sim/status/410",
                None,
                Route::Status(status(410), "sim_status".into()),
            ),
            (
                "/sim/status/401",
                Some("errorType=expired_token"),
                Route::Status(status(401), "expired_token".into()),
            ),
        ];
        for (path, query, want) in cases {
            assert_eq!(route(path, query), want, "{path}");
        }
        for path in [
            "/sim/status/99",
            "/sim/status/600",
            "/sim/slow/x",
            "/sim/hop/1",
            "/sim/nope",
        ] {
            assert!(matches!(route(path, None), Route::Bad(_)), "{path}");
        }
    }

    #[test]
    fn bearer_parsing() {
        let cases = [
            ("Bearer abc", Some("abc")),
            ("bearer  abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("Bearer", None),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer(&headers), want, "{value:?}");
        }
    }
}
