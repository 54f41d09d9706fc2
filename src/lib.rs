//! tandem: the control plane of a two-node redundant firewall on Linux.
//!
//! Layers (dependencies point down only): `supervisor` → `actor` → `proto` → `wire`, with `sys` (OS
//! adapters), `config` (config.xml), `boot` (rootfs overlay, state dir) and `lab` (the test topology)
//! beside them. `wire` and `proto` are pure: no I/O, no clock, no logging.
#![deny(unsafe_code)]

pub mod actor;
pub mod boot;
pub mod bus;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod lab;
pub mod proto;
pub mod supervisor;
pub mod sys;
pub mod wire;

/// The version reported by `system.status` and `tandem version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
