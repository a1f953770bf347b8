//! The parts that talk to the API server. Each takes its decisions from the pure modules.

pub mod audit;
pub mod patches;
pub mod quota_status;
pub mod scheduler;
pub mod seed;
pub mod tenant;
pub mod usage;
