//! Regressions, each as it was reported: the first window after start-up
//! wasted while clients were refused; `check` naming only the first of
//! several problems; a 429 given after waiting, its numbers disagreeing.
//! They use only what the proxy and the simulator had before the fix
//! (fitbit headers, `hourly_quota`), so each can be run against old code.

use std::time::Duration;

use crate::support::load::Windows;
use crate::support::*;
use fitbit_proxy::sim::{Sim, SimConfig};
use fitbit_proxy::Config;
use http::StatusCode;
use tokio::time::Instant;

/// Bug 1: an upstream of 60 requests per 30 s window (fitbit headers), the
/// proxy started 3 s before a window boundary, 16 clients sending as fast
/// as they are answered, `max_wait = "60s"`. The first full window must be
/// spread like any other (every quarter at least 10 % of the quota, 95 %
/// of it used), and nobody refused while quota is free. Before the fix:
/// everything refused for 22 s, then all 60 in the window's last 8 s
/// ([0, 0, 0, 60]).
#[tokio::test(start_paused = true)]
async fn the_first_full_window_after_start_up_is_spread_and_nobody_is_refused() {
    const WINDOW: Duration = Duration::from_secs(30);
    let sim = Sim::new(SimConfig {
        quota: 60,
        window: WINDOW,
        token_lifetime: Some(Duration::from_secs(31_536_000)),
        ..sim_config()
    });
    // The upstream's window opens now; the proxy starts 27 s later.
    sim.spend_quota(0);
    let origin = Instant::now();
    tokio::time::sleep(WINDOW - Duration::from_secs(3)).await;
    let (upstream, _) = serve(&sim, Transport::Plain).await;
    let dir = tempfile::tempdir().unwrap();
    let extras = Extras {
        rate_limit: "hourly_quota = 60\nburst = 10\nmax_wait = \"60s\"".into(),
        ..Extras::default()
    };
    let config = parse_config(&config_toml(&upstream, None, &extras), dir.path());
    let (proxy, _stop, _task) = spawn_proxy(config, None).await;
    let seen = crate::support::load::saturate(proxy, 16, WINDOW * 2, Duration::from_secs(60)).await;
    let windows = Windows {
        origin,
        len: WINDOW,
    };
    let first_full = windows.quarters(&sim.received(), 1, 1)[0];
    println!(
        "bug 1: first full window per quarter {first_full:?}, proxy 429s {}",
        seen.refused
    );
    assert_eq!(sim.rate_limited(), 0, "upstream 429s");
    assert!(
        first_full.iter().all(|n| *n >= 6) && first_full.iter().sum::<u32>() >= 57,
        "first full window per quarter: {first_full:?}"
    );
    assert_eq!(seen.refused, 0, "refused while the window had quota free");
}

/// Bug 2: `check` names every problem at once: two unknown keys, a value
/// of the wrong type, an invalid value and a secret-source conflict, each
/// with its line.
#[test]
fn check_names_every_problem_at_once_with_its_line() {
    let text = r#"[listen]
adress = "127.0.0.1:8080"
addr = 8080
[upstream]
timeout = "5s"
[credentials]
client_id = "a"
client_secret_env = "S"
client_secret_file = "secret"
expires_in = 1234
"#;
    let env = |_: &str| Some("x".to_owned());
    let err = Config::from_toml_str_with_env(text, std::path::Path::new("proxy.toml"), &env)
        .expect_err("five problems");
    let text = err.to_string();
    println!("bug 2: check says:\n{text}");
    for (key, line) in [
        ("listen.adress", 2),
        ("listen.addr", 3),
        ("upstream.timeout", 5),
        ("credentials: only one of client_secret_env", 6),
        ("credentials.expires_in = 1234", 10),
    ] {
        assert!(
            text.lines()
                .any(|l| l.contains(key) && l.contains(&format!("(line {line},"))),
            "{key} (line {line}) not named:\n{text}"
        );
    }
}

/// Bug 3: with `max_wait = "5s"`, near window boundaries: no proxy 429
/// comes after waiting out `max_wait` (the reported `duration_ms=5001`):
/// a refusal is decided when the request arrives, or, for one already
/// waiting, at the answer that moved its slot past its wait; and its body,
/// its quota headers and `Retry-After` agree; a refusal while quota is
/// left says the rest is held by requests already waiting.
#[tokio::test(start_paused = true)]
async fn a_refusal_is_decided_at_once_and_its_numbers_agree() {
    const WINDOW: Duration = Duration::from_secs(20);
    let h = Setup::default()
        .sim(SimConfig {
            quota: 20,
            window: WINDOW,
            token_lifetime: Some(Duration::from_secs(31_536_000)),
            ..sim_config()
        })
        .rate_limit("hourly_quota = 20\nburst = 5\nmax_wait = \"5s\"")
        .start()
        .await;
    let mut tasks = Vec::new();
    for c in 0..16 {
        let url = h.url(&format!("/1/bug3/{c}"));
        tasks.push(tokio::spawn(async move {
            let client = http1_client();
            let mut refusals = Vec::new();
            let stop = Instant::now() + WINDOW * 3;
            while Instant::now() < stop {
                let asked = Instant::now();
                let (res, body) = send(&client, get(&url)).await;
                if res.status() == StatusCode::TOO_MANY_REQUESTS {
                    refusals.push((asked.elapsed(), res, body));
                    tokio::time::sleep(Duration::from_millis(700)).await;
                }
            }
            refusals
        }));
    }
    let mut refusals = Vec::new();
    for t in tasks {
        refusals.extend(t.await.unwrap());
    }
    assert_eq!(h.sim.rate_limited(), 0, "upstream 429s");
    assert!(!refusals.is_empty(), "the test must provoke refusals");
    let header = |res: &http::Response<()>, name: &str| -> u64 {
        res.headers()[name].to_str().unwrap().parse().unwrap()
    };
    let mut slowest = Duration::ZERO;
    let mut at_once = 0;
    for (took, res, body) in &refusals {
        slowest = slowest.max(*took);
        at_once += usize::from(*took < Duration::from_millis(100));
        let message: serde_json::Value = serde_json::from_slice(body).unwrap();
        let message = message["errors"][0]["message"].as_str().unwrap().to_owned();
        let (limit, remaining, reset, retry) = (
            header(res, "fitbit-rate-limit-limit"),
            header(res, "fitbit-rate-limit-remaining"),
            header(res, "fitbit-rate-limit-reset"),
            header(res, "retry-after"),
        );
        assert!(
            message.contains(&format!("{remaining} of {limit} requests left"))
                && message.contains(&format!("reset in {reset} s")),
            "body and headers disagree: {message:?} vs limit {limit}, remaining {remaining}, reset {reset}"
        );
        assert!(
            message.contains(&format!("retry after {retry} s")),
            "body and Retry-After disagree: {message:?} vs {retry}"
        );
        if remaining > 0 {
            assert!(
                message.contains("waiting"),
                "refused with {remaining} left, and nothing says why: {message:?}"
            );
        }
    }
    println!(
        "bug 3: {} proxy 429s, {at_once} within 100 ms of the request, the slowest after {slowest:?}",
        refusals.len()
    );
    assert!(
        slowest < Duration::from_secs(5),
        "a 429 came {slowest:?} after its request: its max_wait was waited out"
    );
    assert!(
        at_once * 100 >= refusals.len() * 95,
        "only {at_once} of {} refusals decided on arrival",
        refusals.len()
    );
    h.stop().await;
}
