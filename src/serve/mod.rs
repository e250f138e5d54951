//! Serving engines: how to start one (an `Engine` adapter) and a started server (`Server`).

pub mod engine;
pub mod server;
