//! The VM verbs: `start`, `stop`, `restart`, `status`, `console`, `vnc`.
//!
//! Pure decisions ([`power`], [`report`], [`console`]) are kept apart from the cluster and
//! host I/O (`cmd`, `console_cmd`, [`wait`]), so the decisions are unit-tested without a
//! cluster and the I/O is tested against the devcluster.

pub mod args;
pub(crate) mod cmd;
pub mod console;
pub(crate) mod console_cmd;
pub mod power;
pub mod remote;
pub(crate) mod remote_cmd;
pub mod report;
pub mod wait;
