//! Tail: finding container log files and reading them.
//!
//! Owns everything that touches log files on disk: finding them ([`discover`],
//! [`watch`]), following each through rotation ([`follow`], [`identity`],
//! [`rotation`]), splitting them into lines ([`lines`]), the Kubernetes metadata their
//! paths carry ([`meta`]) and where reading resumes after a restart ([`checkpoint`]).
//! The [`tailer`] thread gives every stream turns ([`turn`]: read, decode, route,
//! encode once; a backlog's turns may run on a helper thread) and hands batches on;
//! [`stats`] is what it saw. It never interprets a line's content; that is
//! `decode`'s job.

pub mod lines;
pub mod meta;
pub mod rotation;
pub mod checkpoint;
pub mod identity;
pub mod follow;
pub mod discover;
pub mod tailer;
mod helper;
pub mod stats;
pub mod turn;
pub mod handoff;
pub mod watch;
