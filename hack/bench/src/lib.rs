//! Ironvisor's benchmarks as a library: the pure helpers (statistics, RSS parsing, report
//! formatting, Prometheus text) are unit-tested; the I/O helpers (processes, API setup, the
//! VM tracker, the raw libvirt baseline) are shared by the four benchmark binaries.
//!
//! The benchmarks are binaries, never tests: `hack/bench/run.sh` runs them in release.

pub mod api;
pub mod console;
pub mod keys;
pub mod procs;
pub mod prom;
pub mod raw;
pub mod report;
pub mod rss;
pub mod sim;
pub mod stack;
pub mod stats;
pub mod tracker;
pub mod watch;
