//! What ingero's eBPF programs and its user space agree on: the `#[repr(C)]` event
//! layouts that cross the ring buffers, and the source/op code tables that name them.
//!
//! The code tables exist only here. The eBPF programs use the constants, the
//! SQLite writer seeds the `sources`/`ops` lookup tables from [`codes::SOURCES`]
//! and [`codes::OPS`], and Python reads the same tables through `ingero._core`.
#![no_std]

pub mod codes;
pub mod event;
pub mod python;
