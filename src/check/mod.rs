//! Judging outputs: metrics from logs (and, as they land, step tables and logprobs).

pub mod logparse;
