//! logferry: a node-level log shipper for Kubernetes on AWS.
//!
//! The modules follow the data, one stage each (see `DESIGN.md` in the project's
//! shared docs):
//!
//! - [`tail`]: finds container log files and reads them as lines;
//! - [`decode`]: Docker json-file and CRI lines → events, split lines rejoined;
//! - [`route`]: which sinks each event goes to;
//! - [`event`]: the event and its JSON form, the payload of every sink;
//! - [`sink`]: where encoded events go;
//! - [`replay`]: the `logferry replay` command, wiring the stages for a one-shot run;
//! - [`verify`]: the `logferry verify` command, proving that marked lines land.

pub mod batch;
pub mod buffer;
pub mod config;
pub mod decode;
pub mod durable;
pub mod event;
pub mod metrics;
pub mod pipeline;
pub mod replay;
pub mod route;
pub mod sink;
pub mod tail;
pub mod verify;

/// The next number of a xorshift sequence: for unit tests that build many varied
/// inputs, the same ones every run.
#[cfg(test)]
pub(crate) fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
