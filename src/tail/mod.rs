//! Tail: finding container log files and reading them.
//!
//! Owns everything that touches log files on disk: splitting them into lines
//! ([`lines`]), the kubelet's rotation naming ([`rotation`]) and the Kubernetes
//! metadata their paths carry ([`meta`]). It never interprets a line's content; that
//! is `decode`'s job.

pub mod lines;
pub mod meta;
pub mod rotation;
pub mod checkpoint;
pub mod identity;
pub mod follow;
pub mod discover;
pub mod tailer;
mod helper;
pub mod watch;
