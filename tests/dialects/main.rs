//! Other APIs: every pacing rule in every rate-limit dialect (`pacing.rs`),
//! profiles and token options (`profiles.rs`), the shipped examples
//! (`examples.rs`) and the regressions found on the way (`regressions.rs`).

#[path = "../support/mod.rs"]
mod support;

mod examples;
mod pacing;
mod profiles;
mod regressions;
