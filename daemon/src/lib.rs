//! The reflex daemon: cameras, pose inference, the real-time loop, latency recording and session files.
//!
//! The binary `reflex` (`src/main.rs`) is a thin CLI over [`pipeline::run`]. The loop's shape is described in
//! [`pipeline`] and in `ARCHITECTURE.md` at the repository root.

pub mod bench;
pub mod camera;
pub mod check;
pub mod clock;
pub mod config;
pub mod decision;
pub mod device_clock;
pub mod devices;
pub mod eval;
pub mod inference;
pub mod interrupt;
pub mod latency;
pub mod latency_report;
pub mod lightloop;
pub mod metrics;
pub mod outputs;
pub mod pipeline;
pub mod realtime;
pub mod record;
pub mod replay;
pub mod report;
pub mod script;
pub mod session;
