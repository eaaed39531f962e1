//! The proxy owns the credentials: by default (`upstream.deny_paths`) every
//! OAuth endpoint of Fitbit's, the token and revocation endpoints under
//! `/oauth2/` and token introspection under `/1.1/oauth2/`, is refused with
//! 403 and never reaches the upstream, in any letter case.

use http::{Request, StatusCode};
use http_body_util::Full;

use crate::support::invariants::*;
use crate::support::*;

#[tokio::test]
async fn fitbit_oauth_paths_are_refused_and_never_forwarded() {
    count_panics();
    let h = Setup::default().start().await;
    let client = http1_client();
    // Other 1.1 paths are forwarded (and this one waits for the first token).
    let (res, _) = send(&client, get(&h.url("/1.1/user/-/profile.json"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (before_api, before_tokens) = (h.sim.api_started(), h.sim.token_fetches());
    for (method, path) in [
        ("POST", "/1.1/oauth2/introspect"),
        ("POST", "/1.1/OAuth2/Introspect"),
        ("POST", "/oauth2/token"),
        ("POST", "/oauth2/revoke"),
        ("GET", "/1.1/oauth2/introspect"),
    ] {
        let req = Request::builder()
            .method(method)
            .uri(h.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::from("token=CANARY_someone_elses_token"))
            .unwrap();
        let (res, body) = send(&client, req).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(proxy_error(&res), Some("forbidden"), "{method} {path}");
        assert_fitbit_error(&body, "forbidden");
    }
    assert_nothing_forwarded_since(&h, before_api, "the OAuth paths");
    assert_eq!(
        h.sim.token_fetches(),
        before_tokens,
        "nor the token endpoint"
    );
    assert_invariants(&h);
    h.stop().await;
}
