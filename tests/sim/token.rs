//! The token endpoint: credentials, form validation, lifetimes, scripted failures.

use std::time::Duration;

use fitbit_proxy::sim::{SimConfig, TokenFailure};

use super::*;

#[tokio::test]
async fn issues_a_token_for_percent_encoded_credentials() {
    let cfg = SimConfig {
        client_id: "23AB:C/ü".into(),
        client_secret: "s3cr+t &%=:SECRET_CANARY".into(),
        token_prefix: "TOKEN_CANARY_".into(),
        ..SimConfig::default()
    };
    let (sim, handle, client) = start_plain(cfg).await;
    let auth = basic("23AB:C/ü", "s3cr+t &%=:SECRET_CANARY");
    let reply = send(
        &client,
        token_request(&handle.token_url(), &auth, "grant_type=client_credentials"),
    )
    .await;

    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.header("cache-control"), "no-store");
    let body = reply.json();
    let token = body["access_token"].as_str().unwrap();
    assert!(token.starts_with("TOKEN_CANARY_") && token.len() == "TOKEN_CANARY_".len() + 32);
    assert_eq!(body["expires_in"], 28800);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["scope"].is_string());
    assert_eq!(sim.current_token().as_deref(), Some(token));
    assert_eq!((sim.token_fetches(), sim.tokens_issued()), (1, 1));

    let seen = &sim.token_requests()[0];
    assert_eq!(seen.client_id.as_deref(), Some("23AB:C/ü"));
    assert_eq!(
        seen.client_secret.as_ref().unwrap().expose(),
        "s3cr+t &%=:SECRET_CANARY"
    );
    assert_eq!(seen.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(seen.headers["accept"], "application/json");
    let printed = format!("{seen:?} {sim:?}");
    for leak in ["SECRET_CANARY", token, &auth["Basic ".len()..]] {
        assert!(!printed.contains(leak), "{leak} in {printed}");
    }
}

#[tokio::test]
async fn rejects_wrong_or_missing_credentials() {
    let (sim, handle, client) = start_plain(SimConfig::default()).await;
    let url = handle.token_url();
    let form = "grant_type=client_credentials";
    for auth in [
        basic("sim-client", "wrong"),
        basic("other", "sim-secret"),
        "Bearer x".into(),
    ] {
        let reply = send(&client, token_request(&url, &auth, form)).await;
        assert_eq!(reply.status, 401, "{auth}");
        assert_eq!(reply.error_type(), "invalid_client");
        assert_eq!(reply.json()["success"], false);
    }
    assert_eq!((sim.token_fetches(), sim.tokens_issued()), (3, 0));
}

#[tokio::test]
async fn credentials_must_be_form_urlencoded_before_base64() {
    let cfg = SimConfig {
        client_secret: "a+b".into(),
        ..SimConfig::default()
    };
    let (_sim, handle, client) = start_plain(cfg).await;
    let form = "grant_type=client_credentials";
    // Unencoded, the `+` decodes to a space: a different secret.
    let raw = base64::engine::general_purpose::STANDARD.encode("sim-client:a+b");
    let reply = send(
        &client,
        token_request(&handle.token_url(), &format!("Basic {raw}"), form),
    )
    .await;
    assert_eq!(reply.status, 401);
    let reply = send(
        &client,
        token_request(&handle.token_url(), &basic("sim-client", "a+b"), form),
    )
    .await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn validates_grant_type_expires_in_and_content_type() {
    let (_sim, handle, client) = start_plain(SimConfig::default()).await;
    let url = handle.token_url();
    let auth = basic("sim-client", "sim-secret");
    let cases = [
        ("grant_type=authorization_code", "unsupported_grant_type"),
        ("expires_in=3600", "invalid_request"),
        (
            "grant_type=client_credentials&expires_in=1234",
            "invalid_request",
        ),
        (
            "grant_type=client_credentials&expires_in=-1",
            "invalid_request",
        ),
    ];
    for (form, error_type) in cases {
        let reply = send(&client, token_request(&url, &auth, form)).await;
        assert_eq!(
            (reply.status.as_u16(), reply.error_type().as_str()),
            (400, error_type),
            "{form}"
        );
    }
    let mut req = token_request(&url, &auth, "grant_type=client_credentials");
    req.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    assert_eq!(send(&client, req).await.error_type(), "invalid_request");
}

#[tokio::test]
async fn grants_the_asked_lifetime_unless_overridden() {
    let (_sim, handle, client) = start_plain(SimConfig::default()).await;
    let auth = basic("sim-client", "sim-secret");
    for n in [3600, 86400, 31536000] {
        let form = format!("grant_type=client_credentials&expires_in={n}");
        let reply = send(&client, token_request(&handle.token_url(), &auth, &form)).await;
        assert_eq!(reply.json()["expires_in"], n);
    }

    let cfg = SimConfig {
        token_lifetime: Some(Duration::from_secs(90)),
        ..SimConfig::default()
    };
    let (_sim, handle, client) = start_plain(cfg).await;
    let form = "grant_type=client_credentials&expires_in=3600";
    let reply = send(&client, token_request(&handle.token_url(), &auth, form)).await;
    assert_eq!(reply.json()["expires_in"], 90);
}

#[tokio::test(start_paused = true)]
async fn scripted_failures_until_cleared() {
    let (sim, handle, client) = start_plain(SimConfig::default()).await;
    let auth = basic("sim-client", "sim-secret");
    let req = || token_request(&handle.token_url(), &auth, "grant_type=client_credentials");
    let cases = [
        (TokenFailure::Status(503), 503, "text/plain"),
        (TokenFailure::InvalidClient, 401, "application/json"),
        (
            TokenFailure::FitbitError(400, "invalid_grant"),
            400,
            "application/json",
        ),
        (TokenFailure::Html, 200, "text/html; charset=utf-8"),
        (TokenFailure::MissingField, 200, "application/json"),
    ];
    for (failure, status, content_type) in cases {
        sim.fail_token_requests(Some(failure.clone()));
        let reply = send(&client, req()).await;
        assert_eq!(reply.status, status, "{failure:?}");
        assert_eq!(reply.header("content-type"), content_type, "{failure:?}");
        if reply.header("content-type") == "application/json" && status == 200 {
            assert!(reply.json().get("access_token").is_none());
        }
    }
    sim.fail_token_requests(Some(TokenFailure::InvalidClient));
    assert_eq!(send(&client, req()).await.json()["error"], "invalid_client");

    sim.fail_token_requests(Some(TokenFailure::Hang));
    let hung = tokio::time::timeout(Duration::from_secs(30), client.request(req())).await;
    assert!(hung.is_err(), "a hanging token endpoint never answers");

    sim.fail_token_requests(None);
    assert_eq!(send(&client, req()).await.status, 200);
    assert_eq!((sim.token_fetches(), sim.tokens_issued()), (8, 1));
}
