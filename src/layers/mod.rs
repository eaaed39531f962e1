//! The layers of the request path, outermost first (their order is written
//! once, in `stack.rs`): the access log and request id ([`access`]), errors
//! turned into answers ([`respond`]), and the admission guard ([`guard`])
//! with its path rules ([`paths`]), header hygiene ([`hop_by_hop`]) and the
//! idle bound on a body's frames ([`body_timeout`], also used upstream).

pub(crate) mod access;
pub(crate) mod body_timeout;
pub(crate) mod guard;
pub mod hop_by_hop;

pub mod paths;
pub(crate) mod respond;
