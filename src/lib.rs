//! Quiver: a Prometheus-API gateway over Parquet blocks.
//!
//! Data flows `ingest → storage (WAL, head, blocks on object_store) → catalog (label index)
//! → sql / api`. See `docs/ARCHITECTURE.md` for the code map and invariants.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod cluster;
pub mod code_pages;
pub mod config;
pub mod cores;
pub mod duration;
pub mod error_kind;
pub mod ingest;
pub mod memory;
pub mod migrations;
pub mod model;
pub mod ops;
pub mod promql;
pub mod promqltest;
pub mod server;
pub mod sql;
pub mod storage;
pub mod wire;

/// The message of a caught panic (`panic!` with a literal or a formatted string).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> Option<&str> {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
}
