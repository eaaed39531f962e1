//! The proxy's life seen by its clients (RELIABILITY.md §5, and the
//! process-level limits of §3): shutdown and draining, readiness through
//! a whole life, restarts and panics, running out of file descriptors, a
//! slow upstream under 5 000 requests, one connection's flood, and the
//! admin port's isolation. What needs signals, rlimits or files runs the
//! real binary (tests/support/binary.rs) in real time with bounded waits;
//! the rest runs in-process.

#[path = "../support/mod.rs"]
mod support;

mod admin_port;
mod life;
mod limits;
mod reload;
mod shutdown;
mod shutdown_h2;

use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
