//! Fault injection for the tests: a named point in the code runs, once, an
//! action a test registered for it (a panic, say). Compiled only with the
//! `failpoints` feature, which nothing but the tests turn on (Cargo.toml), so
//! a release build has no such point at all.

use std::sync::Mutex;

type Action = Box<dyn FnOnce() + Send>;

/// Armed points: `(name, key, action)`. The key tells apart the proxies
/// that run side by side in one test binary.
static ARMED: Mutex<Vec<(&'static str, String, Action)>> = Mutex::new(Vec::new());

/// Runs `action` the next time the point `name` is reached with `key`
/// (then forgets it). Points: `token_refresher`, keyed by the token URL, at
/// the top of each round of the token refresher (before it fetches).
pub fn once(name: &'static str, key: impl Into<String>, action: impl FnOnce() + Send + 'static) {
    let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
    armed.push((name, key.into(), Box::new(action)));
}

/// Reached the point `name` with `key`: runs its action if one is armed.
pub(crate) fn hit(name: &'static str, key: &str) {
    let action = {
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        let at = armed.iter().position(|(n, k, _)| *n == name && k == key);
        at.map(|at| armed.remove(at).2)
    };
    // Outside the lock: the action may panic.
    if let Some(action) = action {
        action();
    }
}
