//! Pacing: the budgets of one upstream application (`budgets.rs`: one per
//! quota policy, `budget.rs`, or the sliding `sliding.rs` without quota
//! headers), fed by its rate-limit headers in the configured dialect
//! (`dialect/`) and the proxy's own count, spent evenly with a governor
//! limiter on tokio's clock (`clock.rs`, `shape.rs`, `pacer.rs`), waiting
//! in weighted fair order among callers (`fair.rs`), in the `layer.rs`
//! between the token and the upstream; `wallclock.rs` reads calendar time
//! (epoch resets, HTTP-dates) on tokio's clock. With `[shared]` the pacer
//! takes its slots from the replicas' one budget instead (`pacer.rs`'s
//! `Remote` is that seam; the budget itself is in `shared/budget/`).

pub mod budget;
pub(crate) mod budgets;
pub(crate) mod clock;
pub mod dialect;
pub(crate) mod fair;
pub(crate) mod layer;
pub(crate) mod pacer;
mod shape;
pub(crate) mod sliding;
pub(crate) mod wallclock;

pub(crate) use budget::Resume;
pub use layer::PacingLayer;
pub(crate) use pacer::Remote;
pub use pacer::{Pacer, Permit, Refusal};
