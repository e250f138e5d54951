//! The `cb` family (continuous batching, seed 002): `test_configs/cb/{steps,output}/*.yaml`, run
//! against vLLM's engine in-process by `scripts/cb-driver` (see `crate::cb`).
//!
//! ```yaml
//! model: tiny                 # the built-in tiny model (models/tiny), or a model directory
//! max_model_len: 256
//! max_num_seqs: 2
//! block_size: 32              # vLLM's CPU attention needs a multiple of 32
//! num_blocks: 12              # optional: fix the KV cache size (blocks), to force waiting/preemption
//! max_num_batched_tokens: 512 # optional: the per-step token budget (chunked prefill)
//! prompts:                    # `len` (deterministic token ids) or `text`; added before step add_step
//!   - {id: A, len: 40, max_tokens: 3, add_step: 0}
//!   - {id: L, len: 300, max_tokens: 1, expect_error: "longer than the maximum model length"}
//! steps:                      # category steps: only the fields written are asserted
//!   - {step: 1, waiting: [], running: [A], request_outputs: [A], n_used_blocks: 2}
//! logprobs: 5                 # category output: top-N compared with the transformers reference
//! rel_tol: 0.35               # default 1e-5 (float32 on CPU, measured); the seed used 0.35;
//!                              # abs_tol optional; prob_abs_tol: 0.08 compares probabilities
//! matrix:                     # optional: one trial per combination, e.g. `…[max_num_seqs=2]`
//!   max_num_seqs: [1, 2]
//!   max_tokens: [8, [10, 20]]  # max_tokens / prompt_len: one value for every prompt, or a list with
//!                              # one value per prompt (the seed's `[[10, 20], [60, 78]]`): `…=10+20`
//! ```
//!
//! `expect_error` (a regex) asserts that the engine rejects that prompt when it is added, e.g. a
//! prompt longer than `max_model_len`; the other prompts run as usual. A prompt that does not fit
//! and expects nothing is refused by validation, since the engine would reject it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::case::load::parse_spec;
use crate::case::violation::Violation;
use crate::family::Loaded;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CbSpec {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "tiny")]
    pub model: String,
    pub max_model_len: u64,
    pub max_num_seqs: u64,
    #[serde(default = "block")]
    pub block_size: u64,
    #[serde(default)]
    pub num_blocks: Option<u64>,
    #[serde(default)]
    pub max_num_batched_tokens: Option<u64>,
    pub prompts: Vec<Prompt>,
    #[serde(default)]
    pub steps: Vec<StepRow>,
    #[serde(default)]
    pub logprobs: Option<u64>,
    #[serde(default)]
    pub rel_tol: Option<f64>,
    #[serde(default)]
    pub abs_tol: Option<f64>,
    /// vllm-spyre's newer mode: probabilities exp(logprob) compared with this absolute tolerance
    /// (0.08 there) instead of logprobs with `rel_tol`/`abs_tol`.
    #[serde(default)]
    pub prob_abs_tol: Option<f64>,
    /// Field name → values; every combination becomes its own trial.
    #[serde(default, skip_serializing)]
    pub matrix: BTreeMap<String, Vec<serde_yaml::Value>>,
}

fn tiny() -> String {
    "tiny".to_owned()
}

fn block() -> u64 {
    32
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Prompt {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub len: Option<u64>,
    /// Varies the token ids of `len` prompts.
    #[serde(default)]
    pub seed: u64,
    pub max_tokens: u64,
    #[serde(default)]
    pub add_step: u64,
    /// Regex the engine's rejection of this prompt must match; the prompt is expected to fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_error: Option<String>,
}

/// One expected row; `None` fields are not asserted.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct StepRow {
    pub step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_outputs: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_requests: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_used_blocks: Option<u64>,
    /// Spyre-only quantities: vLLM's CPU engine has no equivalent, so asserting them fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_reserved_blocks: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tkv: Option<u64>,
}

fn known_fields(path: &str) -> Option<&'static [&'static str]> {
    use serde_aux::serde_introspection::serde_introspect as fields;
    Some(match path {
        "" => fields::<CbSpec>(),
        p if p.starts_with("prompts.") && p[8..].parse::<usize>().is_ok() => fields::<Prompt>(),
        p if p.starts_with("steps.") && p[6..].parse::<usize>().is_ok() => fields::<StepRow>(),
        _ => return None,
    })
}

/// Fields a `matrix:` may vary with one value per prompt (a list) as well as one for all.
const PER_PROMPT_FIELDS: &[&str] = &["max_tokens", "prompt_len"];

/// Fields a `matrix:` may vary.
const MATRIX_FIELDS: &[&str] = &[
    "max_num_seqs",
    "max_model_len",
    "block_size",
    "num_blocks",
    "max_num_batched_tokens",
    "max_tokens",
    "prompt_len",
    "logprobs",
];

pub fn load(text: &str, category: &str, _stem: &str) -> Loaded {
    let (spec, mut violations) = parse_spec::<CbSpec>(text, known_fields);
    let Some(spec) = spec else {
        return (None, violations);
    };
    violations.extend(validate(&spec, category));
    (Some(std::sync::Arc::new(spec)), violations)
}

pub fn validate(spec: &CbSpec, category: &str) -> Vec<Violation> {
    let mut v = Vec::new();
    if spec.prompts.is_empty() {
        v.push(Violation::error("prompts", "needs at least one prompt"));
    }
    for key in ["max_num_seqs", "max_model_len", "block_size"] {
        let value = match key {
            "max_num_seqs" => spec.max_num_seqs,
            "max_model_len" => spec.max_model_len,
            _ => spec.block_size,
        };
        if value == 0 {
            v.push(Violation::error(key, "must be at least 1"));
        }
    }
    let mut ids = std::collections::HashSet::new();
    for (i, p) in spec.prompts.iter().enumerate() {
        let key = format!("prompts.{i}");
        if !ids.insert(p.id.as_str()) {
            v.push(Violation::error(
                format!("{key}.id"),
                format!("duplicate id `{}`", p.id),
            ));
        }
        match (&p.text, p.len) {
            (Some(_), Some(_)) => v.push(Violation::error(&key, "give `text` or `len`, not both")),
            (None, None) => v.push(Violation::error(&key, "needs `text` or `len`")),
            (None, Some(0)) => v.push(Violation::error(format!("{key}.len"), "must be at least 1")),
            _ => {}
        }
        if p.max_tokens == 0 {
            v.push(Violation::error(
                format!("{key}.max_tokens"),
                "must be at least 1",
            ));
        }
        if let Some(pattern) = &p.expect_error {
            if let Err(e) = regex::Regex::new(pattern) {
                v.push(Violation::error(
                    format!("{key}.expect_error"),
                    format!("not a valid regex: {e}"),
                ));
            }
        }
        if let (Some(len), None) = (p.len, &p.expect_error) {
            // vLLM 0.32 rejects a prompt that leaves no room for one output token
            // (v1/engine/input_processor.py); a longer request is cut at max_model_len.
            if len >= spec.max_model_len {
                v.push(Violation::error(
                    &key,
                    format!(
                        "len {len} leaves no room under max_model_len {}: the engine rejects this \
                         prompt (set `expect_error` to assert that)",
                        spec.max_model_len
                    ),
                ));
            } else if len + p.max_tokens > spec.max_model_len {
                v.push(Violation::warning(
                    &key,
                    format!(
                        "len {len} + max_tokens {} exceeds max_model_len {}: the engine stops \
                         this request at max_model_len",
                        p.max_tokens, spec.max_model_len
                    ),
                ));
            }
        }
    }
    match category {
        "steps" => {
            if spec.steps.is_empty() {
                v.push(Violation::error(
                    "steps",
                    "a steps case needs the expected table",
                ));
            }
            let mut last = None;
            for (i, row) in spec.steps.iter().enumerate() {
                if last.is_some_and(|l| row.step <= l) {
                    v.push(Violation::error(
                        format!("steps.{i}.step"),
                        format!(
                            "steps must increase (step {} after {})",
                            row.step,
                            last.unwrap_or(0)
                        ),
                    ));
                }
                last = Some(row.step);
                let lists = [
                    &row.waiting,
                    &row.running,
                    &row.request_outputs,
                    &row.finished_requests,
                ];
                for id in lists.into_iter().flatten().flatten() {
                    if !ids.contains(id.as_str()) {
                        v.push(Violation::error(
                            format!("steps.{i}"),
                            format!("names request `{id}`, which is not in prompts"),
                        ));
                    }
                }
            }
        }
        "output" => {
            if !spec.steps.is_empty() {
                v.push(Violation::error(
                    "steps",
                    "an output case has no step table (use category steps)",
                ));
            }
            if spec.rel_tol.is_some_and(|t| !(0.0..=10.0).contains(&t)) {
                v.push(Violation::error("rel_tol", "must be between 0 and 10"));
            }
            if spec.prob_abs_tol.is_some_and(|t| !(0.0..=1.0).contains(&t)) {
                v.push(Violation::error("prob_abs_tol", "must be between 0 and 1"));
            }
            if spec.prob_abs_tol.is_some() && (spec.rel_tol.is_some() || spec.abs_tol.is_some()) {
                v.push(Violation::error(
                    "prob_abs_tol",
                    "compares probabilities; rel_tol/abs_tol compare logprobs: give one mode",
                ));
            }
        }
        _ => {}
    }
    for (key, values) in &spec.matrix {
        if !MATRIX_FIELDS.contains(&key.as_str()) {
            v.push(Violation::error(
                format!("matrix.{key}"),
                format!("cannot vary `{key}` (one of: {})", MATRIX_FIELDS.join(", ")),
            ));
        } else if values.is_empty() {
            v.push(Violation::error(
                format!("matrix.{key}"),
                "needs at least one value",
            ));
        } else {
            let per_prompt = PER_PROMPT_FIELDS.contains(&key.as_str());
            for (i, value) in values.iter().enumerate() {
                if let Err(reason) = matrix_value(value, per_prompt, spec.prompts.len()) {
                    v.push(Violation::error(format!("matrix.{key}.{i}"), reason));
                }
            }
        }
    }
    v
}

impl CbSpec {
    /// Every combination of `matrix` as (name suffix, spec); one `("", self)` without a matrix.
    /// `max_tokens` and `prompt_len` apply to every prompt.
    pub fn expand(&self) -> Vec<(String, CbSpec)> {
        let mut combos: Vec<Vec<(String, MatrixValue)>> = vec![Vec::new()];
        for (key, values) in &self.matrix {
            let per_prompt = PER_PROMPT_FIELDS.contains(&key.as_str());
            let values: Vec<MatrixValue> = values
                .iter()
                .filter_map(|v| matrix_value(v, per_prompt, self.prompts.len()).ok())
                .collect();
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((key.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        combos
            .into_iter()
            .map(|combo| {
                let mut spec = self.clone();
                spec.matrix.clear();
                for (key, value) in &combo {
                    let one = value.first();
                    match key.as_str() {
                        "max_num_seqs" => spec.max_num_seqs = one,
                        "max_model_len" => spec.max_model_len = one,
                        "block_size" => spec.block_size = one,
                        "num_blocks" => spec.num_blocks = Some(one),
                        "max_num_batched_tokens" => spec.max_num_batched_tokens = Some(one),
                        "logprobs" => spec.logprobs = Some(one),
                        "max_tokens" => {
                            for (i, p) in spec.prompts.iter_mut().enumerate() {
                                p.max_tokens = value.for_prompt(i);
                            }
                        }
                        "prompt_len" => {
                            for (i, p) in spec.prompts.iter_mut().enumerate() {
                                p.text = None;
                                p.len = Some(value.for_prompt(i));
                            }
                        }
                        _ => {}
                    }
                }
                let suffix = if combo.is_empty() {
                    String::new()
                } else {
                    let parts: Vec<String> =
                        combo.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("[{}]", parts.join(","))
                };
                (suffix, spec)
            })
            .collect()
    }
}

/// One `matrix:` value: a number for every prompt, or one number per prompt.
#[derive(Debug, Clone, PartialEq)]
enum MatrixValue {
    All(u64),
    PerPrompt(Vec<u64>),
}

impl MatrixValue {
    fn first(&self) -> u64 {
        match self {
            MatrixValue::All(v) => *v,
            MatrixValue::PerPrompt(v) => v[0],
        }
    }

    fn for_prompt(&self, i: usize) -> u64 {
        match self {
            MatrixValue::All(v) => *v,
            MatrixValue::PerPrompt(v) => v[i],
        }
    }
}

/// `10` → "10"; `[10, 20]` → "10+20": trial names stay one bracketed list and usable as a directory
/// name (output/cb/<trial>/).
impl std::fmt::Display for MatrixValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatrixValue::All(v) => write!(f, "{v}"),
            MatrixValue::PerPrompt(v) => {
                let parts: Vec<String> = v.iter().map(u64::to_string).collect();
                write!(f, "{}", parts.join("+"))
            }
        }
    }
}

fn matrix_value(
    value: &serde_yaml::Value,
    per_prompt: bool,
    prompts: usize,
) -> Result<MatrixValue, String> {
    if let Some(n) = value.as_u64().filter(|n| *n > 0) {
        return Ok(MatrixValue::All(n));
    }
    let Some(list) = value.as_sequence() else {
        return Err(if per_prompt {
            "a positive integer, or a list with one per prompt".into()
        } else {
            "values must be positive integers".into()
        });
    };
    if !per_prompt {
        return Err("one value for every prompt: lists are for max_tokens and prompt_len".into());
    }
    let numbers: Vec<u64> = list
        .iter()
        .filter_map(|x| x.as_u64().filter(|n| *n > 0))
        .collect();
    if numbers.len() != list.len() {
        return Err("per-prompt values must be positive integers".into());
    }
    if numbers.len() != prompts {
        return Err(format!(
            "{} value(s) for {prompts} prompt(s): give one per prompt",
            numbers.len()
        ));
    }
    Ok(MatrixValue::PerPrompt(numbers))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trials of a valid output case.
    fn expanded(text: &str) -> Vec<(String, CbSpec)> {
        let (spec, v) = load(text, "output", "x");
        assert!(v.is_empty(), "{v:?}");
        spec.expect("loads")
            .downcast::<CbSpec>()
            .expect("a cb spec")
            .expand()
    }

    const BASE: &str = "max_model_len: 128\nmax_num_seqs: 2\nprompts:\n  - {id: A, len: 40, max_tokens: 4}\n  - {id: B, text: hello, max_tokens: 2, add_step: 1}\n";

    #[test]
    fn matrix_expands_to_named_combinations() {
        let text =
            format!("{BASE}logprobs: 3\nmatrix:\n  max_num_seqs: [1, 2]\n  max_tokens: [2, 8]\n");
        let all = expanded(&text);
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "[max_num_seqs=1,max_tokens=2]",
                "[max_num_seqs=1,max_tokens=8]",
                "[max_num_seqs=2,max_tokens=2]",
                "[max_num_seqs=2,max_tokens=8]"
            ]
        );
        assert_eq!(all[3].1.max_num_seqs, 2);
        assert!(all[3].1.prompts.iter().all(|p| p.max_tokens == 8));
        assert!(all[3].1.matrix.is_empty());
    }

    #[test]
    fn bad_cases_are_reported_all_at_once() {
        let text = "max_model_len: 50\nmax_num_seqs: 0\nprompts:\n  - {id: A, len: 40, max_tokens: 20}\n  - {id: A, text: x, len: 3, max_tokens: 1}\nsteps:\n  - {step: 2, running: [Z]}\n  - {step: 1}\nmatrix: {temperature: [1]}\nbogus: 1\n";
        let (_, v) = load(text, "steps", "x");
        let keys: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.key.as_str(), v.reason.as_str()))
            .collect();
        let has = |k: &str, r: &str| keys.iter().any(|(kk, rr)| *kk == k && rr.contains(r));
        assert!(has("max_num_seqs", "at least 1"), "{keys:?}");
        let cut = v.iter().find(|v| v.key == "prompts.0").unwrap();
        assert!(
            cut.reason.contains("exceeds max_model_len 50") && !cut.is_error(),
            "upstream accepts a request cut at max_model_len: a warning, {cut:?}"
        );
        assert!(has("prompts.1.id", "duplicate id `A`"), "{keys:?}");
        assert!(has("prompts.1", "not both"), "{keys:?}");
        assert!(has("steps.0", "`Z`"), "{keys:?}");
        assert!(has("steps.1.step", "must increase"), "{keys:?}");
        assert!(has("matrix.temperature", "cannot vary"), "{keys:?}");
        assert!(keys.iter().any(|(k, _)| *k == "bogus"), "{keys:?}");
    }

    #[test]
    fn per_prompt_matrix_lists_and_expected_rejections() {
        let text = format!(
            "{BASE}logprobs: 3\nmatrix:\n  max_tokens: [4, [10, 20]]\n  prompt_len: [[8, 9]]\n"
        );
        let all = expanded(&text);
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "[max_tokens=4,prompt_len=8+9]",
                "[max_tokens=10+20,prompt_len=8+9]"
            ]
        );
        let tokens: Vec<u64> = all[1].1.prompts.iter().map(|p| p.max_tokens).collect();
        assert_eq!(tokens, [10, 20]);
        let lens: Vec<Option<u64>> = all[1].1.prompts.iter().map(|p| p.len).collect();
        assert_eq!(lens, [Some(8), Some(9)]);

        let bad = format!(
            "{BASE}matrix:\n  max_tokens: [[1, 2, 3]]\n  max_num_seqs: [[1, 2]]\n  prompt_len: [[0, 4]]\n"
        );
        let (_, v) = load(&bad, "output", "x");
        let reasons: Vec<String> = v
            .iter()
            .map(|v| format!("{}: {}", v.key, v.reason))
            .collect();
        let has = |s: &str| reasons.iter().any(|r| r.contains(s));
        assert!(
            has("matrix.max_tokens.0: 3 value(s) for 2 prompt(s)"),
            "{reasons:?}"
        );
        assert!(
            has("matrix.max_num_seqs.0: one value for every prompt"),
            "{reasons:?}"
        );
        assert!(
            has("matrix.prompt_len.0: per-prompt values must be positive"),
            "{reasons:?}"
        );

        // A prompt that cannot fit is refused unless the case expects the engine's rejection.
        let long = "max_model_len: 64\nmax_num_seqs: 2\nprompts:\n  - {id: A, len: 8, max_tokens: 2}\n  - {id: L, len: 64, max_tokens: 1}\n";
        let (_, v) = load(long, "output", "x");
        assert!(
            v.iter()
                .any(|v| v.is_error() && v.key == "prompts.1" && v.reason.contains("expect_error")),
            "{v:?}"
        );
        let expected = long.replace(
            "max_tokens: 1}",
            "max_tokens: 1, expect_error: \"longer than\"}",
        );
        let (_, v) = load(&expected, "output", "x");
        assert!(v.is_empty(), "{v:?}");
        let broken = long.replace("max_tokens: 1}", "max_tokens: 1, expect_error: \"(\"}");
        let (_, v) = load(&broken, "output", "x");
        assert!(v.iter().any(|v| v.key == "prompts.1.expect_error"), "{v:?}");
    }
}
