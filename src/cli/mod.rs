//! The `servetest` binary's subcommands that are more than a call into the library: argument types
//! and the glue around them. `main.rs` holds the command tree and dispatch.

pub mod bench;
pub mod cb;
pub mod serve;
