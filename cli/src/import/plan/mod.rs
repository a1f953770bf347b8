//! `ivctl import plan` and `ivctl import wave`: migration planning for a whole estate and the
//! batch import of one wave.
//!
//! Inputs: an RVTools export (`table` reads it, `columns` matches its headers tolerantly,
//! `inventory` turns rows into VMs) and a directory of exports analysed by the importer in
//! dry-run mode (`exports`). Judgement: `readiness` (the advisor's knowledge base plus the
//! planner's `plan-rules.yaml`, one engine), `sizing`, `tenants` (rules file). Target:
//! `capacity` (Tenants, Quotas, Hypervisors from YAML or, through `cluster`, the cluster).
//! Scheduling: `waves`, timed by `throughput` (measured here). Accounting: `steps`. Output:
//! `model` (plan.json), `render` (Markdown, HTML), `output` (files, wave-NN/ manifests).
//! `batch` imports a wave. Everything but `table`, `exports`, `throughput`, `cluster`,
//! `output`, `batch` and `cmd` is pure.

pub mod args;
pub mod batch;
pub mod build;
pub mod capacity;
pub mod cluster;
pub mod cmd;
pub mod columns;
pub mod exports;
pub mod inventory;
pub mod known;
pub mod model;
pub mod output;
pub mod readiness;
pub mod render;
pub mod sizing;
pub mod steps;
pub mod table;
pub mod tenants;
pub mod throughput;
pub mod waves;
