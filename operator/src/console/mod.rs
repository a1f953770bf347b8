//! The console PKI on the operator's side: the console CA, the console server's
//! certificate, and the hosts' console certificates (see `controller` for the objects and
//! `sign` for the rules). The CA key never leaves the CA Secret: agents send requests, the
//! console server gets a certificate and key the operator made for it.

pub mod controller;
pub mod metrics;
pub mod sign;
#[cfg(test)]
mod sign_tests;
