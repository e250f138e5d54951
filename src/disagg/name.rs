//! The file-name convention of disagg/wideep cases, e.g.
//! `deepseek-r1-fp4_8k1k_ctx1_dep4_bs16_gen4_tep8_bs32_eplb0_mtp3_ccb-NIXL-cpp`:
//! a model, then `_`-separated tokens that restate the file's content. Each recognised token is
//! cross-checked against the content; a mismatch is a warning naming both sides (an error in strict
//! mode: `--strict-names` or `SERVETEST_STRICT_NAMES=1`). Upstream never compares names with content
//! and its own files drift (a `tep8_bs32` file with gen TP 4 and batch 64), so a file upstream runs
//! must load here. Tokens that are not recognised, and files that do not follow the convention at all,
//! are warnings.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::LazyLock;

use regex::Regex;

use super::schema::{DisaggSpec, WorkerConfig};
use crate::case::violation::Violation;

static STRICT: AtomicBool = AtomicBool::new(false);

/// Makes name ↔ content mismatches errors for this process (`--strict-names`).
pub fn set_strict(on: bool) {
    STRICT.store(on, Ordering::Relaxed);
}

/// Strict mode: `--strict-names` or `SERVETEST_STRICT_NAMES` set to `1`/`true`/`yes`.
pub fn strict() -> bool {
    STRICT.load(Ordering::Relaxed)
        || std::env::var("SERVETEST_STRICT_NAMES")
            .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Ctx,
    Gen,
}

impl Side {
    fn key(self) -> &'static str {
        match self {
            Side::Ctx => "ctx",
            Side::Gen => "gen",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parallelism {
    /// `tepN`: tensor parallel N without attention DP.
    Tep,
    /// `depN`: tensor parallel N with attention DP.
    Dep,
    /// `tpN`: tensor parallel N, attention DP unspecified.
    Tp,
    /// `ppN`: pipeline parallel N.
    Pp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// `1k1k`, `8k1k`, `128k8k`: input/output lengths in units of 1024.
    Lengths {
        input: u64,
        output: u64,
    },
    /// `conN`: one of the benchmarked concurrencies.
    Concurrency(u64),
    CtxServers(u64),
    GenServers(u64),
    Parallel {
        side: Side,
        kind: Parallelism,
        size: u64,
    },
    BatchSize {
        side: Side,
        size: u64,
    },
    /// `eplbN`: MoE load-balancer slots of the generation workers.
    Eplb(u64),
    /// `mtpN`: speculative (MTP) layers of the generation workers.
    Mtp(u64),
    /// `ccb-X` or a trailing `-Default`: KV-cache transceiver backend.
    Backend(String),
    /// A label that distinguishes variants without restating content (`cpp`, `python`, `kv-reuse`).
    Variant(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StemInfo {
    pub model: String,
    pub tokens: Vec<(String, Token)>,
    pub unrecognized: Vec<String>,
}

impl StemInfo {
    /// True when at least one token after the model was recognised.
    pub fn follows_convention(&self) -> bool {
        !self.tokens.is_empty()
    }
}

static TOKEN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:(?P<lin>\d+)k(?P<lout>\d+)k|con(?P<con>\d+)|ctx(?P<ctx>\d+)|gen(?P<gen>\d+)|(?P<par>tep|dep|tp|pp)(?P<psize>\d+)|bs(?P<bs>\d+)|eplb(?P<eplb>\d+)|mtp(?P<mtp>\d+))$")
        .expect("token regex")
});

/// Whole `_`-separated parts that are known variant labels.
const VARIANT_PARTS: &[&str] = &["kv-reuse"];
/// Bare backend names (`..._bs32_nixl`).
const BACKENDS: &[&str] = &["nixl", "ucx", "mpi", "mooncake", "default"];

fn parse_core(part: &str, side: &mut Option<Side>) -> Option<Token> {
    let caps = TOKEN.captures(part)?;
    let num = |name: &str| caps.name(name).and_then(|m| m.as_str().parse::<u64>().ok());
    let current = side.unwrap_or(Side::Gen);
    Some(if let (Some(i), Some(o)) = (num("lin"), num("lout")) {
        Token::Lengths {
            input: i * 1024,
            output: o * 1024,
        }
    } else if let Some(n) = num("con") {
        Token::Concurrency(n)
    } else if let Some(n) = num("ctx") {
        *side = Some(Side::Ctx);
        Token::CtxServers(n)
    } else if let Some(n) = num("gen") {
        *side = Some(Side::Gen);
        Token::GenServers(n)
    } else if let Some(size) = num("psize") {
        let kind = match &caps["par"] {
            "tep" => Parallelism::Tep,
            "dep" => Parallelism::Dep,
            "tp" => Parallelism::Tp,
            _ => Parallelism::Pp,
        };
        Token::Parallel {
            side: current,
            kind,
            size,
        }
    } else if let Some(size) = num("bs") {
        Token::BatchSize {
            side: current,
            size,
        }
    } else if let Some(n) = num("eplb") {
        Token::Eplb(n)
    } else {
        Token::Mtp(num("mtp")?)
    })
}

/// Splits a file stem into model and tokens. Never fails: what it does not recognise is listed.
pub fn parse_stem(stem: &str) -> StemInfo {
    let mut info = StemInfo::default();
    let mut side = None;
    let mut model_parts: Vec<&str> = Vec::new();
    for part in stem.split('_') {
        let mut segments = part.split('-');
        let head = segments.next().unwrap_or_default();
        let rest: Vec<&str> = segments.collect();
        let mut recognized = Vec::new();
        if head == "ccb" && !rest.is_empty() {
            recognized.push(Token::Backend(rest[0].to_ascii_uppercase()));
            recognized.extend(rest[1..].iter().map(|s| Token::Variant((*s).to_owned())));
        } else if let Some(token) = parse_core(head, &mut side) {
            recognized.push(token);
            for seg in &rest {
                recognized.push(if seg.eq_ignore_ascii_case("default") {
                    Token::Backend("DEFAULT".to_owned())
                } else {
                    Token::Variant((*seg).to_owned())
                });
            }
        } else if !model_parts.is_empty() && VARIANT_PARTS.contains(&part) {
            recognized.push(Token::Variant(part.to_owned()));
        } else if !info.tokens.is_empty() && BACKENDS.contains(&part.to_ascii_lowercase().as_str())
        {
            recognized.push(Token::Backend(part.to_ascii_uppercase()));
        }

        if recognized.is_empty() {
            if info.tokens.is_empty() {
                model_parts.push(part);
            } else {
                info.unrecognized.push(part.to_owned());
            }
        } else {
            info.tokens
                .extend(recognized.into_iter().map(|t| (part.to_owned(), t)));
        }
    }
    info.model = model_parts.join("_");
    info
}

/// Cross-checks every recognised token against the spec.
/// EPLB slots: the current key, else the older `worker_config.eplb_num_slots`.
fn eplb_slots(spec: &DisaggSpec) -> u64 {
    let current = &spec.worker_config.gen;
    let has_current = current.moe_config.as_ref().is_some_and(|m| {
        m.load_balancer
            .as_ref()
            .is_some_and(|lb| lb.num_slots.is_some())
    });
    match spec.worker_config.eplb_num_slots {
        Some(old) if !has_current => old,
        _ => current.eplb_slots(),
    }
}

fn eplb_key(spec: &DisaggSpec) -> &'static str {
    if spec.worker_config.eplb_num_slots.is_some()
        && eplb_slots(spec) == spec.worker_config.eplb_num_slots.unwrap_or(0)
    {
        "worker_config.eplb_num_slots"
    } else {
        "worker_config.gen.moe_config.load_balancer.num_slots"
    }
}

pub fn check(stem: &str, spec: &DisaggSpec, strict: bool) -> Vec<Violation> {
    let info = parse_stem(stem);
    let mut out = Vec::new();
    if !info.follows_convention() {
        out.push(Violation::warning(
            "",
            format!(
                "file name `{stem}` does not follow the naming convention \
                 ({{model}}_{{ISL}}k{{OSL}}k_ctxN_genM_{{tep|dep}}N_bsN_eplbN_mtpN_ccb-BACKEND); \
                 nothing in it is cross-checked"
            ),
        ));
        return out;
    }
    for part in &info.unrecognized {
        out.push(Violation::warning(
            "",
            format!("file name token `{part}` is not part of the naming convention; ignored"),
        ));
    }
    let (isl, osl) = lengths(spec);
    let side_cfg = |side: Side| match side {
        Side::Ctx => &spec.worker_config.ctx,
        Side::Gen => &spec.worker_config.gen,
    };
    let mut mismatch = |key: String, part: &str, content: String| {
        let reason = format!("file name says `{part}` but {key} is {content}");
        let violation = if strict {
            Violation::error(key, reason)
        } else {
            Violation::warning(
                key,
                format!("{reason} (upstream ignores names; --strict-names makes this an error)"),
            )
        };
        out.push(violation.with_value(content));
    };
    for (part, token) in &info.tokens {
        match token {
            Token::Lengths { input, output } => {
                let in_key = length_key(spec, "input_length");
                if isl != Some(*input) {
                    mismatch(in_key, part, show(isl));
                }
                let out_key = length_key(spec, "output_length");
                if osl != Some(*output) {
                    mismatch(out_key, part, show(osl));
                }
            }
            Token::Concurrency(n) => {
                let levels = spec.benchmark.concurrency_list.levels();
                if !levels.contains(n) {
                    mismatch(
                        "benchmark.concurrency_list".into(),
                        part,
                        format!("{levels:?} (no {n})"),
                    );
                }
            }
            Token::CtxServers(n) if spec.hardware.num_ctx_servers != *n => mismatch(
                "hardware.num_ctx_servers".into(),
                part,
                spec.hardware.num_ctx_servers.to_string(),
            ),
            Token::GenServers(n) if spec.hardware.num_gen_servers != *n => mismatch(
                "hardware.num_gen_servers".into(),
                part,
                spec.hardware.num_gen_servers.to_string(),
            ),
            Token::Parallel { side, kind, size } => {
                let cfg = side_cfg(*side);
                let base = format!("worker_config.{}", side.key());
                match kind {
                    Parallelism::Pp if cfg.pp() != *size => mismatch(
                        format!("{base}.pipeline_parallel_size"),
                        part,
                        cfg.pp().to_string(),
                    ),
                    Parallelism::Pp => {}
                    _ if cfg.tp() != *size => mismatch(
                        format!("{base}.tensor_parallel_size"),
                        part,
                        cfg.tp().to_string(),
                    ),
                    Parallelism::Dep if !cfg.attention_dp() => mismatch(
                        format!("{base}.enable_attention_dp"),
                        part,
                        "false (`dep` means attention DP on; use `tep`)".into(),
                    ),
                    Parallelism::Tep if cfg.attention_dp() => mismatch(
                        format!("{base}.enable_attention_dp"),
                        part,
                        "true (`tep` means attention DP off; use `dep`)".into(),
                    ),
                    _ => {}
                }
            }
            Token::BatchSize { side, size } => {
                let cfg = side_cfg(*side);
                if cfg.max_batch_size != Some(*size) {
                    mismatch(
                        format!("worker_config.{}.max_batch_size", side.key()),
                        part,
                        show(cfg.max_batch_size),
                    );
                }
            }
            Token::Eplb(n) if eplb_slots(spec) != *n => {
                mismatch(eplb_key(spec).into(), part, eplb_slots(spec).to_string())
            }
            Token::Mtp(n) if spec.worker_config.gen.mtp_layers() != *n => mismatch(
                "worker_config.gen.speculative_config.num_nextn_predict_layers".into(),
                part,
                spec.worker_config.gen.mtp_layers().to_string(),
            ),
            Token::Backend(name) => {
                for side in [Side::Ctx, Side::Gen] {
                    if !backend_matches(name, side_cfg(side)) {
                        mismatch(
                            format!(
                                "worker_config.{}.cache_transceiver_config.backend",
                                side.key()
                            ),
                            part,
                            side_cfg(side)
                                .transceiver_backend()
                                .unwrap_or("unset")
                                .to_owned(),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn backend_matches(name: &str, cfg: &WorkerConfig) -> bool {
    match cfg.transceiver_backend() {
        Some(b) => b.eq_ignore_ascii_case(name),
        // An unset backend is the engine's default.
        None => name == "DEFAULT",
    }
}

/// Input/output lengths from `benchmark`, or from the older top-level `sequence` section.
pub fn lengths(spec: &DisaggSpec) -> (Option<u64>, Option<u64>) {
    let seq = spec.sequence.as_ref();
    (
        spec.benchmark.input_length.or(seq.map(|s| s.input_length)),
        spec.benchmark
            .output_length
            .or(seq.map(|s| s.output_length)),
    )
}

fn length_key(spec: &DisaggSpec, field: &str) -> String {
    if spec.benchmark.input_length.is_none() && spec.sequence.is_some() {
        format!("sequence.{field}")
    } else {
        format!("benchmark.{field}")
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "unset".to_owned(), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(stem: &str) -> Vec<Token> {
        parse_stem(stem)
            .tokens
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    }

    #[test]
    fn parses_the_seed_example() {
        let info = parse_stem("deepseek-r1-fp4_1k1k_ctx1_gen4_tep8_bs32_eplb0_mtp0_ccb-NIXL");
        assert_eq!(info.model, "deepseek-r1-fp4");
        assert!(info.unrecognized.is_empty());
        assert_eq!(
            kinds("deepseek-r1-fp4_1k1k_ctx1_gen4_tep8_bs32_eplb0_mtp0_ccb-NIXL"),
            vec![
                Token::Lengths {
                    input: 1024,
                    output: 1024
                },
                Token::CtxServers(1),
                Token::GenServers(4),
                Token::Parallel {
                    side: Side::Gen,
                    kind: Parallelism::Tep,
                    size: 8
                },
                Token::BatchSize {
                    side: Side::Gen,
                    size: 32
                },
                Token::Eplb(0),
                Token::Mtp(0),
                Token::Backend("NIXL".into()),
            ]
        );
    }

    #[test]
    fn ctx_parallelism_and_batch_size_apply_to_ctx() {
        let t = kinds(
            "gb200-deepseek-r1-fp4_8k1k_con256_ctx1_dep4_bs16_gen1_dep8_bs768_eplb0_mtp1_ccb-UCX",
        );
        assert!(t.contains(&Token::Concurrency(256)));
        assert!(t.contains(&Token::Parallel {
            side: Side::Ctx,
            kind: Parallelism::Dep,
            size: 4
        }));
        assert!(t.contains(&Token::BatchSize {
            side: Side::Ctx,
            size: 16
        }));
        assert!(t.contains(&Token::Parallel {
            side: Side::Gen,
            kind: Parallelism::Dep,
            size: 8
        }));
        assert!(t.contains(&Token::BatchSize {
            side: Side::Gen,
            size: 768
        }));
    }

    #[test]
    fn trailing_default_and_variant_suffixes() {
        let t = kinds("deepseek-r1-fp4_128k8k_ctx1_pp4_gen8_tep4_bs2_eplb0_mtp0-Default-cpp");
        assert!(t.contains(&Token::Lengths {
            input: 131072,
            output: 8192
        }));
        assert!(t.contains(&Token::Parallel {
            side: Side::Ctx,
            kind: Parallelism::Pp,
            size: 4
        }));
        assert!(t.contains(&Token::Backend("DEFAULT".into())));
        assert!(t.contains(&Token::Variant("cpp".into())));
        let t = kinds("deepseek-r1-fp4_1k1k_ctx1_gen1_dep32_bs32_eplb288_mtp0_ccb-NIXL_kv-reuse");
        assert!(t.contains(&Token::Variant("kv-reuse".into())));
        let t =
            kinds("Qwen3-235B-A22B-FP4_1k1k_ctx1_gen1_dep16_bs64_eplb0_mtp0_ccb-NIXL-python-MNNVL");
        assert!(t.contains(&Token::Variant("MNNVL".into())));
    }

    #[test]
    fn unconventional_names_are_reported_not_rejected() {
        let info = parse_stem("deepseek-r1-fp4_000");
        assert!(!info.follows_convention());
        let info = parse_stem("model_1k1k_ctx1_gen1_weird");
        assert_eq!(info.unrecognized, vec!["weird".to_owned()]);
    }
}
