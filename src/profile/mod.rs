//! What one upstream API's conventions decide: the names of its rate-limit
//! headers, the parameters of its token request, and the shape of its error
//! bodies (read from it, and written by the proxy for its own answers).
//! Fitbit's are the first (`fitbit.rs`).

pub mod fitbit;
