//! Model and property tests: the pacer as a model-checked state machine,
//! the token cache's single flight under random interleavings, and every
//! parser a peer or an operator feeds.

#[path = "../support/mod.rs"]
mod support;

mod pacer;
mod parsers;
mod token;
