//! The reliability catalog's security cases (RELIABILITY.md §1–§4), one
//! binary: HTTP/1 framing, hand-built HTTP/2 frames, header hygiene,
//! clients that hold connections or bodies, upstream and token-endpoint
//! faults, and secrets that never leak. Every case ends with the global
//! invariants (tests/support/invariants.rs).

#[path = "../support/mod.rs"]
mod support;

mod framing;
mod h2;
mod headers;
mod heads;
mod idle;
mod observability;
mod probe;
mod slow;
mod targets;
mod upstream;

use support::Setup;

/// A proxy that gives up on a request head (or body) after 1 s of
/// silence, so that what the parser would wait on forever is cut off
/// quickly.
fn impatient() -> Setup {
    Setup::default().listen("header_read_timeout = \"1s\"")
}
