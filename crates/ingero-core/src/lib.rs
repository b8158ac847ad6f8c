//! `ingero._core`: the native half of ingero. It loads and attaches the eBPF
//! programs, drains their ring buffer and writes SQLite, with the GIL released;
//! the Python package on top owns the CLI, analysis and MCP server.

pub mod capture;
pub mod clock;
pub mod drain;
pub mod jsonl;
pub mod live;
pub mod pyframes;
pub mod snapshot;
pub mod store;
pub mod symbolize;
pub mod tracer;

mod live_py;
mod python;
