//! Pacing: one budget per upstream application, fed by the
//! `fitbit-rate-limit-*` headers (`dialect.rs`) and the proxy's own count
//! (`budget.rs`), spent evenly with a governor limiter on tokio's clock
//! (`clock.rs`, `pacer.rs`), in the `layer.rs` between the token and the
//! upstream.

pub mod budget;
pub(crate) mod clock;
pub mod dialect;
pub(crate) mod layer;
pub(crate) mod pacer;

pub use layer::PacingLayer;
pub use pacer::{Pacer, Permit, Refusal};
