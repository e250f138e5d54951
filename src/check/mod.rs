//! Judging outputs: metrics from logs, accuracy scores (and, as they land, step tables and logprobs).

pub mod accuracy;
pub mod logparse;
