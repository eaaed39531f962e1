//! Everything beside the request path that operators touch: the admin
//! listener (`admin.rs`: health, readiness, metrics, the status page of
//! `status/`), the metrics themselves (`metrics.rs`, with the bounded set of
//! callers of `callers.rs`, the per-minute send
//! history of `history.rs` and the process metrics read from `/proc` in
//! `process.rs`), log output (`logging.rs`, with the access line written
//! by hand in `log_line.rs`), reloads without a restart
//! (`reload.rs`: SIGHUP, secret and TLS files changed on disk) and the
//! supervisor that restarts a background task after a panic (`supervise.rs`).

pub(crate) mod admin;
pub mod callers;
#[cfg(feature = "failpoints")]
pub mod failpoints;
pub(crate) mod health;
mod history;
pub(crate) mod log_line;
pub mod logging;
pub mod metrics;
pub(crate) mod process;
pub mod reload;
pub(crate) mod status;
pub(crate) mod supervise;
