//! Concurrency of the token cache, single flight (6.04). Many clients of one
//! `TokenSource` acquire, report 401s for the token they used (sometimes long
//! after it was replaced), and give up while waiting, in interleavings drawn
//! from a seed (random yields and sleeps on paused tokio time), while the
//! real refresher fetches from the simulator's token endpoint over loopback.
//! Tokens live 3 s, so that several expire during a run, and the endpoint
//! fails (HTTP 500) for random stretches longer than that: refreshes fail,
//! back off, and tokens run out while clients keep asking.

use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use fitbit_proxy::ops::metrics::Metrics;
use fitbit_proxy::sim::{Sim, SimConfig, TokenFailure};
use fitbit_proxy::token::{Exchange, Token, TokenSource, Unavailable};
use fitbit_proxy::upstream::build_client;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

const CLIENTS: usize = 30;
const ROUNDS: usize = 12;
const FETCH_TAKES: Duration = Duration::from_millis(300);
const LIFETIME: Duration = Duration::from_secs(3);

/// Random yields and a sleep: where this task lets the others run.
async fn shuffle(rng: &mut StdRng) {
    for _ in 0..rng.random_range(0..4) {
        tokio::task::yield_now().await;
    }
    if rng.random_bool(0.5) {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..1500))).await;
    }
}

/// The token endpoint fails with 500 for three stretches of 2-6 s (longer
/// than the refresh interval, up to twice a token's lifetime), at random
/// moments of the clients' run.
async fn outages(sim: Sim, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3000))).await;
        sim.fail_token_requests(Some(TokenFailure::Status(500)));
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..6000))).await;
        sim.fail_token_requests(None);
    }
}

/// Invalidates `used` as a 401 would, and checks T6 on the spot (no await
/// in between, so no other task runs): a token older than the current one
/// never drops the current one.
fn report_401(source: &TokenSource, used: &Arc<Token>) {
    let before = source.valid().map(|t| t.generation());
    source.invalidate(used);
    let after = source.valid().map(|t| t.generation());
    if before.is_some_and(|g| g > used.generation()) {
        assert_eq!(after, before, "a stale 401 dropped a newer token (T6)");
    }
}

async fn client(source: Arc<TokenSource>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut last_generation = 0;
    let mut invalidated_below = 0;
    let mut stale: Option<Arc<Token>> = None;
    for _ in 0..ROUNDS {
        shuffle(&mut rng).await;
        if rng.random_bool(0.15) {
            // Gives up while (perhaps) waiting for a fetch: must not poison.
            let _ = tokio::time::timeout(
                Duration::from_millis(rng.random_range(0..200)),
                source.acquire(),
            )
            .await;
            continue;
        }
        let token = match source.acquire().await {
            Ok(token) => token,
            // The last fetch failed and no valid token is left: refused at
            // once, to come back after the backoff.
            Err(Unavailable::Failed { .. }) => continue,
            Err(e) => panic!("no answer within the wait limit: {e}"),
        };
        let g = token.generation();
        assert!(
            token.expires_at() > Instant::now(),
            "an expired token was served"
        );
        assert!(
            g >= last_generation,
            "generation went back: {g} < {last_generation}"
        );
        assert!(
            g > invalidated_below,
            "used generation {g} after reporting a 401 for it"
        );
        last_generation = g;
        shuffle(&mut rng).await;
        match rng.random_range(0..10) {
            // The upstream said 401 for this token.
            0..=1 => {
                report_401(&source, &token);
                invalidated_below = g;
            }
            // A late 401 for a token used a while ago.
            2 => {
                if let Some(old) = stale.take() {
                    report_401(&source, &old);
                }
            }
            3 => stale = Some(token),
            _ => {}
        }
    }
}

async fn run(seed: u64) {
    let sim = Sim::new(SimConfig {
        token_lifetime: Some(LIFETIME),
        ..sim_config()
    });
    sim.set_token_delay(FETCH_TAKES);
    let (handle, _) = serve(&sim, Transport::Plain).await;
    let dir = tempfile::tempdir().unwrap();
    let config = parse_config(&config_toml(&handle, None, &Extras::default()), dir.path());
    let exchange = Exchange::new(
        build_client(&config.upstream).unwrap(),
        &config.credentials,
        Duration::from_secs(10),
    );
    let source = TokenSource::new(Duration::from_secs(10));
    let refresher =
        source.spawn_refresher(exchange, Duration::from_secs(300), Arc::new(Metrics::new()));

    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|i| {
            tokio::spawn(client(
                Arc::clone(&source),
                seed.wrapping_mul(1000).wrapping_add(i),
            ))
        })
        .collect();
    let chaos = tokio::spawn(outages(sim.clone(), seed));
    for c in clients {
        c.await.expect("client checks held");
    }
    chaos.await.unwrap();

    // Once the endpoint is back, a token comes within the backoff: neither
    // cancelled waiters nor failed fetches poisoned the source.
    let mut current = None;
    for _ in 0..20 {
        match source.acquire().await {
            Ok(token) => {
                current = Some(token);
                break;
            }
            Err(e) => tokio::time::sleep(e.retry_after().max(FETCH_TAKES)).await,
        }
    }
    let current = current.expect("a token once the endpoint recovered");
    assert!(current.expires_at() > Instant::now());
    // Single flight (T3): one fetch per generation, never two at once (each
    // fetch takes FETCH_TAKES, so the next cannot have started sooner).
    assert_eq!(sim.tokens_issued(), current.generation());
    assert!(
        sim.token_fetches() > sim.tokens_issued(),
        "no fetch failed: the outages missed every refresh"
    );
    let starts: Vec<Instant> = sim.token_requests().iter().map(|t| t.at).collect();
    assert!(
        starts.windows(2).all(|w| w[1] - w[0] >= FETCH_TAKES),
        "two fetches in flight at once: {starts:?}"
    );
    refresher.abort();
    handle.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn one_fetch_per_generation_and_no_token_used_after_its_401(seed in any::<u64>()) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(run(seed));
    }
}
