//! `ivctl`, Ironvisor's command line, also installed as the kubectl plugin
//! `kubectl-ironvisor`.
//!
//! The library holds everything so the two binaries are one-line wrappers and the tests
//! and benchmarks reach the same code.
#![forbid(unsafe_code)]

pub mod backup_cmd;
pub mod cli;
pub mod clone_cmd;
pub mod cluster;
pub mod desktop_cmd;
pub mod drain;
pub mod host;
pub mod import;
mod import_cmd;
pub mod migrate;
pub mod snapshot_cmd;
pub mod usage;
pub mod vm;

/// Entry point shared by both binaries.
pub fn main() -> std::process::ExitCode {
    cli::main_with_args(std::env::args_os())
}
