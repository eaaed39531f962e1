//! fitbit-proxy: an authenticating, pacing reverse proxy for the Fitbit Web API.
//! (Skeleton: the stack diagram is written as the layers land.)

pub mod config;
pub mod secret;
pub mod sim;
