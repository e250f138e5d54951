//! Running things: local process groups today; the SLURM job manager and local executor build on it.

pub mod process;
