//! The layers of the request path, outermost first (their order is written
//! once, in `stack.rs`): the access log and request id (`access.rs`, which
//! names each request's caller with `caller.rs`), errors
//! turned into answers (`respond.rs`), and the admission guard (`guard.rs`)
//! with its path rules (`paths.rs`), header hygiene (`hop_by_hop.rs`) and the
//! idle bound on a body's frames (`body_timeout.rs`, also used upstream).

pub(crate) mod access;
pub(crate) mod body_timeout;
pub mod caller;
pub(crate) mod guard;
pub mod hop_by_hop;
pub mod paths;
pub(crate) mod respond;

pub use respond::Answers;
