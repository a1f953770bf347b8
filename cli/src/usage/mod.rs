//! `ivctl usage`: a tenant's (or every tenant's) usage and cost for a UTC month, read from
//! the `UsageReport`s the operator keeps in `ironvisor-usage`.

pub mod args;
pub mod cmd;
pub mod render;
pub mod rightsizing;

#[cfg(test)]
mod render_tests;
