//! Each engine's known argument names, pinned (args/*.txt), so that a typo under
//! `worker_config.{ctx,gen}` — keys the harness passes to the engine untouched — is named at
//! validation, not when the job starts hours later. TensorRT-LLM: its LLM API fields at a pinned
//! upstream commit; vLLM: the installed version's server parser (scripts/gen-engine-args). SGLang
//! has no list yet, so its keys are not checked.

use std::collections::HashSet;
use std::sync::LazyLock;

use crate::disagg::schema::EngineKind;

static TRTLLM: LazyLock<Vec<&'static str>> =
    LazyLock::new(|| names(include_str!("args/trtllm.txt")));
static VLLM: LazyLock<Vec<&'static str>> = LazyLock::new(|| names(include_str!("args/vllm.txt")));

fn names(text: &'static str) -> Vec<&'static str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Where the list for `engine` comes from, for messages; `None`: no list (not checked).
pub fn source(engine: EngineKind) -> Option<&'static str> {
    match engine {
        EngineKind::Trtllm => Some("TensorRT-LLM's LLM API (llm_args.py @ 0004396)"),
        EngineKind::Vllm => Some("vLLM's server arguments (args/vllm.txt)"),
        EngineKind::Sglang => None,
    }
}

/// `Some(None)`: known; `Some(Some(hint))`: unknown, with the closest known name if one is close;
/// `None`: this engine has no list.
pub fn check(engine: EngineKind, key: &str) -> Option<Option<&'static str>> {
    let (list, normal): (&[&str], String) = match engine {
        EngineKind::Trtllm => (&TRTLLM, key.to_owned()),
        // vLLM's parser takes `max_num_seqs` and `max-num-seqs` alike.
        EngineKind::Vllm => (&VLLM, key.replace('_', "-")),
        EngineKind::Sglang => return None,
    };
    static SETS: LazyLock<[HashSet<&'static str>; 2]> = LazyLock::new(|| {
        [
            TRTLLM.iter().copied().collect(),
            VLLM.iter().copied().collect(),
        ]
    });
    let set = &SETS[usize::from(engine == EngineKind::Vllm)];
    if set.contains(normal.as_str()) {
        return Some(None);
    }
    Some(Some(
        crate::case::load::suggest(&normal, list).unwrap_or(""),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_are_named_with_the_closest_argument() {
        assert_eq!(check(EngineKind::Trtllm, "max_batch_size"), Some(None));
        assert_eq!(check(EngineKind::Trtllm, "kv_cache_config"), Some(None));
        assert_eq!(
            check(EngineKind::Trtllm, "max_batchsize"),
            Some(Some("max_batch_size"))
        );
        assert_eq!(check(EngineKind::Vllm, "max_num_seqs"), Some(None));
        assert_eq!(check(EngineKind::Vllm, "max-num-seqs"), Some(None));
        assert_eq!(
            check(EngineKind::Vllm, "max_num_seq"),
            Some(Some("max-num-seqs"))
        );
        assert_eq!(check(EngineKind::Sglang, "anything"), None);
        assert!(TRTLLM.len() > 100 && VLLM.len() > 300);
    }
}
