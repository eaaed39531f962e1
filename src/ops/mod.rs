//! Everything beside the request path that operators touch: the admin
//! listener ([`admin`]: health, readiness, metrics), the metrics themselves
//! ([`metrics`]), log output ([`logging`]) and the supervisor that restarts
//! a background task after a panic ([`supervise`]).

pub(crate) mod admin;
pub mod logging;
pub mod metrics;
pub(crate) mod supervise;
