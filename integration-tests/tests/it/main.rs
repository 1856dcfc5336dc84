//! The integration test binary: one per crate keeps linking fast; each module is one area.

mod admin_grpc;
mod cli;
mod client;
mod compat;
mod deploy;
mod group_coordinator;
mod groups;
mod identity;
mod kafka;
mod log_dir;
mod metadata;
mod monitoring;
mod observability;
mod recovery;
mod replication;
mod sbctl;
mod schedules;
mod scripts;
mod sdk_groups;
mod sdk_transactions;
mod transactions;
mod txn_chaos;
