//! servetest: a typed, fast test harness for LLM serving. See docs/architecture.md for the pipeline.

pub mod aggr;
pub mod aggregated;
pub mod bench;
pub mod case;
pub mod cb;
pub mod check;
pub mod disagg;
pub mod env;
pub mod exec;
pub mod family;
pub mod fsutil;
pub mod harness;
pub mod history;
pub mod latency;
pub mod netscope;
pub mod plan;
pub mod report;
pub mod report_cases;
pub mod run;
pub mod script;
pub mod secrets;
pub mod serve;
