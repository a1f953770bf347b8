//! The VM verbs end to end: the real `ivctl` and `kubectl ironvisor` binaries against an
//! in-process devcluster; the test plays the operator's and the agent's status writes.

mod attach;
mod common;
mod console;
mod gitops;
mod import_server;
mod power;
mod status;
