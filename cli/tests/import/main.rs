//! End-to-end tests of `ivctl import vmware` on fixtures made here with qemu-img.

mod appliances;
mod attacks;
mod cli;
mod failures;
mod fixtures;
mod formats;
mod fuzz;
mod schema;
mod subformats;
mod tpm;
